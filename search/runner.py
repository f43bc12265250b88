"""Wire a search from its config: roles are built here and passed into `run_loop`.

Tests pass their own `llm` / `evaluate` (scripted test doubles); the CLI builds the real ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from search.loop import SearchConfig, SearchError, config_dict, run_loop
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


def run(cfg: SearchConfig, resume: bool = False, llm=None, improver_llm=None, evaluate=None,
        progress: bool = True) -> dict:
    from corpus.build import BuildConfig, Profiler, versions
    from mutator.generate import resolve_seed
    from search.llm import make_llm
    from search.roles import CodeGenerator, PromptImprover, RandomProposer

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
        width_choices = None
        if evaluate is None and table_space:
            from corpus.table import SPACES, TableError, TableEvaluator

            try:
                ev = TableEvaluator(table_space, cfg.benchmark_file, cfg.rng_seed if cfg.table_noise else None)
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
        if cfg.llm == "random":
            from mutator.sandbox import WorkerPool

            pool = WorkerPool(1, timeout_s=300)
            closers.append(pool.close)
            proposer = RandomProposer(spec, pool, cfg.rng_seed, width_choices)
            improver = PromptImprover(None)
        else:
            llm = llm or make_llm(cfg.llm, cfg.adapter, cfg.llm_url)
            proposer = CodeGenerator(llm, cfg.temperature, cfg.max_new_tokens)
            if cfg.improver_llm == "rule":
                improver = PromptImprover(None)
            elif improver_llm is not None or cfg.improver_llm or cfg.improver_adapter:
                improver = PromptImprover(improver_llm or make_llm(cfg.improver_llm or cfg.llm, cfg.improver_adapter,
                                                                   cfg.llm_url))
            else:
                improver = PromptImprover(llm)
        if not resume:
            store.set_meta("versions", versions())
        return run_loop(cfg, seed_code, proposer, improver, evaluate, store, progress)
    finally:
        for close in closers:
            close()
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
