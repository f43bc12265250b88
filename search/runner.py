"""Wire a search from its config: roles are built here and passed into `run_loop`.

Tests pass their own `llm` / `evaluate` (scripted test doubles); the CLI builds the real ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from search.loop import SearchConfig, SearchError, check_config, config_dict, run_loop
from search.store import RunStore


def input_spec(dataset: str) -> dict:
    from corpus.data import DataError, info

    try:
        d = info(dataset)
    except DataError as exc:
        raise SearchError(str(exc)) from None
    return {"in_shape": [1, d["channels"], *d["size"]], "classes": d["classes"], "class_name": None}


def open_store(cfg: SearchConfig, resume: bool) -> tuple[RunStore, SearchConfig]:
    out = Path(cfg.out)
    if resume:
        store = RunStore(out, create=False)
        saved = store.meta("config")
        if saved is None:
            raise SearchError(f"{out} is not a search run (no stored config)")
        saved["iterations"] = max(saved["iterations"], cfg.iterations) if cfg.iterations != SearchConfig().iterations \
            else saved["iterations"]
        return store, SearchConfig(**saved)
    if (out / "run.sqlite").exists():
        raise SearchError(f"{out} already holds a run: add --resume to continue it, or pick another --out")
    store = RunStore(out)
    store.set_meta("config", config_dict(cfg))
    return store, cfg


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


def _with_table_latency(check, ev):
    def checked(code: str) -> dict:
        pre = check(code)
        if pre.get("status") == "ok":
            pre["latency_ms"], pre["latency_device"] = ev.lookup_latency(code), ev.latency_device
        return pre

    return checked


def run(cfg: SearchConfig, resume: bool = False, llm=None, improver_llm=None, evaluate=None,
        progress: bool = True, precheck=None) -> dict:
    """precheck: a function source -> pre-check row (tests pass a fake); built here when needed."""
    from corpus.build import BuildConfig, Profiler, versions
    from mutator.generate import resolve_seed
    from search.llm import make_llm
    from search.roles import CodeGenerator, PromptImprover, RandomProposer

    check_config(cfg)
    store, cfg = open_store(cfg, resume)
    closers = []
    try:
        table_space = cfg.evaluator.split(":", 1)[1] if cfg.evaluator.startswith("table:") else None
        if cfg.evaluator != "profile" and table_space is None:
            raise SearchError(f"--evaluator must be profile or table:SPACE, not {cfg.evaluator!r}")
        seed_name = cfg.seed
        if table_space and cfg.seed == SearchConfig().seed:
            from corpus.table import SPACES

            seed_name = SPACES.get(table_space, {}).get("seed", cfg.seed)
        _, seed_code = resolve_seed(seed_name)
        seed_code = store.meta("seed_code", seed_code)
        spec = input_spec(cfg.dataset)
        width_choices, ev = None, None
        if evaluate is None and table_space:
            from corpus.table import SPACES, TableError, TableEvaluator

            try:
                ev = TableEvaluator(table_space, cfg.benchmark_file, cfg.rng_seed if cfg.table_noise else None,
                                    latency_table=cfg.latency_table, latency_column=cfg.latency_column)
            except TableError as exc:
                raise SearchError(str(exc)) from None
            closers.append(ev.close)
            evaluate = ev.evaluate
            spec = {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": None}
            width_choices = SPACES[table_space]["choices"]
        if evaluate is None:
            prof = Profiler(BuildConfig(variants="", dataset=cfg.dataset, out="", epochs=cfg.epochs,
                                        batch_size=cfg.batch_size, train_limit=cfg.train_limit,
                                        device=cfg.device, timeout_s=cfg.timeout_s, data_dir=cfg.data_dir,
                                        seed=cfg.rng_seed))
            closers.append(prof.close)
            evaluate = prof.profile
        pool = None
        if cfg.llm == "random" or (cfg.bins >= 2 and store.meta("bin_edges") is None and not cfg.bin_edges):
            from mutator.sandbox import WorkerPool

            pool = WorkerPool(1, timeout_s=300)
            closers.append(pool.close)
        if precheck is None and cfg.needs_precheck:
            if cfg.latency_device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    raise SearchError("--latency-device cuda, but CUDA is not available here")
            from search.precheck import PreChecker

            timed = "latency_ms" in (cfg.hw_metric, cfg.partition_metric) or cfg.max_latency_ms is not None
            pc = PreChecker(spec, cfg.latency_device, zero_cost=cfg.screen == "zero-cost", seed=cfg.rng_seed,
                            latency=timed and not cfg.latency_table)
            closers.append(pc.close)
            precheck = pc.check
            if cfg.latency_table and ev is not None:  # looked up, not measured here
                precheck = _with_table_latency(pc.check, ev)
        edges = store.meta("bin_edges")
        if edges is None and cfg.bins >= 2:
            edges = sorted(cfg.bin_edges) if cfg.bin_edges else \
                seed_variant_edges(cfg, seed_code, spec, pool, precheck, width_choices)
            if len(edges) != cfg.bins - 1:
                raise SearchError(f"--bins {cfg.bins} needs {cfg.bins - 1} --bin-edges, not {len(edges)}")
            store.set_meta("bin_edges", edges)
        if cfg.llm == "random":
            proposer = RandomProposer(spec, pool, cfg.rng_seed, width_choices)
            improver = PromptImprover(None)
        else:
            llm = llm or make_llm(cfg.llm, cfg.adapter, cfg.llm_url)
            proposer = CodeGenerator(llm, cfg.temperature, cfg.max_new_tokens)
            if cfg.improver_llm == "rule":
                improver = PromptImprover(None)
            elif improver_llm is not None or cfg.improver_llm or cfg.improver_adapter or cfg.improver_url:
                improver = PromptImprover(improver_llm or make_llm(cfg.improver_llm or cfg.llm, cfg.improver_adapter,
                                                                   cfg.improver_url or cfg.llm_url),
                                          shot=cfg.improver_example)
            else:
                improver = PromptImprover(llm, shot=cfg.improver_example)
        if not resume:
            store.set_meta("versions", versions())
        return run_loop(cfg, seed_code, proposer, improver, evaluate, store, progress, precheck, edges)
    finally:
        for close in closers:
            close()
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
        fields = {f.name for f in dataclasses.fields(SearchConfig)}
        cfg = SearchConfig(**{k: v for k, v in saved.items() if k in fields})
        return cfg, store.iterations(), store.meta("seed_row") or {}
    finally:
        store.close()
