"""The closed loop: propose, validate and profile, diagnose, remember; for a fixed budget.

    python -m search run --llm smollm2-135m --seed lenet --dataset fashion-mnist --iterations 10 --out runs/frozen-0

Each iteration: the proposer (Code Generator LLM, or random mutation) gets the best network's source
and telemetry, the Prompt Improver's instruction and the feedback memory, and writes a network; it
is profiled (the corpus profiler: sandboxed, same recipe); the improver reads the outcome and writes
the next (problem, modification); the memory keeps the last K triples (problem found, modification
suggested, outcome), failures included. Every iteration is committed to `OUT/run.sqlite` as it ends.
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
    batch_size: int = 256
    device: str = "auto"
    timeout_s: float = 900.0
    label: str | None = None
    evaluator: str = "profile"
    benchmark_file: str | None = None
    table_noise: bool = False

    @property
    def group(self) -> str:
        """The configuration a run belongs to in `search compare` (label, else llm + adapter)."""
        if self.label:
            return self.label
        if self.llm == "random":
            return "random"
        return f"{self.llm}{'+' + self.adapter if self.adapter else ''}"


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


def run_loop(cfg: SearchConfig, seed_code: str, proposer, improver, evaluate, store: RunStore,
             progress: bool = True) -> dict:
    """Run (or continue) the search until cfg.iterations iterations are stored or time runs out."""
    from tqdm import tqdm

    seed_row = store.meta("seed_row")
    if seed_row is None:
        seed_row = {k: v for k, v in evaluate(seed_code).items() if k != "code"}
        if seed_row.get("status") != "ok":
            raise SearchError(f"the seed network does not profile: {seed_row.get('status')}: {seed_row.get('error')}")
        store.set_meta("seed_row", seed_row)
        store.set_meta("seed_code", seed_code)
    goal = goal_of(cfg)
    best_code, best_row = seed_code, seed_row
    memory = FeedbackMemory(cfg.memory)
    pending = (INITIAL_PROBLEM, INITIAL_MODIFICATION)
    done = store.iterations()
    for rec in done:  # resume: rebuild best, memory and the pending instruction from the store
        if rec["is_best"]:
            best_code, best_row = rec["code"], rec["metrics"]
        memory.add(Triple(rec["problem"] or "", rec["instruction"] or "", rec["outcome"] or ""))
    if done:
        pending = (done[-1]["next_problem"], done[-1]["modification"])
    start = time.time()
    bar = tqdm(total=cfg.iterations, initial=len(done), desc=f"search {cfg.group}", unit="it", disable=not progress)
    try:
        for it in range(len(done), cfg.iterations):
            if cfg.time_budget_s and time.time() - start > cfg.time_budget_s:
                break
            seed = cfg.rng_seed * 100_003 + it
            problem, instruction = pending
            t0 = time.time()
            prop = proposer.propose(best_code, best_row, goal, instruction, memory, seed)
            llm_s = time.time() - t0
            code, profile_s = prop.get("code"), 0.0
            if code is None:
                row = {"status": "no_code", "error": prop.get("error") or "the answer contains no parseable Python code"}
            else:
                t1 = time.time()
                row = {k: v for k, v in evaluate(code).items() if k != "code"}
                profile_s = time.time() - t1
                why = violation(cfg, row) if row.get("status") == "ok" else None
                if why:
                    row = {**row, "status": "constraint", "error": why}
            is_best = _better(row, best_row)
            outcome = outcome_text(row, best_row)
            memory.add(Triple(problem, instruction, outcome))
            diag = improver.diagnose(row, best_row, memory, seed)
            if is_best:
                best_code, best_row = code, row
            store.add({"it": it, "started": t0, "prompt": prop.get("prompt"), "raw_answer": prop.get("raw"),
                       "code": code, "status": row.get("status"), "error": row.get("error"),
                       "metrics": {k: row.get(k) for k in METRIC_KEYS} | {"status": row.get("status")},
                       "problem": problem, "modification": diag["modification"], "outcome": outcome,
                       "instruction": instruction, "improver_raw": diag.get("raw"),
                       "improver_source": diag.get("source"), "llm_seconds": llm_s,
                       "profile_seconds": profile_s, "best_accuracy": best_row["accuracy"],
                       "is_best": int(is_best), "next_problem": diag["problem"]})
            pending = (diag["problem"], diag["modification"])
            bar.update(1)
            bar.set_postfix(best=f"{100 * best_row['accuracy']:.2f}%", last=row.get("status"))
    finally:
        bar.close()
    return {"iterations": len(store.iterations()), "best": best_row, "seed": seed_row}


def config_dict(cfg: SearchConfig) -> dict:
    return dataclasses.asdict(cfg)
