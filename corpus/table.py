"""Table evaluator: Channel-Bench-Macro lookups instead of training (`--evaluator table:SPACE`).

    ev = TableEvaluator("cbm-mobilenet")           # or path=... (--benchmark-file); `table:SPACE` in corpus.evaluators
    row = ev.evaluate(Candidate(code=source))      # a corpus-style row, from the published table

Channel-Bench-Macro (Su et al., ICLR 2021; as distributed with GENIUS, Zheng et al. 2023) lists
every channel configuration of two CIFAR-10 macro networks (4 choices for each of 7 widths, 16,384
each) with three seeds' test accuracies, FLOPs and params. A candidate's seven widths are found by
building it (the mutator's width analysis, sandboxed), or given by whoever realised it (a
`corpus.candidate.Candidate` with `widths` and `params`, or `remember`: the mutator's own build of a
widths answer or a strategy's choice, 0 builds per lookup); it must have exactly the space's seven widths,
each one of the allowed values, and the parameter count of the table's network for that key (so a
candidate with a different structure is refused); otherwise the row is a failure saying exactly why.
FLOPs are the table's (conv + linear multiply-adds at 16x16, see the data README); latency is None,
or the value of a per-device latency table (`latency_table=`, see `corpus.latency_table`).

Files: `--benchmark-file PATH`, else `$NASFORGE_CBM_DIR/<space>.json`, else the copy beside the
repository (`../shared/data/channel-bench-macro/`). The tables are published in the GitHub
repository mingkai-zheng/GENIUS (`benchmark/Results_ResNet.json`, `benchmark/Results_MobileNet.json`).
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

from corpus.candidate import Candidate, as_candidate
from corpus.errors import TableError  # noqa: F401  (callers import it from here too)
from corpus.spaces import SPACES, SPEC, key_of, widths_of  # noqa: F401
from mutator.calls import analyze, realize_payload, variants_of

def table_path(space: str, path: str | None = None) -> Path:
    if space not in SPACES:
        raise TableError(f"unknown benchmark space {space!r} (known: {', '.join(SPACES)})")
    if path:
        p = Path(path)
    elif os.environ.get("NASFORGE_CBM_DIR"):
        p = Path(os.environ["NASFORGE_CBM_DIR"]) / SPACES[space]["file"]
    else:
        p = Path(__file__).resolve().parents[2] / "shared" / "data" / "channel-bench-macro" / SPACES[space]["file"]
    if not p.is_file():
        raise TableError(f"no Channel-Bench-Macro table at {p}: pass --benchmark-file PATH "
                         f"(GENIUS repository, benchmark/Results_*.json)")
    return p

TABLE_SOURCE = "Channel-Bench-Macro table (CIFAR-10, 3 seeds, mean accuracy)"  # a table row's recipe source


@lru_cache(maxsize=4)
def load_table(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TableError(f"{path} is not a readable benchmark table ({exc})") from None
    if not isinstance(data, dict) or not data or "mean" not in next(iter(data.values())):
        raise TableError(f"{path} is not a Channel-Bench-Macro table (entries need 'mean')")
    return data


def check_widths(widths: list[int], space: str) -> str | None:
    """Why `widths` is outside the space, or None."""
    choices = SPACES[space]["choices"]
    if len(widths) != len(choices):
        return f"found {len(widths)} widths {widths}, the {space} space has {len(choices)}"
    for i, (w, c) in enumerate(zip(widths, choices)):
        if w not in c:
            return f"layer {i} width {w} is not one of {'/'.join(map(str, c))}"
    return None


def ranks(table: dict) -> dict[str, int]:
    """Rank of each key by mean accuracy (1 = best; ties share the best rank)."""
    order = sorted(table, key=lambda k: -table[k]["mean"])
    out, prev, r = {}, None, 0
    for i, k in enumerate(order, 1):
        if table[k]["mean"] != prev:
            r, prev = i, table[k]["mean"]
        out[k] = r
    return out


def expected_best_rank(m: int, n: int) -> float:
    """Expected rank of the best of n configurations drawn uniformly without replacement from m:
    E = sum_{r=1..m} P(best rank >= r) = sum_r C(m-r+1, n) / C(m, n)."""
    if n <= 0:
        return float("nan")
    total, log_cmn = 0.0, math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)
    for r in range(1, m - n + 2):
        k = m - r + 1
        total += math.exp(math.lgamma(k + 1) - math.lgamma(n + 1) - math.lgamma(k - n + 1) - log_cmn)
    return total


class TableEvaluator:
    """`evaluate(candidate) -> row` from the table; `noise_seed` picks one training seed's accuracy.
    The `table` kind of `corpus.evaluators`: `--evaluator table:SPACE`."""

    trains, lookup_only, spaced, table = False, True, True, True

    @classmethod
    def from_spec(cls, spec, benchmark_file: str | None = None, noise_seed: int | None = None,
                  latency_table: str | None = None, latency_column: str | None = None, **_):
        return cls(spec.space, benchmark_file, noise_seed, latency_table=latency_table,
                   latency_column=latency_column)

    @classmethod
    def validate(cls, spec, benchmark_file: str | None = None, latency_table: str | None = None,
                 latency_column: str | None = None, **_) -> None:
        try:
            load_table(str(table_path(spec.space, benchmark_file)))
            if latency_table:
                from corpus.latency_table import load as load_latency

                load_latency(latency_table, latency_column)
        except TableError as exc:
            raise ValueError(str(exc)) from None

    @property
    def table_space(self) -> str:
        return self.space

    def __init__(self, space: str, path: str | None = None, noise_seed: int | None = None, pool=None,
                 latency_table: str | None = None, latency_column: str | None = None):
        """latency_table: a per-device latency file (`corpus.latency_table`) looked up for latency_ms."""
        self.space = space
        self.latency, self.latency_device, self.latency_file = None, None, latency_table
        if latency_table:
            from corpus.latency_table import load as load_latency

            self.latency, self.latency_device = load_latency(latency_table, latency_column)
        self.path = str(table_path(space, path))
        self.table = load_table(self.path)
        self.rank = ranks(self.table)
        self.noise_seed = noise_seed
        self._memo: dict[str, tuple] = {}
        self._own_pool = pool is None
        if pool is None:  # started on the first network it must build (a strategy's lookups build none)
            from mutator.sandbox import LazyPool

            pool = LazyPool(120)
        self.pool = pool

    def widths(self, code: str) -> tuple[list[int] | None, str | None, int | None]:
        if code in self._memo:  # the pre-check's latency lookup, then evaluate: one analysis per candidate
            return self._memo[code]
        a = analyze(self.pool, code, SPEC)
        res = (None, a.error, None) if not a.ok else (a.seed_widths, None, a.params)
        if len(self._memo) >= 16:  # an iteration's proposals at most; older ones are not asked again
            self._memo.clear()
        self._memo[code] = res
        return res

    def remember(self, code: str, widths: list[int], params: int | None) -> None:
        """The widths and parameter count of a network the mutator has just realised (and built, in the
        sandbox): its lookup then builds nothing. The parameter count is still held against the table's."""
        if params is None:
            return
        if len(self._memo) >= 16:
            self._memo.clear()
        self._memo[code] = (list(widths), None, params)

    def known(self, cand: Candidate) -> tuple[list[int] | None, str | None, int | None]:
        """A candidate's (widths, error, params): as whoever realised it knew them (no build), else built."""
        if cand.widths is not None and cand.params is not None:
            return list(cand.widths), None, cand.params
        return self.widths(cand.code)

    def evaluate(self, cand: Candidate | str) -> dict:
        cand = as_candidate(cand)
        widths, err, params = self.known(cand)
        if widths is None:
            return {"status": "build_error", "error": err}
        why = check_widths(widths, self.space)
        if why:
            return {"status": "out_of_space", "error": why, "widths": widths}
        key = key_of(widths, self.space)
        entry = self.table.get(key)
        if entry is None:  # a partial table (a subset, a test's small one): the search is limited to its keys
            return {"status": "out_of_space", "widths": widths, "table_key": key,
                    "error": f"configuration {key} is not in {self.path}"}
        if params != entry["params"]:
            return {"status": "out_of_space", "widths": widths,
                    "error": f"structure differs from the {self.space} network: {params:,} parameters, "
                             f"the table's {key} has {entry['params']:,}"}
        acc = entry["mean"] if self.noise_seed is None else entry["acc"][self.noise_seed % len(entry["acc"])]
        lat = None
        if self.latency is not None:
            lat = self.latency.get(key)
            if lat is None:
                return {"status": "out_of_space", "widths": widths, "table_key": key,
                        "error": f"configuration {key} has no latency in {self.latency_file} "
                                 f"(the search is limited to the table's keys)"}
        return {"status": "ok", "error": None, "accuracy": acc / 100, "flops": entry["flops"],
                "params": entry["params"], "latency_ms": lat, "widths": widths, "table_key": key,
                "table_rank": self.rank[key], "device_name": f"table:{self.space}",
                **({"latency_device": self.latency_device} if lat is not None else {})}

    def check(self, cand: Candidate | str) -> dict:
        """The table's FLOPs and params (and latency, from a latency table) without training: its
        `evaluate` row less the accuracy and rank."""
        row = self.evaluate(cand)
        return {k: v for k, v in row.items() if k not in ("accuracy", "table_rank")}

    def lookup_latency(self, cand: Candidate | str) -> float | None:
        """The latency table's value for a candidate (None: outside the space or not in the file)."""
        if self.latency is None:
            return None
        widths, _, _ = self.known(as_candidate(cand))
        if widths is None or check_widths(widths, self.space):
            return None
        return self.latency.get(key_of(widths, self.space))

    def close(self):
        if self._own_pool:
            self.pool.close()


def from_table(space: str, out: str, sample: int = 0, seed: int = 0, path: str | None = None,
               progress: bool = True) -> dict:
    """`python -m corpus from-table`: a corpus (code + the table's metrics) of one space."""
    import dataclasses
    import hashlib
    import random
    import time

    from tqdm import tqdm

    from corpus.build import append_row, read_journal, versions, write_dataset
    from mutator import seeds
    from mutator.sandbox import WorkerPool

    @dataclasses.dataclass(frozen=True)
    class FromTableConfig:
        space: str
        out: str
        sample: int
        seed: int
        dataset: str = "cifar10"

    table = load_table(str(table_path(space, path)))
    rank = ranks(table)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    journal = dest / "rows.jsonl"
    done = {r["id"] for r in read_journal(journal)}
    source = seeds.seed_source(SPACES[space]["seed"])
    recipe = {"source": TABLE_SOURCE, "space": space}
    vers = versions()
    pool = WorkerPool(min(2, os.cpu_count() or 1), timeout_s=600)
    try:
        a = analyze(pool, source, SPEC)
        if not a.ok:
            raise TableError(f"the {space} seed cannot be analysed: {a.error}")
        keys = sorted(table)
        if 0 < sample < len(keys):
            # a sample always holds the seed's own row: it is its family's reference (finetune.score)
            seed_key = key_of(a.seed_widths, space)
            rest = [k for k in keys if k != seed_key]
            keys = sorted(([seed_key] if seed_key in table else []) +
                          random.Random(seed).sample(rest, sample - (seed_key in table)))
        todo = [k for k in keys if f"{space}-{k}" not in done]
        chunks = [todo[i:i + 16] for i in range(0, len(todo), 16)]
        payloads = [realize_payload(source, SPEC, a, [widths_of(k, space) for k in c]) for c in chunks]
        bar = tqdm(total=len(todo), desc=f"materialising {space}", unit="net", disable=not progress)
        for i, res in pool.imap("mutator.analysis:variants", payloads):
            for key, r in zip(chunks[i], variants_of(res, [widths_of(k, space) for k in chunks[i]])):
                e = table[key]
                code = r.source or ""
                row = {"id": f"{space}-{key}", "parent": SPACES[space]["seed"], "code": code,
                       "sha256": hashlib.sha256(code.encode()).hexdigest(), "widths": widths_of(key, space),
                       "status": "ok" if r.ok else "build_error", "error": r.error,
                       "accuracy": e["mean"] / 100 if r.ok else None,
                       "flops": e["flops"], "params": e["params"], "latency_ms": None,
                       "device_name": f"table:{space} (rank {rank[key]})", "dataset": "cifar10",
                       "recipe": json.dumps(recipe), "versions": json.dumps(vers),
                       "profiled_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
                append_row(journal, row)
                bar.update(1)
        bar.close()
    finally:
        pool.close()
    rows = read_journal(journal)
    write_dataset(dest, rows, FromTableConfig(space, out, sample, seed), recipe, vers)
    return {"rows": len(rows), "new": len(todo), "out": str(dest)}
