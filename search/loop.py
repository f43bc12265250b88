"""The closed loop: pick a parent, propose, evaluate, remember, store; for a fixed budget.

    python -m search run --llm smollm2-135m --seed lenet --dataset fashion-mnist --iterations 10 --out runs/frozen-0
    python -m search run --llm random --objective pareto --hw-metric latency_ms --bins 4 --knowledge-base \
        --screen zero-cost --screen-keep 0.25 --max-latency-ms 2 --out runs/pareto-0

Each iteration (`run_loop`): the plan (`search.plan`) picks the network to start from and the
complexity bin to aim at; the proposer (Code Generator LLM, or random mutation) gets its source and
telemetry, the Prompt Improver's instruction and the feedback memory, and writes a network
(`search.screening.propose`; with screening several, pre-checked and voted down to one); it is
evaluated in one sandboxed request (`corpus.pipeline`: build, measure, limits, training) unless it
is a duplicate, has no code or failed its pre-check; the improver reads the outcome and writes the
next (problem, modification); the memory keeps the last K triples (problem found, modification
suggested, outcome), failures included; the iteration is committed to `OUT/run.sqlite`. The state
between iterations is one `search.state.SearchState`, rebuilt from the store on `--resume`.

Multi-objective options (all off by default; `--objective accuracy` is the plain loop):
- `--objective pareto`: a Pareto archive over (accuracy, hw metric) replaces "the best" as the
  source of parents (`search.plan`); the hw metric (`--hw-metric`) is measured on `--latency-device`.
- `--bins N`: complexity bins from quantiles of the seed's random variants (or `--bin-edges`);
  iteration `it` targets bin `it % N`, and the bin's budget is stated in the prompt.
- `--knowledge-base`: design heuristics rewritten by the Prompt Improver after every round (N
  iterations with bins, else `--round-size`), stored per version, shown in the prompt.
- `--max-flops/params/latency-ms`: a candidate over a limit is a `constraint` failure with the
  measured value and is never trained (the pipeline checks before training).
- `--screen zero-cost --screen-keep f`: see `search.screening`; the iteration budget counts
  evaluated candidates only.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass

from corpus.candidate import Candidate
from search.pareto import cost_of
from search.plan import Plan
from search.proposal import Proposal
from search.roles import Triple, outcome_text
from search.screening import failure, propose, screen, violation
from search.state import SearchState
from search.store import RunStore


class SearchError(Exception):
    """Bad input or an unusable run folder: one-line error, exit 2."""


@dataclass(frozen=True)
class SearchConfig:
    strategy: str = "llm"  # search.strategies.STRATEGIES: llm | random | mutation | largest | evolution | tpe | gp | surrogate
    prior: str | None = None  # surrogate: a labelled corpus of another space or family
    explore: float = 0.1  # surrogate, scored: share of uniform proposals
    scorer: str | None = None  # scored: the model that scores candidates (smollm2-135m | Hub id | folder)
    scorer_adapter: str | None = None  # scored: its peft adapter (finetune --task score); None: the frozen model
    scorer_url: str | None = None  # scored: an OpenAI-compatible server of the scorer instead
    scorer_pool: int = 64  # scored: new configurations drawn and scored per iteration
    pool_local: float = 0.5  # scored: share of the pool drawn as 1-2 slot changes of the best evaluated ones
    pool_from: str | None = None  # scored: another (non-LLM) strategy whose next proposals join the pool
    pool_from_n: int = 8  # scored: how many of them per iteration
    scorer_dtype: str = "float32"  # scored, in process: bfloat16 merges the adapter and halves the scoring time
    scorer_generate: int = 0  # scored: pool members answered by the Code Generator (--llm/--adapter) per iteration
    generator_ladder: tuple[float, ...] = (0.7, 1.0, 1.3)  # scored: their temperatures, cycled
    generator_prompt: str = "search"  # scored: search (the Code Generator's prompt) | prefer (finetune --task prefer's)
    llm: str = "smollm2-135m"
    adapter: str | None = None
    improver_llm: str | None = None
    improver_adapter: str | None = None
    llm_url: str | None = None
    improver_url: str | None = None
    improver_example: bool = False
    seed: str = "lenet"
    class_name: str | None = None  # the class or factory in the seed file that builds it (None: Net, or the only class)
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
    # 300 steps of 32 on the default 8,000-image subset (9,600 images): issue 30's table found it half as noisy
    # as 150 steps of 64 on lenet, no worse elsewhere, at 1.0-1.2x the cost (runs stored before keep 64 and 150)
    batch_size: int = 32
    min_steps: int = 300
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
    answer_format: str = "widths"  # widths | diff | code (finetune.formats)
    context: str = "source"  # source | summary (widths only): what the prompt shows of the parent
    constrain: str = "auto"  # auto | on | off: grammar-constrained decoding (search.constrain)
    server_kind: str = "auto"  # auto (detect) | llama.cpp | llama-cpp-python | vllm | vllm-legacy | ollama | none
    llm_backend: str = "auto"  # finetune.llm's registry: auto (openai with --llm-url, else transformers) | a name
    repair: bool = True  # shape repair of diff/code candidates (mutator.repair)
    samples: int = 1  # answers asked per proposal at most: the first that is not a tried network is kept
    exclude_tried: bool = True  # widths under a grammar: the grammar leaves out every width list tried
    proxy_seeds: int = 1  # training runs per candidate, rng seeds rng_seed..rng_seed+K-1, accuracy their mean
    # training on a CPU: Recipe.channels_last and Recipe.bf16, auto | on | off (corpus.evaluator.resolve_fast_cpu;
    # a new run stores auto's answer)
    fast_cpu: str | bool = "auto"

    def __post_init__(self):
        if isinstance(self.fast_cpu, bool):  # stored by earlier versions
            object.__setattr__(self, "fast_cpu", "on" if self.fast_cpu else "off")
        # runs stored by earlier versions: `llm random` was the no-LLM baseline, uniform sampling over a
        # table's configurations, a random variant of the parent elsewhere
        if self.llm == "random" and self.uses_llm:
            try:
                table = self.evaluator_spec.table_space is not None
            except ValueError:  # check_config says why
                table = False
            object.__setattr__(self, "strategy", "random" if table else "mutation")

    @property
    def evaluator_spec(self):
        """`evaluator` parsed (`corpus.evaluators.EvaluatorSpec`); ValueError for one the registry does not know."""
        from corpus.evaluators import parse_evaluator

        return parse_evaluator(self.evaluator)

    @property
    def uses_llm(self) -> bool:
        from search.strategies.traits import uses_llm

        return uses_llm(self.strategy)

    @property
    def generates(self) -> bool:
        """A scoring strategy whose pool holds the Code Generator's answers (--scorer-generate N > 0)."""
        from search.strategies.traits import takes_scorer

        return takes_scorer(self.strategy) and self.scorer_generate > 0

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
        if self.scorer:  # a model scores the candidates: tuned and frozen are different configurations
            dtype = "" if self.scorer_dtype == "float32" else f"@{self.scorer_dtype}"
            gen = f"+gen{self.scorer_generate}{'' if self.generator_prompt == 'search' else '-' + self.generator_prompt}:" \
                f"{self.llm}{'+' + self.adapter if self.adapter else ''}" if self.generates else ""
            other = f"+from-{self.pool_from}{self.pool_from_n}" if self.pool_from else ""
            return f"{self.strategy}:{self.scorer}{'+' + self.scorer_adapter if self.scorer_adapter else ''}{dtype}{gen}" \
                f"{other}"
        if not self.uses_llm:
            return self.strategy
        return f"{self.llm}{'+' + self.adapter if self.adapter else ''}"


# What `--resume` may change: budgets and where things are, never what decides the search's results.
RESUMABLE = frozenset({"iterations", "time_budget_s", "benchmark_file", "data_dir", "llm_url", "improver_url",
                       "scorer_url", "llm_timeout_s", "llm_retries", "llm_backoff_s", "max_llm_errors"})


def goal_of(cfg: SearchConfig) -> dict:
    if cfg.max_flops:
        return {"kind": "accuracy_under_flops", "max_flops": float(cfg.max_flops)}
    return {"kind": "raise_accuracy"}


METRIC_KEYS = ("accuracy", "flops", "params", "latency_ms", "latency_batch_ms", "train_seconds",
               "peak_memory_mb", "device_name", "widths", "table_key", "table_rank")  # in every stored row
PRE_KEYS = ("flops", "params", "latency_ms", "latency_device", "zc_score", "zc_synflow", "zc_naswot",
            "zc_snip", "zc_grad_norm", "zc_grasp")


def server_kinds() -> tuple[str, ...]:
    """--server-kind's values: auto (detect), the registered kinds (`finetune.llm.servers`), none."""
    from finetune.llm.servers import SERVER_KINDS

    return ("auto", *SERVER_KINDS, "none")


SERVER_KINDS = server_kinds()


def check_config(cfg: SearchConfig) -> None:
    from finetune.formats import check_format, format_names, get_format
    from search.pareto import HW_METRICS
    from search.strategies.traits import takes_prior, takes_scorer, with_prior, with_scorer

    try:
        check_format(cfg.answer_format, cfg.context)
    except ValueError as exc:
        names = format_names()
        known = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise SearchError(str(exc).replace("unknown answer format", f"--answer-format must be {known}, not")
                          .replace("unknown context", "--context must be source or summary, not")) from None
    if cfg.constrain not in ("auto", "on", "off") or cfg.server_kind not in server_kinds():
        raise SearchError(f"--constrain must be auto, on or off and --server-kind one of {', '.join(server_kinds())}")
    if cfg.constrain == "on" and (not get_format(cfg.answer_format).constrainable or cfg.server_kind == "none"):
        able = " or ".join(n for n in format_names() if get_format(n).constrainable)
        raise SearchError(f"--constrain on needs --answer-format {able} and a server kind other than none")
    if cfg.samples < 1:
        raise SearchError("--samples must be >= 1")
    from corpus.evaluator import FAST_CPU

    if not isinstance(cfg.fast_cpu, str) or cfg.fast_cpu not in FAST_CPU:
        raise SearchError(f"--fast-cpu must be auto, on or off, not {cfg.fast_cpu!r}")
    if isinstance(cfg.min_steps, bool) or not isinstance(cfg.min_steps, int) or cfg.min_steps < 0:
        raise SearchError(f"--min-steps must be an integer >= 0, not {cfg.min_steps!r}")
    if isinstance(cfg.proxy_seeds, bool) or not isinstance(cfg.proxy_seeds, int) or cfg.proxy_seeds < 1:
        raise SearchError(f"--proxy-seeds must be >= 1 (training runs averaged per candidate), not {cfg.proxy_seeds!r}")

    for flag, limit in (("--max-flops", cfg.max_flops), ("--max-params", cfg.max_params),
                        ("--max-latency-ms", cfg.max_latency_ms)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or not math.isfinite(limit) or limit <= 0):
            raise SearchError(f"{flag} must be a number > 0 (a limit no candidate may exceed), not {limit!r}")
    if cfg.iterations < 0 or cfg.memory < 1:
        raise SearchError("--iterations must be >= 0 and --memory >= 1")
    try:
        table = cfg.evaluator_spec.table_space is not None
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    for name, value in (("--benchmark-file", cfg.benchmark_file), ("--table-noise", cfg.table_noise)):
        if value and not table:
            raise SearchError(f"{name} belongs to a benchmark table: it needs --evaluator table:SPACE")
    if cfg.proxy_seeds > 1 and not cfg.evaluator_spec.trains:
        raise SearchError(f"--proxy-seeds {cfg.proxy_seeds} averages training runs: --evaluator {cfg.evaluator} "
                          f"trains nothing (a table's accuracy is its own; leave --proxy-seeds at 1)")
    if cfg.latency_column and not cfg.latency_table:
        raise SearchError("--latency-column names a column of --latency-table, which is not given")
    if isinstance(cfg.scorer_generate, bool) or not isinstance(cfg.scorer_generate, int) or cfg.scorer_generate < 0:
        raise SearchError(f"--scorer-generate must be >= 0 (generator answers per pool), not {cfg.scorer_generate!r}")
    if cfg.scorer_generate and not takes_scorer(cfg.strategy):
        raise SearchError(f"--scorer-generate adds generator answers to a scored pool: it needs --strategy "
                          f"{' or '.join(with_scorer())}, not {cfg.strategy}")
    ladder = cfg.generator_ladder or ()
    if not ladder or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 5 for t in ladder):
        raise SearchError(f"--generator-ladder must be temperatures in (0, 5], comma-separated, not {ladder!r}")
    if cfg.generator_prompt not in ("search", "prefer"):
        raise SearchError(f"--generator-prompt must be search or prefer, not {cfg.generator_prompt!r}")
    if cfg.generates and cfg.generator_prompt == "search" and not get_format(cfg.answer_format).gives_widths:
        able = " or ".join(n for n in format_names() if get_format(n).gives_widths)
        raise SearchError(f"--scorer-generate: the generator's answers join a pool of width lists: --answer-format "
                          f"{able}, not {cfg.answer_format}")
    if not cfg.uses_llm and not cfg.generates and (cfg.adapter or cfg.llm_url):
        raise SearchError(f"--strategy {cfg.strategy} proposes without an LLM: drop --adapter / --llm-url"
                          + (" (or add --scorer-generate N: its generator)" if takes_scorer(cfg.strategy) else ""))
    if not 0 <= cfg.explore <= 1:
        raise SearchError("--explore must be between 0 and 1")
    if cfg.prior and not takes_prior(cfg.strategy):
        raise SearchError(f"--prior warm-starts a model of the strategy: it needs --strategy "
                          f"{' or '.join(with_prior())}, not {cfg.strategy}")
    if takes_scorer(cfg.strategy) and not cfg.scorer:
        raise SearchError(f"--strategy {cfg.strategy} scores candidates with a model: give --scorer MODEL "
                          "(smollm2-135m, a Hub id or a folder) and, tuned, --scorer-adapter DIR")
    if (cfg.scorer or cfg.scorer_adapter or cfg.scorer_url) and not takes_scorer(cfg.strategy):
        raise SearchError(f"--scorer scores candidates for --strategy {' or '.join(with_scorer())}, "
                          f"not {cfg.strategy}")
    if cfg.scorer_pool < 1:
        raise SearchError(f"--scorer-pool must be >= 1, not {cfg.scorer_pool}")
    if cfg.pool_from is not None and not takes_scorer(cfg.strategy):  # its name: checked where strategies are made
        raise SearchError(f"--pool-from adds another strategy's proposals to a scored pool: it needs --strategy "
                          f"{' or '.join(with_scorer())}, not {cfg.strategy}")
    if isinstance(cfg.pool_from_n, bool) or not isinstance(cfg.pool_from_n, int) or cfg.pool_from_n < 1:
        raise SearchError(f"--pool-from-n must be >= 1 (proposals of --pool-from per pool), not {cfg.pool_from_n!r}")
    if not 0.0 <= cfg.pool_local <= 1.0:
        raise SearchError(f"--pool-local must be between 0 and 1, not {cfg.pool_local}")
    if cfg.scorer_dtype not in ("float32", "bfloat16"):
        raise SearchError(f"--scorer-dtype must be float32 or bfloat16, not {cfg.scorer_dtype!r}")
    if cfg.llm_timeout_s <= 0 or cfg.llm_retries < 0 or cfg.llm_backoff_s < 0 or cfg.max_llm_errors < 1:
        raise SearchError("--llm-timeout-s must be > 0, --llm-retries and --llm-backoff-s >= 0, --max-llm-errors >= 1")
    if cfg.objective not in ("accuracy", "pareto"):
        raise SearchError(f"--objective must be accuracy or pareto, not {cfg.objective!r}")
    if cfg.hw_metric not in HW_METRICS or cfg.partition_metric not in HW_METRICS:
        raise SearchError(f"--hw-metric and --partition-by must be one of {', '.join(HW_METRICS)}")
    if cfg.latency_device not in ("cpu", "cuda"):
        raise SearchError(f"--latency-device must be cpu or cuda, not {cfg.latency_device!r}")
    if cfg.latency_table and not table:
        raise SearchError("--latency-table is a lookup for the benchmark spaces: it needs --evaluator table:SPACE")
    if cfg.screen not in ("none", "zero-cost") or not 0 < cfg.screen_keep <= 1:
        raise SearchError("--screen must be none or zero-cost, and 0 < --screen-keep <= 1")
    if cfg.bins == 1 or cfg.bins < 0 or cfg.round_size < 1:
        raise SearchError("--bins must be 0 (off) or >= 2, and --round-size >= 1")
    if cfg.bin_edges and len(cfg.bin_edges) != cfg.bins - 1:
        raise SearchError(f"--bins {cfg.bins} needs {max(cfg.bins - 1, 0)} --bin-edges, not {len(cfg.bin_edges)}")


def run_loop(cfg: SearchConfig, seed_code: str, proposer, improver, evaluate, store: RunStore,
             progress: bool = True, precheck=None, edges: list[float] | None = None, evaluate_seed=None,
             fix=None) -> dict:
    """Run (or continue) the search until cfg.iterations iterations are stored or time runs out.

    evaluate: an evaluator (`corpus.evaluators`: `evaluate(Candidate) -> row`) or a function of the
    source (a test double) -> row: one candidate, limits included (the pipeline stops a candidate over a limit
    before training; for an evaluator that does not, the loop checks them on its row). precheck(code)
    -> row: measurements without training, for screening or what the evaluator cannot measure; None:
    no pre-check. edges: inner edges of the complexity bins (None or []: no bins). evaluate_seed: the
    seed's evaluation without the limits (default: evaluate). fix(code, parent_code) -> RepairResult:
    the shape repair of a candidate whose evaluation failed with a channel mismatch (None: off)."""
    from tqdm import tqdm

    state = SearchState.restore(cfg, store, seed_code, seed_row(cfg, store, seed_code, evaluate_seed or evaluate,
                                                                precheck))
    plan, goal, start = Plan(cfg, edges), goal_of(cfg), time.time()
    observe = getattr(proposer, "observe", None)  # a strategy that learns from the outcomes (search.strategies)
    if hasattr(proposer, "seed_row"):  # a strategy whose prompts name the seed network's measured row
        proposer.seed_row = dict(state.seed_row or {})
    if observe is not None:
        for rec in store.iterations():
            observe(Proposal(code=rec["code"], widths=(rec["extra"] or {}).get("answer_widths")),
                    {**(rec["metrics"] or {}), "status": rec["status"]})
    bar = tqdm(total=cfg.iterations, initial=state.done, desc=f"search {cfg.group}", unit="it", disable=not progress)
    try:
        for it in range(state.done, cfg.iterations):
            if cfg.time_budget_s and time.time() - start > cfg.time_budget_s:
                break
            seed, b = cfg.rng_seed * 100_003 + it, plan.bin(it)
            parent = plan.parent(state, it, b)
            t0 = time.time()
            cands = propose(cfg, proposer, state, parent, goal, plan.notes(b, parent["row"], state), seed, precheck)
            llm_s = time.time() - t0
            cand, row, profile_s = assess(cfg, screen(cfg, cands, plan, b, store, it), evaluate, fix,
                                          parent["code"], state.tried, it, parent["it"])
            timing = {"started": t0, "llm_seconds": llm_s, "profile_seconds": profile_s, "proposals": len(cands)}
            conclude(cfg, state, plan, improver, store, it, b, parent, cand, row, seed, timing)
            if observe is not None:
                observe(cand, row)
            bar.update(1)
            bar.set_postfix(best=f"{100 * state.best_row['accuracy']:.2f}%", archive=len(state.archive.entries),
                            last=row.get("status"))
            if state.llm_errors >= cfg.max_llm_errors and it + 1 < cfg.iterations:
                raise SearchError(f"the LLM failed {state.llm_errors} iterations in a row (last: {row.get('error')}); "
                                  f"{it + 1} iterations are stored in {cfg.out}: continue with --resume")
    finally:
        bar.close()
    return {"iterations": len(store.iterations()), "best": state.best_row, "seed": state.seed_row,
            "archive": [{k: e[k] for k in ("accuracy", "cost", "it")} for e in state.archive.entries]}


def seed_row(cfg: SearchConfig, store: RunStore, seed_code: str, evaluate, precheck) -> dict:
    """The seed network's row: stored, or evaluated (and pre-checked) once and stored."""
    row = store.meta("seed_row")
    if row is not None:
        return row
    row = evaluated(evaluate, Candidate(code=seed_code, proposer="seed"))
    if row.get("status") != "ok":
        raise SearchError(f"the seed network does not profile: {row.get('status')}: {row.get('error')}")
    if precheck is not None:
        pre = precheck(seed_code)
        if pre.get("status") != "ok":
            raise SearchError(f"the seed network fails the pre-check: {pre.get('status')}: {pre.get('error')}")
        row.update({f"pre_{k}": pre[k] for k in PRE_KEYS if pre.get(k) is not None})
    store.set_meta("seed_row", row)
    store.set_meta("seed_code", seed_code)
    return row


# what a failed build or forward pass says when layers disagree on channel counts
SHAPE_MISMATCH = re.compile(r"channels|shape|size mismatch|mat1 and mat2|running_mean|must match the size|"
                            r"expected input|size of tensor", re.I)


def shape_broken(row: dict) -> bool:
    return row.get("status") == "shape_error" or \
        (row.get("status") == "build_error" and bool(SHAPE_MISMATCH.search(row.get("error") or "")))


def repair_text(changes) -> str:
    """`your change broke fc1.in_features; repaired by setting it to 600` from repair changes."""
    names, sets = [], []
    for c in changes:
        parts = c.feeds.split()
        name = parts[0] if "->" in parts else c.feeds[:60]
        after = parts[-1] if "->" in parts else str(c.new)
        names.append(name)
        sets.append(f"{name} to {after} (line {c.line}: {c.old} -> {c.new})")
    return f"your change broke {', '.join(names)}; repaired by setting {', '.join(sets)}"


def evaluated(evaluate, cand: Candidate) -> dict:
    """The row (less its code) of an evaluator object, which takes the Candidate, or of a plain function of
    the source (a test double, a bound `evaluate`)."""
    ev = getattr(evaluate, "evaluate", None)
    row = ev(cand) if ev is not None else evaluate(cand.code)
    return {k: v for k, v in row.items() if k != "code"}


def proposer_name(cfg: SearchConfig) -> str:
    """Who proposed a run's candidates, as its rows record it: the strategy, or the LLM [+ adapter]."""
    return f"{cfg.llm}{'+' + cfg.adapter if cfg.adapter else ''}" if cfg.uses_llm else cfg.strategy


def assess(cfg: SearchConfig, cand: Proposal, evaluate, fix=None, parent_code: str | None = None,
           tried=None, it: int | None = None, parent_it: int | None = None) -> tuple[Proposal, dict, float]:
    """(proposal, row, seconds evaluating) of the chosen candidate: its failure (no code, LLM error,
    duplicate, pre-check) in no time, or its evaluation. With `fix`, a candidate whose evaluation fails
    with a channel mismatch is repaired (`mutator.repair`) and the repaired network evaluated instead: the
    proposal returned then holds the repaired `code`, `llm_code` (the proposer's) and `repair`."""
    row = failure(cand, cfg)
    if row is not None:
        return cand, row, 0.0
    t0 = time.time()
    rec = cand.candidate(proposer_name(cfg), it, parent_it)
    row = evaluated(evaluate, rec)
    if fix is not None and shape_broken(row):
        r = fix(cand.code, parent_code)
        repair = {"status": r.status, "changes": [str(c) for c in r.changes], "reason": r.reason or None}
        if r.status != "repaired":
            cand = dataclasses.replace(cand, repair=repair)
        else:
            cand = dataclasses.replace(cand, repair={**repair, "text": repair_text(r.changes)}, llm_code=cand.code,
                                       code=r.source)
            dup = tried(r.source) if tried is not None else None
            if dup is not None:
                return cand, {"status": "duplicate", "error": f"repaired, the same network as {dup} (not trained "
                                                              "again)"}, time.time() - t0
            row = evaluated(evaluate, dataclasses.replace(rec, code=r.source, widths=None, params=None))
    why = violation(cfg, row) if row.get("status") == "ok" and cand.pre is None else None
    return cand, ({**row, "status": "constraint", "error": why} if why else row), time.time() - t0


def conclude(cfg: SearchConfig, state: SearchState, plan: Plan, improver, store: RunStore, it: int, b, parent: dict,
             cand: Proposal, row: dict, seed: int, timing: dict) -> None:
    """Remember the iteration (archive, best, memory, diagnosis, knowledge base) and store it."""
    code, pre, parent_row = cand.code, cand.pre, parent["row"]
    metrics = {**dict.fromkeys(METRIC_KEYS), **row,
               **({f"pre_{k}": pre[k] for k in PRE_KEYS if pre.get(k) is not None} if pre else {})}
    entered, is_best = state.admit(it, code, metrics, cand.widths)
    in_bin, ok = plan.in_bin(metrics, b), row.get("status") == "ok"
    repaired = (cand.repair or {}).get("status") == "repaired"
    outcome = (f"{cand.repair['text']}; then " if repaired else "") + outcome_text(row, parent_row) + ("" if not (plan.pareto and ok) else
                                               "; entered the Pareto archive" if entered else "; dominated")
    if in_bin is False and ok:
        outcome += f"; outside target bin {b + 1}"
    problem, instruction = state.pending
    if row.get("status") == "llm_error":  # nothing was tried: the memory and the pending instruction stay
        triple, diag = None, {"problem": problem, "modification": instruction, "raw": None, "source": None}
    else:
        triple = Triple(problem, instruction, outcome, cand.widths or None)
        state.memory.add(triple)  # the improver diagnoses with this iteration's triple in the memory
        diag = improver.diagnose(row, parent_row, state.memory, seed)
    state.advance(it, tried=triple is not None, diagnosis=(diag["problem"], diag["modification"]))
    extra = {"bin": b, "in_bin": in_bin, "parent_it": parent["it"], "parent_accuracy": parent_row.get("accuracy"),
             "parent_cost": cost_of(parent_row, cfg.hw_metric), "parent_params": parent_row.get("params"),
             "cost": cost_of(metrics, cfg.hw_metric), "archive": bool(entered),
             "kb_version": state.kb_version if state.kb is not None else None, "proposals": timing["proposals"],
             "answer_format": cand.format, "parse_status": cand.parse_status,
             "constrained": cand.constrained, "answer_widths": list(cand.widths) if cand.widths else None,
             "repeats": cand.repeats, "samples": cand.samples, "repaired": repaired,
             "strategy_seconds": cand.strategy_seconds,
             "proposer": proposer_name(cfg), "fingerprint": cand.candidate(None).fingerprint if code else None,
             **({"repair": dict(cand.repair), "llm_code": cand.llm_code} if cand.repair else {}),
             **({"improver_error": diag["error"]} if diag.get("error") else {})}
    store.add({"it": it, "started": timing["started"], "prompt": cand.prompt, "raw_answer": cand.raw,
               "code": code, "status": row.get("status"), "error": row.get("error"), "metrics": metrics,
               "problem": problem, "modification": diag["modification"], "outcome": outcome,
               "instruction": instruction, "improver_raw": diag.get("raw"), "improver_source": diag.get("source"),
               "llm_seconds": timing["llm_seconds"], "profile_seconds": timing["profile_seconds"],
               "best_accuracy": state.best_row["accuracy"], "is_best": int(is_best), "next_problem": diag["problem"],
               "extra": extra})
    state.round_records.append({**extra, **metrics, "error": row.get("error")})
    if state.kb is not None and (it + 1) % plan.round_size == 0:
        res = improver.rewrite_knowledge(state.kb, state.round_records, seed)
        state.kb, state.kb_version, state.round_records = res["items"], state.kb_version + 1, []
        store.add_kb(state.kb_version, it, state.kb, res["source"], res.get("summary"), res.get("raw"))


def config_dict(cfg: SearchConfig) -> dict:
    return dataclasses.asdict(cfg)
