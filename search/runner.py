"""Wire a search from its config: roles are built here and passed into `run_loop`.

Tests pass their own `llm` / `evaluate` (scripted test doubles); the CLI builds the real ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from search.loop import RESUMABLE, SearchConfig, SearchError, check_config, config_dict, run_loop
from search.screening import limits
from search.store import RunStore, StoreError

from mutator.cli import config_from


def input_spec(dataset: str, class_name: str | None = None) -> dict:
    """The build spec of the search's networks: the data set's input shape and classes, the seed's builder."""
    from corpus.data import DataError, info

    try:
        d = info(dataset)
    except DataError as exc:
        raise SearchError(str(exc)) from None
    return {"in_shape": [1, d["channels"], *d["size"]], "classes": d["classes"], "class_name": class_name or None}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def stored_config(saved: dict) -> SearchConfig:
    """The config a run stored (JSON: lists for tuples; keys of an older version skipped)."""
    # fields added since, whose default is not what such a run used: an older run trained 150 steps at least
    # (Recipe's default before min_steps was a search option) and in fp32
    return config_from(SearchConfig, {"min_steps": 150, "fast_cpu": "off", **saved}, error=StoreError, strict=False)


def resume_store(cfg: SearchConfig, given: set[str] | None = None) -> tuple[RunStore, SearchConfig]:
    """The stored run in cfg.out and its config with the given fields applied.

    given: the fields the user set (the CLI's flags written on the command line, not argparse's
    defaults); None: every field of cfg. A given field that differs from the stored config is applied
    if it is in RESUMABLE, or if the run never got past its start (nothing depends on the old value
    yet); otherwise the resume is refused, naming the flag and both values. The store keeps the result."""
    store = RunStore(cfg.out, create=False)
    try:
        saved = store.meta("config")
        if saved is None:
            raise SearchError(f"{cfg.out} is not a search run (no stored config)")
        old = stored_config(saved)
        started = store.started()
        names = [f.name for f in dataclasses.fields(SearchConfig)] if given is None else sorted(given)
        changes = {"out": cfg.out}
        for name in names:
            if name == "out" or not hasattr(old, name) or getattr(cfg, name) == getattr(old, name):
                continue
            if name == "fast_cpu" and cfg.fast_cpu == "auto":  # the stored run's answer to auto stands
                continue
            if started and name not in RESUMABLE:
                raise SearchError(f"{_flag(name)} {getattr(cfg, name)} differs from the stored run's "
                                  f"{getattr(old, name)}: a resumed run keeps it (resume without it, or start "
                                  f"another --out)")
            changes[name] = getattr(cfg, name)
        new = dataclasses.replace(old, **changes)
        check_config(new)
        store.set_meta("config", config_dict(new))
        return store, new
    except BaseException:
        store.close()
        raise


def check_new_out(out: Path) -> None:
    """A new run may go into a missing or empty-of-runs folder; a store that never got past its start
    (a failed start before this check existed) is replaced."""
    if out.exists() and not out.is_dir():
        raise SearchError(f"--out {out} is a file, not a folder")
    if not (out / "run.sqlite").exists():
        return
    try:
        store = RunStore(out, create=False)
    except StoreError as exc:
        raise SearchError(f"{out} holds a corrupt run store: {exc}; move it away or pick another --out") from None
    try:
        started = store.started()
    finally:
        store.close()
    if started:
        raise SearchError(f"{out} already holds a run: add --resume to continue it, or pick another --out")
    (out / "run.sqlite").unlink()


def new_store(cfg: SearchConfig) -> RunStore:
    store = RunStore(cfg.out)
    store.set_meta("config", config_dict(cfg))
    return store


def discard_unstarted(store: RunStore, made_folder: bool) -> None:
    """Remove the store of a start that failed (nothing profiled, nothing stored): the fixed command can
    use the same --out."""
    if store.started():
        return
    store.close()
    store.path.unlink(missing_ok=True)
    if made_folder:
        try:
            store.folder.rmdir()  # only if empty
        except OSError:
            pass


def validate(cfg: SearchConfig, llm_given: bool, improver_given: bool, generator_given: bool = False) -> None:
    """Cheap checks of everything a start needs, before any folder exists (errors: one line each)."""
    from finetune.llm import check_backend
    from search.strategies import STRATEGIES, check_pool_from

    if cfg.strategy not in STRATEGIES:  # flags first: a typo is named before any data or table is looked for
        raise SearchError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}")
    if cfg.pool_from is not None:
        check_pool_from(cfg.pool_from)
    input_spec(cfg.dataset)
    from corpus.evaluators import validate_evaluator

    try:
        validate_evaluator(cfg.evaluator_spec, **evaluator_options(cfg))
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    if cfg.latency_device == "cuda" and cfg.needs_precheck:
        import torch

        if not torch.cuda.is_available():
            raise SearchError("--latency-device cuda, but CUDA is not available here")
    if cfg.uses_llm and not llm_given:
        check_backend(cfg.llm, cfg.adapter, cfg.llm_url, cfg.llm_backend)
    if cfg.generates and not generator_given:  # a scored pool's generator
        check_backend(cfg.llm, cfg.adapter, cfg.llm_url, cfg.llm_backend)
    if cfg.scorer and not llm_given:  # a scoring strategy's model (tests give a double as `llm`)
        check_backend(cfg.scorer, cfg.scorer_adapter, cfg.scorer_url, cfg.llm_backend)
    if cfg.uses_llm and cfg.improver_llm != "rule" and not improver_given and \
            (cfg.improver_llm or cfg.improver_adapter or cfg.improver_url):
        check_backend(cfg.improver_llm or cfg.llm, cfg.improver_adapter, cfg.improver_url or cfg.llm_url,
                      cfg.llm_backend)


def seed_variant_edges(cfg: SearchConfig, seed_code: str, spec: dict, pool, precheck, width_choices=None) -> list[float]:
    """Bin edges: quantiles of cfg.partition_metric over the seed and cfg.bin_samples random width
    variants of it (width factors 0.5-1.5, the random proposer's range), measured by the pre-check."""
    import random

    from mutator.calls import analyze, realize
    from mutator.generate import GenerateConfig, sample_widths
    from search.pareto import quantile_edges

    a = analyze(pool, seed_code, spec)
    if not a.ok or not a.groups:
        raise SearchError(f"cannot partition the seed's space ({a.error or 'no widths found'}); pass --bin-edges")
    rng = random.Random(cfg.rng_seed)
    gcfg = GenerateConfig(min_factor=0.5, max_factor=1.5,
                          width_choices=tuple(map(tuple, width_choices)) if width_choices else None)
    widths = [sample_widths(rng, a.groups, gcfg) for _ in range(cfg.bin_samples)]
    sources = [seed_code] + [v.source for v in realize(pool, seed_code, spec, a, widths) if v.ok]
    values = [precheck(src).get(cfg.partition_metric) for src in sources]
    edges = quantile_edges(values, cfg.bins)
    if len(set(edges)) < len(edges):
        raise SearchError(f"the seed's variants do not spread over {cfg.bins} bins of {cfg.partition_metric}; "
                          "pass --bin-edges or fewer --bins")
    return edges


def evaluator_options(cfg: SearchConfig) -> dict:
    """What a run tells its evaluator (`corpus.evaluators.make_evaluator`): each kind takes what it needs."""
    return {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "device": cfg.device,
            "latency_device": cfg.latency_device, "limits": limits(cfg), "timeout_s": cfg.timeout_s,
            "class_name": cfg.class_name, "benchmark_file": cfg.benchmark_file, "noise_seed": cfg.rng_seed if cfg.table_noise else None,
            "latency_table": cfg.latency_table, "latency_column": cfg.latency_column, "proxy_seeds": cfg.proxy_seeds}


def make_run_evaluator(cfg: SearchConfig):
    """The run's evaluator (`--evaluator`, through the registry); one that trains gets the proxy recipe."""
    from corpus.errors import CorpusError, TableError
    from corpus.evaluators import make_evaluator

    spec, options = cfg.evaluator_spec, evaluator_options(cfg)
    try:
        if spec.trains:
            from corpus.evaluator import fast_cpu, recipe_for

            options["recipe"] = recipe_for(cfg.dataset, cfg.epochs, cfg.batch_size, cfg.train_limit, cfg.rng_seed,
                                           min_steps=cfg.min_steps, **fast_cpu(cfg.fast_cpu))
        return make_evaluator(spec, **options)
    except (CorpusError, TableError) as exc:
        raise SearchError(str(exc)) from None


def pre_checker(cfg: SearchConfig, spec: dict, ev, closers: list):
    """Measurements without training (screening, bin edges, a table's networks), on --latency-device."""
    # latency only where something reads it: a latency budget, latency bins, a Pareto front over latency
    timed = cfg.max_latency_ms is not None or (cfg.bins >= 2 and cfg.partition_metric == "latency_ms") or \
        (cfg.objective == "pareto" and cfg.hw_metric == "latency_ms")
    zero_cost = cfg.screen == "zero-cost"
    if ev is not None and ev.trains:  # its own pipeline, without training
        return lambda code: ev.check(code, zero_cost=zero_cost, latency=timed, seed=cfg.rng_seed)
    from corpus.evaluator import Checker

    def make_checker():
        return Checker(spec, cfg.latency_device, zero_cost=zero_cost, latency=timed and not cfg.latency_table,
                       seed=cfg.rng_seed)

    if ev is None or not ev.lookup_only:
        checker = make_checker()
        closers.append(checker.close)
        return checker.check
    lazy = []  # a table's networks are built only where a zero-cost proxy or a measured latency is asked for

    def checker_check(code: str) -> dict:
        if not lazy:
            lazy.append(make_checker())
            closers.append(lazy[0].close)
        return lazy[0].check(code)

    def looked_up(code: str) -> dict:
        """A benchmark's network: FLOPs and params as the table counts them (its FLOPs are not the
        profiler's count at this input size: a --max-flops budget means the table's number), latency
        from the table measured on the target device, not here. A table network needs no build here
        unless a zero-cost proxy or a measured latency is asked for: the table has the rest."""
        if not zero_cost and not (timed and not cfg.latency_table):
            row = ev.evaluate(code)
            if row.get("status") == "ok":
                return {"status": "ok", "error": None, "flops": row["flops"], "params": row["params"],
                        **({"latency_ms": row.get("latency_ms"), "latency_device": row.get("latency_device")}
                           if cfg.latency_table else {})}
        pre = checker_check(code)
        if pre.get("status") == "ok":
            row = ev.evaluate(code)  # memoised: the candidate's evaluation does not build it again
            if row.get("status") == "ok":
                pre["flops"], pre["params"] = row["flops"], row["params"]
            if cfg.latency_table:
                pre["latency_ms"], pre["latency_device"] = ev.lookup_latency(code), ev.latency_device
        return pre

    return looked_up


def constrained_requests(cfg: SearchConfig, llm):
    """The grammar fields' source for the Code Generator (None for a format without a grammar or
    --constrain off). The backend says which server kind it speaks (an in-process model takes GBNF
    through xgrammar, `llm.server_kind`); a server is detected unless --server-kind names it."""
    from search.constrain import ConstrainedRequests, ConstrainError

    from finetune.formats import get_format

    if not get_format(cfg.answer_format).constrainable or cfg.constrain == "off" or cfg.server_kind == "none":
        return None
    kind = None if cfg.server_kind == "auto" else cfg.server_kind
    if kind is None and not cfg.llm_url:
        kind = getattr(llm, "server_kind", None)
    try:
        return ConstrainedRequests(cfg.llm_url, cfg.constrain, kind)
    except ConstrainError as exc:
        raise SearchError(str(exc)) from None


def run(cfg: SearchConfig, resume: bool = False, llm=None, improver_llm=None, evaluate=None,
        progress: bool = True, precheck=None, given: set[str] | None = None, generator_llm=None) -> dict:
    """precheck: a function source -> pre-check row (tests pass a fake); built here when needed.
    generator_llm: the model of a scored pool's generator (`--scorer-generate`; tests pass a double).
    given: on resume, the config fields the user set (see `resume_store`; None: all of cfg).

    Everything a start needs is checked and built before the run folder is created; a start that
    fails before the seed network is profiled removes the store it created, so the fixed command can
    use the same --out."""
    from corpus.build import versions
    from mutator.generate import resolve_seed
    from finetune.formats import get_format
    from finetune.llm import make_llm
    from search.roles import PromptImprover

    check_config(cfg)
    store, created = None, False
    if resume:
        store, cfg = resume_store(cfg, given)
    else:
        check_new_out(Path(cfg.out))
    if cfg.fast_cpu == "auto":  # the answer is stored with the run: a resume on another CPU trains as it did
        from corpus.evaluator import resolve_fast_cpu

        cfg = dataclasses.replace(cfg, fast_cpu=resolve_fast_cpu(cfg.fast_cpu))
    made_folder = not Path(cfg.out).exists()
    closers = []
    try:
        validate(cfg, llm is not None, improver_llm is not None, generator_llm is not None)
        table_space = cfg.evaluator_spec.table_space
        seed_code = store.meta("seed_code") if store else None
        if seed_code is None:
            seed_name = cfg.seed
            if table_space and cfg.seed == SearchConfig().seed:
                from corpus.table import SPACES

                seed_name = SPACES.get(table_space, {}).get("seed", cfg.seed)
            _, seed_code = resolve_seed(seed_name)
        spec = input_spec(cfg.dataset, cfg.class_name)
        width_choices, ev, evaluate_seed = None, None, None
        if evaluate is None:  # e.g. one sandboxed request per candidate: measured, checked, trained
            evaluate = ev = make_run_evaluator(cfg)  # the loop hands it each Candidate
            closers.append(ev.close)
            if ev.trains:  # the seed is trained whatever the limits
                evaluate_seed = lambda code: ev.evaluate(code, limits={})  # noqa: E731
            if ev.table_space:
                from corpus.spaces import SPACES, SPEC

                spec, width_choices = dict(SPEC), SPACES[ev.table_space]["choices"]
        lookup = ev is not None and ev.lookup_only  # nothing measured: a table cannot time a network
        stored_edges = store.meta("bin_edges") if store else None
        need_edges = cfg.bins >= 2 and stored_edges is None and not cfg.bin_edges
        from mutator.sandbox import LazyPool

        pool = LazyPool(300)  # the mutator's sandbox: random variants, bin edges, widths answers, repair
        closers.append(pool.close)
        measure = precheck
        if precheck is None and (cfg.screen != "none" or need_edges or (lookup and cfg.needs_precheck)):
            measure = pre_checker(cfg, spec, ev, closers)
            # screening votes on pre-checks; a table cannot time a network, so it is pre-checked too
            precheck = measure if cfg.screen != "none" or lookup else None
        edges = stored_edges
        if edges is None and cfg.bins >= 2:
            edges = sorted(cfg.bin_edges) if cfg.bin_edges else \
                seed_variant_edges(cfg, seed_code, spec, pool, measure, width_choices)
            if len(edges) != cfg.bins - 1:
                raise SearchError(f"--bins {cfg.bins} needs {cfg.bins - 1} --bin-edges, not {len(edges)}")
        from search.strategies import StrategyContext, make_strategy

        from search.strategies.traits import reads_costs

        if not cfg.uses_llm and measure is None and (any(v is not None for v in limits(cfg).values())
                                                     or reads_costs(cfg.strategy)):
            measure = pre_checker(cfg, spec, ev, closers)  # the strategy's in-limits filter, or the costs it reads
        ctx = StrategyContext(cfg, seed_code, spec, pool, ev if ev is not None and ev.table_space else None, measure)
        server = {"timeout_s": cfg.llm_timeout_s, "retries": cfg.llm_retries, "backoff_s": cfg.llm_backoff_s,
                  "backend": cfg.llm_backend}
        if not cfg.uses_llm:
            ctx.llm = llm  # a scoring strategy's model when the caller gives one (else it builds it from --scorer)
            if cfg.generates:  # its pool's generator: the Code Generator's model (--llm, --adapter, --llm-url)
                ctx.generator_llm = generator_llm or make_llm(cfg.llm, cfg.adapter, cfg.llm_url, **server)
                ctx.constrain = constrained_requests(cfg, ctx.generator_llm)
            proposer, improver = make_strategy(ctx), PromptImprover(None)
        else:
            ctx.llm = llm = llm or make_llm(cfg.llm, cfg.adapter, cfg.llm_url, **server)
            ctx.constrain = constrained_requests(cfg, llm)
            proposer = make_strategy(ctx)
            if cfg.improver_llm == "rule":
                improver = PromptImprover(None)
            elif improver_llm is not None or cfg.improver_llm or cfg.improver_adapter or cfg.improver_url:
                improver = PromptImprover(improver_llm or make_llm(cfg.improver_llm or cfg.llm, cfg.improver_adapter,
                                                                   cfg.improver_url or cfg.llm_url, **server),
                                          shot=cfg.improver_example)
            else:
                improver = PromptImprover(llm, shot=cfg.improver_example)
        if store is None:
            store, created = new_store(cfg), True
        if edges is not None and stored_edges is None:
            store.set_meta("bin_edges", edges)
        if not store.started():
            store.set_meta("versions", versions())
        fix = None
        if cfg.repair and cfg.uses_llm and get_format(cfg.answer_format).repairable:
            from mutator.repair import repair

            fix = lambda code, parent: repair(code, spec, pool, parent=parent)  # noqa: E731
        return run_loop(cfg, seed_code, proposer, improver, evaluate, store, progress, precheck, edges, evaluate_seed,
                        fix)
    except BaseException:
        if created:
            discard_unstarted(store, made_folder)
        raise
    finally:
        for close in closers:
            close()
        if store is not None:
            store.close()


def load_extras(folder: str) -> dict:
    """The multi-objective parts of a stored run: bin edges, knowledge-base versions, screened proposals."""
    store = RunStore(folder, create=False)
    try:
        return {"bin_edges": store.meta("bin_edges"), "kb": store.kb_versions(), "screened": store.screened()}
    finally:
        store.close()


def load_run(folder: str) -> tuple[SearchConfig, list[dict], dict]:
    store = RunStore(folder, create=False)
    try:
        saved = store.meta("config")
        if saved is None:
            raise SearchError(f"{folder} is not a search run (no stored config)")
        return stored_config(saved), store.iterations(), store.meta("seed_row") or {}
    finally:
        store.close()
