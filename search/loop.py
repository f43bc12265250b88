"""The closed loop: propose, validate and profile, diagnose, remember; for a fixed budget.

    python -m search run --llm smollm2-135m --seed lenet --dataset fashion-mnist --iterations 10 --out runs/frozen-0
    python -m search run --llm random --objective pareto --hw-metric latency_ms --bins 4 --knowledge-base \
        --screen zero-cost --screen-keep 0.25 --max-latency-ms 2 --out runs/pareto-0

Each iteration: the proposer (Code Generator LLM, or random mutation) gets a parent network's
source and telemetry, the Prompt Improver's instruction and the feedback memory, and writes a
network; it is profiled (the corpus profiler: sandboxed, same recipe); the improver reads the
outcome and writes the next (problem, modification); the memory keeps the last K triples (problem
found, modification suggested, outcome), failures included. Every iteration is committed to
`OUT/run.sqlite` as it ends.

Multi-objective options (all off by default; `--objective accuracy` is the plain loop):
- `--objective pareto`: a Pareto archive over (accuracy, hw metric) replaces "the best": the
  parent of each proposal is picked from the archive by `ParetoArchive.pick` (the most accurate
  member inside the iteration's bin, else the member nearest to it; without bins, round-robin over
  the archive sorted by cost). The hw metric (`--hw-metric`) is measured by the pre-check on
  `--latency-device`.
- `--bins N`: complexity bins from quantiles of the seed's random variants (or `--bin-edges`);
  iteration `it` targets bin `it % N`, and the bin's budget is stated in the prompt.
- `--knowledge-base`: design heuristics rewritten by the Prompt Improver after every round (N
  iterations with bins, else `--round-size`), stored per version, shown in the prompt.
- The pre-check (sandboxed build + FLOPs, params, batch-1 latency; `search.precheck`) runs before
  training whenever a constraint, Pareto mode, bins or screening need it; a candidate over a limit
  is a `constraint` failure with the measured value and is never trained.
- `--screen zero-cost --screen-keep f`: each iteration asks for M = round(1/f) proposals,
  pre-checks and scores them with the zero-cost proxies (a vote of their ranks among the M,
  `search.precheck.vote`), and trains one: the first by (builds, within the limits, inside the
  bin, zero-cost vote). The others go to the `screened` table with status `screened` (or their
  pre-check failure); the iteration budget counts trained candidates only.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from search.roles import FeedbackMemory, Triple, outcome_text
from search.store import RunStore

INITIAL_PROBLEM = "baseline network, nothing tried yet"
INITIAL_MODIFICATION = "change the widths of a few layers moderately to raise accuracy"


class SearchError(Exception):
    """Bad input or an unusable run folder: one-line error, exit 2."""


@dataclass(frozen=True)
class SearchConfig:
    llm: str = "smollm2-135m"
    adapter: str | None = None
    improver_llm: str | None = None
    improver_adapter: str | None = None
    llm_url: str | None = None
    improver_url: str | None = None
    improver_example: bool = False
    seed: str = "lenet"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    iterations: int = 10
    time_budget_s: float = 0.0
    memory: int = 5
    out: str = "search_run"
    objective: str = "accuracy"
    max_flops: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    rng_seed: int = 0
    temperature: float = 0.7
    max_new_tokens: int = 1536
    epochs: float = 1.0
    train_limit: int = 8000
    batch_size: int = 64  # 125 steps on the default 8,000-image subset; 256 leaves too few on a CPU
    device: str = "auto"
    timeout_s: float = 900.0
    label: str | None = None
    evaluator: str = "profile"
    benchmark_file: str | None = None
    table_noise: bool = False
    hw_metric: str = "latency_ms"
    latency_device: str = "cpu"
    latency_table: str | None = None
    latency_column: str | None = None
    bins: int = 0
    partition_by: str | None = None
    bin_edges: tuple[float, ...] | None = None
    bin_samples: int = 24
    knowledge_base: bool = False
    round_size: int = 4
    screen: str = "none"
    screen_keep: float = 0.25
    llm_timeout_s: float = 600.0  # per request to --llm-url / --improver-url
    llm_retries: int = 3  # more tries after a failed request, waiting llm_backoff_s, then twice as long each time
    llm_backoff_s: float = 2.0
    max_llm_errors: int = 3  # consecutive llm_error iterations that end the run (continue it with --resume)

    @property
    def partition_metric(self) -> str:
        return self.partition_by or self.hw_metric

    @property
    def needs_precheck(self) -> bool:
        return self.objective == "pareto" or self.bins >= 2 or self.screen != "none" or \
            any(v is not None for v in (self.max_flops, self.max_params, self.max_latency_ms))

    @property
    def proposals_per_iteration(self) -> int:
        return max(1, round(1 / self.screen_keep)) if self.screen != "none" else 1

    @property
    def group(self) -> str:
        """The configuration a run belongs to in `search compare` (label, else llm + adapter)."""
        if self.label:
            return self.label
        if self.llm == "random":
            return "random"
        return f"{self.llm}{'+' + self.adapter if self.adapter else ''}"


# What `--resume` may change: budgets and where things are, never what decides the search's results.
RESUMABLE = frozenset({"iterations", "time_budget_s", "benchmark_file", "data_dir", "llm_url", "improver_url",
                       "llm_timeout_s", "llm_retries", "llm_backoff_s", "max_llm_errors"})


def goal_of(cfg: SearchConfig) -> dict:
    if cfg.max_flops:
        return {"kind": "accuracy_under_flops", "max_flops": float(cfg.max_flops)}
    return {"kind": "raise_accuracy"}


def violation(cfg: SearchConfig, row: dict) -> str | None:
    for key, limit, unit in (("flops", cfg.max_flops, "FLOPs"), ("params", cfg.max_params, "parameters"),
                             ("latency_ms", cfg.max_latency_ms, "ms latency")):
        if limit is not None and row.get(key) is not None and row[key] > limit:
            return f"{row[key]:,.4g} {unit} > limit {limit:,.4g}"
    return None


def _better(row: dict, best: dict | None) -> bool:
    return row.get("status") == "ok" and row.get("accuracy") is not None and \
        (best is None or row["accuracy"] > best["accuracy"])


METRIC_KEYS = ("accuracy", "flops", "params", "latency_ms", "latency_batch_ms", "train_seconds",
               "peak_memory_mb", "device_name", "widths", "table_key", "table_rank")
PRE_KEYS = ("flops", "params", "latency_ms", "latency_device", "zc_score", "zc_synflow", "zc_naswot",
            "zc_snip", "zc_grad_norm", "zc_grasp")


def check_config(cfg: SearchConfig) -> None:
    from search.pareto import HW_METRICS

    if cfg.iterations < 0 or cfg.memory < 1:
        raise SearchError("--iterations must be >= 0 and --memory >= 1")
    if cfg.evaluator != "profile" and not cfg.evaluator.startswith("table:"):
        raise SearchError(f"--evaluator must be profile or table:SPACE, not {cfg.evaluator!r}")
    table = cfg.evaluator.startswith("table:")
    for name, value in (("--benchmark-file", cfg.benchmark_file), ("--table-noise", cfg.table_noise)):
        if value and not table:
            raise SearchError(f"{name} belongs to a benchmark table: it needs --evaluator table:SPACE")
    if cfg.latency_column and not cfg.latency_table:
        raise SearchError("--latency-column names a column of --latency-table, which is not given")
    if cfg.llm == "random" and (cfg.adapter or cfg.llm_url):
        raise SearchError("--llm random proposes without an LLM: drop --adapter / --llm-url")
    if cfg.llm_timeout_s <= 0 or cfg.llm_retries < 0 or cfg.llm_backoff_s < 0 or cfg.max_llm_errors < 1:
        raise SearchError("--llm-timeout-s must be > 0, --llm-retries and --llm-backoff-s >= 0, --max-llm-errors >= 1")
    if cfg.objective not in ("accuracy", "pareto"):
        raise SearchError(f"--objective must be accuracy or pareto, not {cfg.objective!r}")
    if cfg.hw_metric not in HW_METRICS or cfg.partition_metric not in HW_METRICS:
        raise SearchError(f"--hw-metric and --partition-by must be one of {', '.join(HW_METRICS)}")
    if cfg.latency_device not in ("cpu", "cuda"):
        raise SearchError(f"--latency-device must be cpu or cuda, not {cfg.latency_device!r}")
    if cfg.latency_table and not cfg.evaluator.startswith("table:"):
        raise SearchError("--latency-table is a lookup for the benchmark spaces: it needs --evaluator table:SPACE")
    if cfg.screen not in ("none", "zero-cost") or not 0 < cfg.screen_keep <= 1:
        raise SearchError("--screen must be none or zero-cost, and 0 < --screen-keep <= 1")
    if cfg.bins == 1 or cfg.bins < 0 or cfg.round_size < 1:
        raise SearchError("--bins must be 0 (off) or >= 2, and --round-size >= 1")
    if cfg.bin_edges and len(cfg.bin_edges) != cfg.bins - 1:
        raise SearchError(f"--bins {cfg.bins} needs {max(cfg.bins - 1, 0)} --bin-edges, not {len(cfg.bin_edges)}")


def _pre_failure(pre: dict | None, cfg: SearchConfig) -> dict | None:
    """The row of a candidate the pre-check rejects (does not build, or over a limit), else None."""
    if pre is None:
        return None
    if pre.get("status") != "ok":
        return {"status": pre.get("status") or "crash", "error": pre.get("error")}
    why = violation(cfg, pre)
    if why:
        return {**{k: pre.get(k) for k in ("flops", "params", "latency_ms")}, "status": "constraint", "error": why}
    return None


def fingerprint(code: str) -> str:
    """Identity of a network's source up to formatting and comments (its AST), for duplicate checks."""
    import ast
    import hashlib

    try:
        text = ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        text = " ".join(code.split())
    return hashlib.sha256(text.encode()).hexdigest()


def _duplicate(cand: dict) -> dict | None:
    """The failure row of a candidate identical to a network already tried, else None."""
    if cand.get("dup") is None:
        return None
    return {"status": "duplicate", "error": f"the same network as {cand['dup']} (not trained again)"}


def _rank(cand: dict, cfg: SearchConfig, b, edges) -> tuple:
    """Screening order (higher first): has code, new and passes the pre-check, inside the bin, zero-cost score."""
    from search.pareto import bin_of

    pre = cand.get("pre")
    if cand.get("code") is None:
        return (0, 0, 0, 0.0)
    if cand.get("dup") is not None:
        return (1, 0, 0, 0.0)
    if pre is None:
        return (1, 1, 1, 0.0)
    if _pre_failure(pre, cfg):
        return (1, 0, 0, 0.0)
    inside = b is None or bin_of(pre.get(cfg.partition_metric), edges) == b
    return (1, 1, int(inside), float(pre.get("zc_score") or 0.0))


def _notes(cfg: SearchConfig, b, edges, parent_row: dict, kb: list[str] | None, kb_version: int) -> str:
    from search.knowledge import render
    from search.pareto import _fmt, bin_text, cost_of

    text = ""
    if b is not None:
        m = cfg.partition_metric
        now = cost_of(parent_row, m)
        text += (f"Target complexity bin {b + 1} of {len(edges) + 1}: {bin_text(b, edges, m)}"
                 f"{f' (the network below: {_fmt(now, m)})' if now is not None else ''}. "
                 f"Write a network inside this range, as accurate as possible.\n")
    if kb is not None:
        text += render(kb, kb_version)
    return text


def run_loop(cfg: SearchConfig, seed_code: str, proposer, improver, evaluate, store: RunStore,
             progress: bool = True, precheck=None, edges: list[float] | None = None) -> dict:
    """Run (or continue) the search until cfg.iterations iterations are stored or time runs out.

    precheck(code) -> row: the cheap measurements before training (status, flops, params,
    latency_ms on the latency device, zc_score when screening); None: no pre-check.
    edges: inner edges of the complexity bins on cfg.partition_metric (None or []: no bins).
    """
    from tqdm import tqdm

    from search.knowledge import INITIAL
    from search.pareto import ParetoArchive, bin_of, bin_range, cost_of
    from search.precheck import vote

    seed_row = store.meta("seed_row")
    if seed_row is None:
        seed_row = {k: v for k, v in evaluate(seed_code).items() if k != "code"}
        if seed_row.get("status") != "ok":
            raise SearchError(f"the seed network does not profile: {seed_row.get('status')}: {seed_row.get('error')}")
        if precheck is not None:
            pre = precheck(seed_code)
            if pre.get("status") != "ok":
                raise SearchError(f"the seed network fails the pre-check: {pre.get('status')}: {pre.get('error')}")
            seed_row.update({f"pre_{k}": pre[k] for k in PRE_KEYS if pre.get(k) is not None})
        store.set_meta("seed_row", seed_row)
        store.set_meta("seed_code", seed_code)
    goal = goal_of(cfg)
    edges = list(edges or [])
    pareto = cfg.objective == "pareto"
    best_code, best_row = seed_code, seed_row
    archive = ParetoArchive()
    archive.add({"accuracy": seed_row["accuracy"], "cost": cost_of(seed_row, cfg.hw_metric), "code": seed_code,
                 "pcost": cost_of(seed_row, cfg.partition_metric), "row": seed_row, "it": None})
    memory = FeedbackMemory(cfg.memory)
    pending = (INITIAL_PROBLEM, INITIAL_MODIFICATION)
    kb_hist = store.kb_versions()
    if cfg.knowledge_base and not kb_hist:
        store.add_kb(0, -1, INITIAL, "initial")
        kb_hist = store.kb_versions()
    kb = kb_hist[-1]["items"] if cfg.knowledge_base else None
    kb_version = kb_hist[-1]["version"] if kb_hist else 0
    round_size = len(edges) + 1 if edges else cfg.round_size
    round_records: list[dict] = []
    done = store.iterations()
    for rec in done:  # resume: rebuild best, archive, memory, the round so far and the pending instruction
        m, x = rec["metrics"] or {}, rec["extra"] or {}
        if rec["is_best"]:
            best_code, best_row = rec["code"], m
        if rec["status"] == "ok" and cost_of(m, cfg.hw_metric) is not None:
            archive.add({"accuracy": m["accuracy"], "cost": cost_of(m, cfg.hw_metric), "code": rec["code"], "row": m,
                         "pcost": cost_of(m, cfg.partition_metric), "it": rec["it"]})
        if rec["status"] != "llm_error":
            memory.add(Triple(rec["problem"] or "", rec["instruction"] or "", rec["outcome"] or ""))
        if kb_hist and rec["it"] > kb_hist[-1]["after_it"]:
            round_records.append({**x, **m, "status": rec["status"], "error": rec["error"]})
    seen = {fingerprint(seed_code): "the seed network"}  # a repeated network is not trained again
    for rec in done:
        if rec["code"]:
            seen.setdefault(fingerprint(rec["code"]), f"iteration {rec['it']}")
    if done:
        pending = (done[-1]["next_problem"], done[-1]["modification"])
    start, llm_errors = time.time(), 0
    bar = tqdm(total=cfg.iterations, initial=len(done), desc=f"search {cfg.group}", unit="it", disable=not progress)
    try:
        for it in range(len(done), cfg.iterations):
            if cfg.time_budget_s and time.time() - start > cfg.time_budget_s:
                break
            seed = cfg.rng_seed * 100_003 + it
            problem, instruction = pending
            b = it % (len(edges) + 1) if edges else None
            parent = archive.pick(*bin_range(b, edges), it, key="pcost") if pareto and b is not None else \
                archive.pick(None, None, it) if pareto else {"code": best_code, "row": best_row, "it": None}
            parent_code, parent_row = parent["code"], parent["row"]
            extra_text = _notes(cfg, b, edges, parent_row, kb, kb_version)
            t0 = time.time()
            cands = []
            for j in range(cfg.proposals_per_iteration):
                prop = proposer.propose(parent_code, parent_row, goal, instruction, memory, seed + 1_000_003 * j,
                                        extra=extra_text)
                prop["fp"] = fingerprint(prop["code"]) if prop.get("code") else None
                prop["dup"] = seen.get(prop["fp"]) if prop["fp"] else None
                prop["pre"] = precheck(prop["code"]) if precheck is not None and prop.get("code") and \
                    prop["dup"] is None else None
                cands.append(prop)
            llm_s = time.time() - t0
            if len(cands) > 1:  # screening: vote of the zero-cost proxies among this iteration's proposals
                for c, v in zip(cands, vote([c["pre"] for c in cands])):
                    if c["pre"] is not None:
                        c["pre"]["zc_score"] = v
            pick = max(range(len(cands)), key=lambda j: (_rank(cands[j], cfg, b, edges), -j))
            for j, c in enumerate(cands):
                if j != pick:
                    why = "screened" if _rank(c, cfg, b, edges)[1] else (
                        _duplicate(c) or _pre_failure(c["pre"], cfg) or
                        {"status": c.get("status") or "no_code", "error": c.get("error")})
                    store.add_screened(it, j, {"code": c.get("code"), "raw": c.get("raw"),
                                               "status": why if isinstance(why, str) else why["status"],
                                               "error": None if isinstance(why, str) else why.get("error"),
                                               "metrics": c["pre"]})
            prop, pre = cands[pick], cands[pick]["pre"]
            code, profile_s = prop.get("code"), 0.0
            if code is None:
                row = {"status": prop.get("status") or "no_code",
                       "error": prop.get("error") or "the answer contains no parseable Python code"}
            elif _duplicate(prop):
                row = _duplicate(prop)  # never trained again
            elif _pre_failure(pre, cfg):
                row = _pre_failure(pre, cfg)  # never trained
            else:
                t1 = time.time()
                row = {k: v for k, v in evaluate(code).items() if k != "code"}
                profile_s = time.time() - t1
                why = violation(cfg, row) if row.get("status") == "ok" and pre is None else None
                if why:
                    row = {**row, "status": "constraint", "error": why}
            if code is not None:
                seen.setdefault(prop["fp"], f"iteration {it}")
            metrics = {k: row.get(k) for k in METRIC_KEYS} | {"status": row.get("status")}
            if pre is not None:
                metrics |= {f"pre_{k}": pre[k] for k in PRE_KEYS if pre.get(k) is not None}
            cost = cost_of(metrics, cfg.hw_metric)
            entered = row.get("status") == "ok" and cost is not None and archive.add(
                {"accuracy": row["accuracy"], "cost": cost, "code": code, "row": metrics, "it": it,
                 "pcost": cost_of(metrics, cfg.partition_metric)})
            in_bin = None if b is None else bin_of(cost_of(metrics, cfg.partition_metric), edges) == b
            is_best = _better(row, best_row)
            outcome = outcome_text(row, parent_row)
            if pareto and row.get("status") == "ok":
                outcome += "; entered the Pareto archive" if entered else "; dominated"
            if b is not None and in_bin is False and row.get("status") == "ok":
                outcome += f"; outside target bin {b + 1}"
            lost = row.get("status") == "llm_error"
            llm_errors = llm_errors + 1 if lost else 0
            if lost:  # nothing was tried: the memory and the pending instruction stay as they are
                diag = {"problem": problem, "modification": instruction, "raw": None, "source": None}
            else:
                memory.add(Triple(problem, instruction, outcome))
                diag = improver.diagnose(row, parent_row, memory, seed)
            if is_best:
                best_code, best_row = code, row
            extra = {"bin": b, "in_bin": in_bin, "parent_it": parent["it"], "parent_accuracy": parent_row.get("accuracy"),
                     "parent_cost": cost_of(parent_row, cfg.hw_metric), "parent_params": parent_row.get("params"),
                     "cost": cost, "archive": bool(entered), "kb_version": kb_version if kb is not None else None,
                     "proposals": len(cands)}
            if diag.get("error"):  # the Prompt Improver's server failed: the rule's diagnosis was used
                extra["improver_error"] = diag["error"]
            store.add({"it": it, "started": t0, "prompt": prop.get("prompt"), "raw_answer": prop.get("raw"),
                       "code": code, "status": row.get("status"), "error": row.get("error"), "metrics": metrics,
                       "problem": problem, "modification": diag["modification"], "outcome": outcome,
                       "instruction": instruction, "improver_raw": diag.get("raw"),
                       "improver_source": diag.get("source"), "llm_seconds": llm_s,
                       "profile_seconds": profile_s, "best_accuracy": best_row["accuracy"],
                       "is_best": int(is_best), "next_problem": diag["problem"], "extra": extra})
            pending = (diag["problem"], diag["modification"])
            round_records.append({**extra, **metrics, "error": row.get("error")})
            if kb is not None and (it + 1) % round_size == 0:
                res = improver.rewrite_knowledge(kb, round_records, seed)
                kb, kb_version, round_records = res["items"], kb_version + 1, []
                store.add_kb(kb_version, it, kb, res["source"], res.get("summary"), res.get("raw"))
            bar.update(1)
            bar.set_postfix(best=f"{100 * best_row['accuracy']:.2f}%", archive=len(archive.entries),
                            last=row.get("status"))
            if llm_errors >= cfg.max_llm_errors and it + 1 < cfg.iterations:
                raise SearchError(f"the LLM failed {llm_errors} iterations in a row (last: {row.get('error')}); "
                                  f"{it + 1} iterations are stored in {cfg.out}: continue with --resume")
    finally:
        bar.close()
    return {"iterations": len(store.iterations()), "best": best_row, "seed": seed_row,
            "archive": [{k: e[k] for k in ("accuracy", "cost", "it")} for e in archive.entries]}


def config_dict(cfg: SearchConfig) -> dict:
    return dataclasses.asdict(cfg)
