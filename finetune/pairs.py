"""Training pairs from a corpus: (network, goal) -> a variant of the same seed that met that goal.

    python -m finetune dataset --corpus corpus_fm --out pairs_fm --pairs-per-parent 4 --eval-fraction 0.1

Two ok rows with the same `parent` seed make a pair in both directions: either one can be the
network in the prompt (the *source*), the other is the answer (the *target*). A pair's goal is
derived from what the target actually measured against the source, so every answer in the data set
is true (`finetune.prompts.goal_met(goal, source, target)` holds for every pair):

- target more accurate -> `raise_accuracy`, or `accuracy_under_flops` with the target's FLOPs
  rounded UP to two significant digits as the budget;
- target FLOPs / latency at most (1 - f) x the source's, f = the achieved cut rounded DOWN to a
  multiple of 5% (at least 5%) -> `cut_flops` / `cut_latency` with `max_acc_drop` = the accuracy
  actually lost rounded UP to a multiple of 0.5 points (0 when none was lost).

Of the goals a pair meets, one is drawn at random; at most `pairs_per_parent` targets are drawn per
source network. Everything is drawn from one `random.Random(seed)`: the same corpus and flags give
the same pairs. The eval split holds out whole source networks (`eval_fraction` of them, at least
one): no eval prompt shows a network that any training prompt shows. Eval *targets* may appear in
training; they are answers there, never prompts.

The output is a `datasets.DatasetDict` (train / eval) with columns `messages` (system, user,
assistant), `goal` (JSON), `source_id`, `target_id`, `seed`; plus `finetune_dataset.json` with the
config, the corpus fingerprint and the counts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path


class FinetuneError(Exception):
    """Bad input: the CLI prints the message on one line and exits with code 2."""


@dataclass(frozen=True)
class DatasetConfig:
    corpus: str
    out: str = ""
    pairs_per_parent: int = 4
    eval_fraction: float = 0.1
    seed: int = 0


# -- goals ------------------------------------------------------------------------------------------

def _round_up_2sig(x: float) -> int:
    """Smallest number with two significant digits >= x: 287_456 -> 290_000, 1_234 -> 1_300."""
    if x <= 0:
        return 0
    step = 10 ** max(0, math.floor(math.log10(x)) - 1)
    return int(math.ceil(x / step - 1e-9) * step)


def _cut_fraction(before: float, after: float) -> float | None:
    """Achieved cut rounded DOWN to a multiple of 5%, or None below 5%."""
    if not before or after is None or before <= 0:
        return None
    f = math.floor((1 - after / before) * 20 + 1e-9) / 20
    return round(f, 2) if f >= 0.05 else None


def _drop_bound(acc_before: float, acc_after: float) -> float:
    """Accuracy actually lost, rounded UP to a multiple of half a point; 0 when nothing was lost."""
    drop = acc_before - acc_after
    return 0.0 if drop <= 0 else round(math.ceil(drop * 200 - 1e-9) / 200, 3)


def goals_for(source: dict, target: dict) -> list[dict]:
    """Every goal that `target` meets relative to `source`, each stated with bounds it satisfies."""
    goals = []
    a0, a1 = source["accuracy"], target["accuracy"]
    if a1 > a0:
        goals.append({"kind": "raise_accuracy"})
        if target.get("flops"):
            goals.append({"kind": "accuracy_under_flops", "max_flops": _round_up_2sig(target["flops"])})
    for kind, key in (("cut_flops", "flops"), ("cut_latency", "latency_ms")):
        f = _cut_fraction(source.get(key), target.get(key))
        if f is not None:
            goals.append({"kind": kind, "fraction": f, "max_acc_drop": _drop_bound(a0, a1)})
    return goals


# -- corpus -> pairs --------------------------------------------------------------------------------

def load_rows(folder: str) -> list[dict]:
    """All rows of a corpus folder written by `python -m corpus build`."""
    import datasets

    p = Path(folder)
    if not p.is_dir():
        raise FinetuneError(f"no such corpus folder: {folder}")
    try:  # datasets cannot load a dataset saved with no rows (no data files): say so
        if json.loads((p / "state.json").read_text()).get("_data_files") == []:
            raise FinetuneError(f"corpus {folder} is empty")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:  # missing or damaged arrow/state files
        raise FinetuneError(f"{folder} is not a readable corpus ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(ds, datasets.Dataset) or not {"status", "code", "parent"} <= set(ds.column_names):
        raise FinetuneError(f"{folder} is not a nasforge corpus (needs columns id, parent, code, status)")
    if len(ds) == 0:
        raise FinetuneError(f"corpus {folder} is empty")
    return ds.to_list()


def corpus_fingerprint(rows: list[dict]) -> str:
    """SHA-256 over the rows' `sha256` values, sorted (row order does not matter)."""
    return hashlib.sha256("\n".join(sorted(r.get("sha256") or "" for r in rows)).encode()).hexdigest()


def usable(row: dict) -> bool:
    """An ok row with code, accuracy and FLOPs. Latency may be missing (tables do not measure it): such
    rows simply get no latency goals."""
    return (row.get("status") == "ok" and row.get("accuracy") is not None and bool(row.get("code"))
            and row.get("flops") is not None)


def make_pairs(rows: list[dict], pairs_per_parent: int, seed: int) -> list[dict]:
    """[{source_id, target_id, goal}]: at most `pairs_per_parent` targets per source, goals true."""
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    for r in sorted((r for r in rows if usable(r)), key=lambda r: r["id"]):
        groups.setdefault(r.get("parent") or "", []).append(r)
    pairs = []
    for seed_name in sorted(groups):
        group = groups[seed_name]
        for src in group:
            targets = [t for t in group if t["id"] != src["id"] and t.get("sha256") != src.get("sha256")]
            rng.shuffle(targets)
            n = 0
            for tgt in targets:
                if n >= pairs_per_parent:
                    break
                goals = goals_for(src, tgt)
                if goals:
                    pairs.append({"source_id": src["id"], "target_id": tgt["id"], "seed": seed_name,
                                  "goal": rng.choice(goals)})
                    n += 1
    return pairs


def split_by_source(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): eval holds every pair of a random `eval_fraction` of the source networks."""
    sources = sorted({p["source_id"] for p in pairs})
    n_eval = 0
    if eval_fraction > 0 and len(sources) >= 2:
        n_eval = min(len(sources) - 1, max(1, round(eval_fraction * len(sources))))
    held = set(random.Random(f"split-{seed}").sample(sources, n_eval))
    return ([p for p in pairs if p["source_id"] not in held], [p for p in pairs if p["source_id"] in held])


def records(pairs: list[dict], by_id: dict[str, dict]) -> dict[str, list]:
    from finetune.prompts import answer_message, build_messages

    cols = {"messages": [], "goal": [], "source_id": [], "target_id": [], "seed": []}
    for p in pairs:
        src, tgt = by_id[p["source_id"]], by_id[p["target_id"]]
        cols["messages"].append(build_messages(src["code"], src, p["goal"]) + [answer_message(tgt["code"])])
        cols["goal"].append(json.dumps(p["goal"], sort_keys=True))
        cols["source_id"].append(p["source_id"])
        cols["target_id"].append(p["target_id"])
        cols["seed"].append(p["seed"])
    return cols


def build_pairs(cfg: DatasetConfig):
    """(DatasetDict with train/eval, info dict) for a corpus; raises FinetuneError on bad input."""
    import datasets

    if cfg.pairs_per_parent < 1:
        raise FinetuneError("--pairs-per-parent must be at least 1")
    if not 0 <= cfg.eval_fraction < 1:
        raise FinetuneError("--eval-fraction must be in [0, 1)")
    rows = load_rows(cfg.corpus)
    ok = [r for r in rows if usable(r)]
    if not ok:
        raise FinetuneError(f"corpus {cfg.corpus} has no ok rows ({len(rows)} rows, all failed)")
    pairs = make_pairs(rows, cfg.pairs_per_parent, cfg.seed)
    if not pairs:
        raise FinetuneError(f"corpus {cfg.corpus} has no ok pairs: {len(ok)} ok rows, but no two distinct "
                            "variants of the same seed with a measurable difference")
    train, held = split_by_source(pairs, cfg.eval_fraction, cfg.seed)
    by_id = {r["id"]: r for r in ok}
    features = datasets.Features({
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        **{c: datasets.Value("string") for c in ("goal", "source_id", "target_id", "seed")}})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(records(train, by_id), features=features),
        "eval": datasets.Dataset.from_dict(records(held, by_id), features=features)})
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p["goal"]["kind"]] = kinds.get(p["goal"]["kind"], 0) + 1
    info = {"config": dataclasses.asdict(cfg), "corpus": str(Path(cfg.corpus).resolve()),
            "corpus_fingerprint": corpus_fingerprint(rows), "corpus_rows": len(rows), "ok_rows": len(ok),
            "train": len(train), "eval": len(held), "goal_kinds": kinds,
            "eval_sources": sorted({p["source_id"] for p in held})}
    return dd, info


def main_dataset(cfg: DatasetConfig) -> int:
    import sys

    import datasets

    print(f"config: {cfg}", file=sys.stderr)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} exists and is not a folder")
    dd, info = build_pairs(cfg)
    datasets.disable_progress_bars()
    dd.save_to_disk(str(out))
    (out / "finetune_dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(info["goal_kinds"].items()))
    print(f"wrote {info['train']} train and {info['eval']} eval pairs ({kinds}) from {info['ok_rows']} ok rows "
          f"of {cfg.corpus} to {out}; eval holds out {len(info['eval_sources'])} source networks")
    return 0
