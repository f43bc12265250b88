"""Training pairs from a corpus: (network, goal) -> a variant of the same seed that met that goal.

    python -m finetune dataset --corpus corpus_fm --out pairs_fm --pairs-per-parent 4 --eval-fraction 0.1
    python -m finetune dataset --corpus corpus_lenet,corpus_vgg --out pairs_two   # several corpora

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
source network. That teaches *a* better network, not the best: `--targets best` draws `--best-of` K
variants of the source's seed per target and keeps the most accurate (rejection sampling, as in
best-of-K / RAFT fine-tuning) when it beats the source, with an accuracy goal; `--history N` then
shows up to N (a random number from 0) of the other, less accurate drawn variants as the prompt's
`Tried:` list with their outcomes (`prompts.outcome_text`, what the search's memory shows), so the
model is tuned on the situation it searches in: propose a network better than every one tried.

Everything is drawn from one `random.Random(seed)`: the same corpus and flags give the same pairs.
The eval split holds out whole source networks (`eval_fraction` of them, at least
one): no eval prompt's source is in any training prompt (as source or tried). Eval *targets* may
appear in training; they are answers there, never prompts.

Answer formats (`--answer-format`, `finetune.formats`; the prompt is `finetune.formats.prompt_messages`,
the same function the search renders its prompts with):
- `widths` (default): the prompt shows the source's width slots (its width analysis, run in the
  sandbox once per distinct source network: what each slot drives, its value, its allowed values)
  and the answer is the target's `widths` list (`[64, 128, ...]`). Allowed values are the table
  space's choices for a Channel-Bench-Macro seed, else the mutator's rule around the built-in
  seed's widths (`formats.allowed_values`), else around the source's own. With `--context summary`
  the per-layer table (`formats.summary_text`) replaces the source in the prompt.
- `diff`: the answer is SEARCH/REPLACE blocks turning the source into the target (`diff_blocks`:
  only the changed lines, with the fewest context lines that make each SEARCH text unique).
- `code`: the answer is the complete target file.
A pair that has no true answer in the chosen format is dropped and counted in `skipped` (a source
the sandbox cannot analyse, corpus widths that disagree with the analysis, a target width outside
the allowed values, a diff that does not apply back to the target).

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
from dataclasses import dataclass, field
from pathlib import Path

from finetune.formats.diff import diff_blocks  # noqa: F401  (the diff format's now; importable here as before)


class FinetuneError(Exception):
    """Bad input: the CLI prints the message on one line and exits with code 2."""


@dataclass(frozen=True)
class DatasetConfig:
    corpus: str
    out: str = ""
    pairs_per_parent: int = 4
    eval_fraction: float = 0.1
    seed: int = 0
    answer_format: str = "widths"
    context: str = "source"
    targets: str = "any"  # any: a random variant that meets a goal; best: the most accurate of best_of drawn
    best_of: int = 8
    history: int = 0  # targets best, widths: up to this many of the other drawn variants as a "Tried:" list
    class_name: str | None = None  # builds every network; None: each row's class_name column
    task: str = "improve"  # finetune.tasks: improve (these pairs), score (finetune.score) or prefer (finetune.prefer)
    sample: int = 0  # score task: a random subset of this many labelled rows (0: all); prefer: at most this many pairs
    reuse: bool = False  # OUT already holds these data (same settings, same corpus rows): kept, not rebuilt


TARGETS = ("any", "best")
ACCURACY_GOALS = ("raise_accuracy", "accuracy_under_flops")


def check_recipe(cfg: DatasetConfig) -> None:
    """FinetuneError for impossible --targets / --best-of / --history values."""
    if cfg.targets not in TARGETS:
        raise FinetuneError(f"--targets must be one of {', '.join(TARGETS)}, not {cfg.targets!r}")
    if cfg.best_of < 2:
        raise FinetuneError("--best-of must be at least 2")
    if cfg.history < 0:
        raise FinetuneError("--history must be 0 or more")
    from finetune.formats import format_names, get_format

    try:
        shows = get_format(cfg.answer_format).shows_history
    except ValueError:
        shows = False  # check_format says why
    if cfg.history and (cfg.targets != "best" or not shows):
        able = " or ".join(n for n in format_names() if get_format(n).shows_history)
        raise FinetuneError(f"--history needs --targets best and --answer-format {able} (the tried list is of "
                            "width lists, each less accurate than the answer)")


def check_format(answer_format: str, context: str) -> None:
    """FinetuneError for an unknown or impossible --answer-format / --context."""
    from finetune.formats import check_format as check

    try:
        check(answer_format, context)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None


def spec_for(dataset: str | None, class_name: str | None = None) -> dict:
    """The build spec (input shape, classes) of a corpus's data set, as the profiler used it, and the
    class or factory that builds the network (a row's `class_name`)."""
    from corpus.data import DataError, info

    if not dataset:
        raise FinetuneError("the corpus does not say which data set it was profiled on")
    try:
        d = info(dataset)
    except DataError as exc:
        raise FinetuneError(str(exc)) from None
    return {"in_shape": [1, d["channels"], *d["size"]], "classes": d["classes"], "class_name": class_name or None}


def with_class_name(rows: list[dict], class_name: str | None) -> list[dict]:
    """The rows with `class_name` set to the flag's value when one is given (a corpus built before the
    column existed, or a file whose builder was renamed); else as they are."""
    return [{**r, "class_name": class_name} for r in rows] if class_name else rows


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
    """All rows of a corpus folder written by `python -m corpus build`; `a,b` names several corpora (e.g.
    two seed families, to tune an adapter that searches a third), their rows concatenated."""
    parts = corpus_folders(folder)
    if len(parts) == 1:
        return _load_one(parts[0])
    rows, seen = [], set()
    for r in (r for f in parts for r in _load_one(f)):
        if r.get("id") in seen:
            raise FinetuneError(f"corpora {folder}: row id {r.get('id')} occurs more than once (the same corpus twice?)")
        seen.add(r.get("id"))
        rows.append(r)
    return rows


def corpus_folders(spec: str) -> list[str]:
    """The folders a `--corpus` value names: `a,b` -> [a, b] (unless a folder by that very name exists)."""
    return [f for f in spec.split(",") if f] if "," in spec and not Path(spec).is_dir() else [spec]


def _load_one(folder: str) -> list[dict]:
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


def make_pairs(rows: list[dict], pairs_per_parent: int, seed: int, targets: str = "any", best_of: int = 8,
               history: int = 0) -> list[dict]:
    """[{source_id, target_id, goal, tried}]: at most `pairs_per_parent` targets per source, goals true.
    targets "any": each a random variant that meets a goal (drawn from the goals it meets); "best": each
    the most accurate of `best_of` variants drawn (rejection sampling), kept when it beats the source,
    with an accuracy goal; `tried` then lists up to `history` (a random number from 0) of the other,
    less accurate drawn variants, the search's situation: a better network than those tried."""
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    for r in sorted((r for r in rows if usable(r)), key=lambda r: r["id"]):
        groups.setdefault(r.get("parent") or "", []).append(r)
    pairs = []
    for seed_name in sorted(groups):
        group = groups[seed_name]
        for src in group:
            others = [t for t in group if t["id"] != src["id"] and t.get("sha256") != src.get("sha256")]
            if targets == "best":
                pairs += best_of_k(src, others, seed_name, pairs_per_parent, best_of, history, rng)
                continue
            rng.shuffle(others)
            n = 0
            for tgt in others:
                if n >= pairs_per_parent:
                    break
                goals = goals_for(src, tgt)
                if goals:
                    pairs.append({"source_id": src["id"], "target_id": tgt["id"], "seed": seed_name,
                                  "goal": rng.choice(goals), "tried": []})
                    n += 1
    return pairs


def best_of_k(src: dict, others: list[dict], seed_name: str, n: int, k: int, history: int,
              rng: random.Random) -> list[dict]:
    """Up to n best-of-k pairs for one source (`make_pairs`); a draw repeating an earlier pair (same
    target, same tried list) is dropped."""
    pairs, seen = [], set()
    for _ in range(n):
        drawn = rng.sample(others, min(k, len(others)))
        best = max(drawn, key=lambda r: (r["accuracy"], r["id"]))
        goals = [g for g in goals_for(src, best) if g["kind"] in ACCURACY_GOALS]
        if not goals:
            continue
        worse = [r for r in drawn if r["accuracy"] < best["accuracy"] and r.get("widths") != best.get("widths")]
        rng.shuffle(worse)
        tried = [r["id"] for r in worse[:rng.randint(0, min(history, len(worse)))]]
        key = (best["id"], tuple(tried))
        if key in seen:
            continue
        seen.add(key)
        pairs.append({"source_id": src["id"], "target_id": best["id"], "seed": seed_name,
                      "goal": rng.choice(goals), "tried": tried})
    return pairs


def split_by_source(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): eval holds every pair of a random `eval_fraction` of the source networks."""
    sources = sorted({p["source_id"] for p in pairs})
    n_eval = 0
    if eval_fraction > 0 and len(sources) >= 2:
        n_eval = min(len(sources) - 1, max(1, round(eval_fraction * len(sources))))
    held = set(random.Random(f"split-{seed}").sample(sources, n_eval))
    train = [{**p, "tried": [t for t in p.get("tried", ()) if t not in held]}  # held-out networks: in no
             for p in pairs if p["source_id"] not in held]                     # training prompt
    return train, [p for p in pairs if p["source_id"] in held]


# -- networks: what a widths prompt shows -------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """One source network as the widths format sees it: its width analysis (`mutator.calls.Analysis`,
    what `realize` needs), its slots (`formats.WidthSlot`) and its summary table. `status` "ok", else
    why not (the analysis's status, `widths_mismatch`, `layer_table_failed`)."""
    status: str
    error: str | None = None
    analysis: object = field(default=None, repr=False)
    slots: tuple = ()
    summary: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def slot_basis(pool, parent: str | None, spec: dict) -> dict:
    """What a seed's allowed widths are derived from: {"choices": ...} for a Channel-Bench-Macro seed,
    {"values": the seed's widths} for another built-in seed (analysed once), {} otherwise (the
    source's own widths are the basis)."""
    from corpus.spaces import SPACES
    from mutator import seeds
    from mutator.calls import analyze

    for space in SPACES.values():
        if space["seed"] == parent:
            return {"choices": space["choices"]}
    if parent in seeds.SEEDS:
        a = analyze(pool, seeds.seed_source(parent), spec)
        if a.ok:
            return {"values": a.seed_widths}
    return {}


def describe(pool, row: dict, spec: dict, basis: dict) -> Network:
    """Analyse one network in the sandbox (width analysis + layer table): its slots and summary."""
    from finetune.formats import summary_text, width_slots
    from mutator.calls import analyze

    a = analyze(pool, row["code"], spec)
    if not a.ok:
        return Network(a.status, a.error)
    widths = [int(w) for w in row.get("widths") or a.seed_widths]
    if widths != [int(w) for w in a.seed_widths]:
        return Network("widths_mismatch", f"corpus widths {widths}, the analysis finds {a.seed_widths}")
    lt = pool.call("finetune.formats:layer_table", {"source": row["code"], "spec": spec})
    if lt.get("status") != "ok":
        return Network("layer_table_failed", lt.get("error") or lt.get("status"))
    layers = lt["layers"]
    groups = a.groups
    values = basis.get("values")
    if values and len(values) == len(groups):
        groups = [{**g, "value": int(v)} for g, v in zip(groups, values)]
    choices = basis.get("choices") if len(basis.get("choices") or ()) == len(groups) else None
    slots = width_slots(groups, choices=choices, layers=layers, values=a.seed_widths)
    return Network("ok", None, a, slots, summary_text(layers, a.groups))


def describe_all(rows: list[dict], progress: bool = False) -> dict[str, Network]:
    """{row id: Network} for each row (distinct networks, one sandbox analysis each)."""
    from tqdm import tqdm

    from mutator.sandbox import WorkerPool

    out: dict[str, Network] = {}
    bases: dict[tuple, dict] = {}
    with WorkerPool(1, timeout_s=300) as pool:
        for r in tqdm(rows, desc="width analysis", unit="net", disable=not progress):
            spec = spec_for(r.get("dataset"), r.get("class_name"))
            key = (r.get("parent"), json.dumps(spec))
            if key not in bases:
                bases[key] = slot_basis(pool, r.get("parent"), spec)
            out[r["id"]] = describe(pool, r, spec, bases[key])
    return out


# -- answers ---------------------------------------------------------------------------------------

def example(fmt: str, context: str, src: dict, tgt: dict, goal: dict, net: Network | None = None,
            tried: list[dict] = ()):
    """(messages, None) for a pair in a format, or (None, why it has no true answer in it). tried (widths
    only): rows shown as the prompt's "Tried:" list, with their outcome against the source."""
    from finetune.formats import get_format, prompt_messages

    answer, args, why = get_format(fmt).target(src, tgt, net, tried)
    if answer is None:
        return None, why
    return prompt_messages(fmt, context, src["code"], src, goal, **args) + [answer], None


def records(pairs: list[dict], by_id: dict[str, dict], fmt: str = "code", context: str = "source",
            nets: dict[str, Network] | None = None, skipped: dict | None = None) -> dict[str, list]:
    from finetune.formats import get_format

    cols = {"messages": [], "goal": [], "source_id": [], "target_id": [], "seed": [], "tried": []}
    shows_history = get_format(fmt).shows_history
    for p in pairs:
        src, tgt = by_id[p["source_id"]], by_id[p["target_id"]]
        msgs, why = example(fmt, context, src, tgt, p["goal"], (nets or {}).get(p["source_id"]),
                            [by_id[t] for t in p.get("tried", ())])
        if msgs is None:
            if skipped is not None:
                skipped[why] = skipped.get(why, 0) + 1
            continue
        cols["messages"].append(msgs)
        cols["goal"].append(json.dumps(p["goal"], sort_keys=True))
        cols["source_id"].append(p["source_id"])
        cols["target_id"].append(p["target_id"])
        cols["seed"].append(p["seed"])
        cols["tried"].append(json.dumps(list(p.get("tried", ())) if shows_history else []))
    return cols


def build_pairs(cfg: DatasetConfig, progress: bool = False):
    """(DatasetDict with train/eval, info dict) for a corpus; raises FinetuneError on bad input."""
    import datasets

    from finetune.formats import get_format

    check_format(cfg.answer_format, cfg.context)
    check_recipe(cfg)
    if cfg.pairs_per_parent < 1:
        raise FinetuneError("--pairs-per-parent must be at least 1")
    if not 0 <= cfg.eval_fraction < 1:
        raise FinetuneError("--eval-fraction must be in [0, 1)")
    rows = with_class_name(load_rows(cfg.corpus), cfg.class_name)
    ok = [r for r in rows if usable(r)]
    if not ok:
        raise FinetuneError(f"corpus {cfg.corpus} has no ok rows ({len(rows)} rows, all failed)")
    pairs = make_pairs(rows, cfg.pairs_per_parent, cfg.seed, cfg.targets, cfg.best_of, cfg.history)
    if not pairs:
        raise FinetuneError(f"corpus {cfg.corpus} has no ok pairs: {len(ok)} ok rows, but no two distinct "
                            "variants of the same seed with a measurable difference")
    train, held = split_by_source(pairs, cfg.eval_fraction, cfg.seed)
    by_id = {r["id"]: r for r in ok}
    nets = None
    if get_format(cfg.answer_format).needs_network:
        nets = describe_all([by_id[i] for i in sorted({p["source_id"] for p in pairs})], progress)
    skipped: dict[str, int] = {}
    cols = {name: records(part, by_id, cfg.answer_format, cfg.context, nets, skipped)
            for name, part in (("train", train), ("eval", held))}
    if not cols["train"]["messages"]:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
        bad = next((n.error for n in (nets or {}).values() if not n.ok and n.error), None)
        raise FinetuneError(f"no training pair has a true answer in the {cfg.answer_format} format ({why})"
                            + (f"; e.g. {' '.join(str(bad).split())[:160]}" if bad else ""))
    features = datasets.Features({
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        **{c: datasets.Value("string") for c in ("goal", "source_id", "target_id", "seed", "tried")}})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(cols["train"], features=features),
        "eval": datasets.Dataset.from_dict(cols["eval"], features=features)})
    kinds: dict[str, int] = {}
    for split in cols.values():
        for g in split["goal"]:
            kind = json.loads(g)["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
    info = {"task": "improve", "config": dataclasses.asdict(cfg), "corpus": ",".join(str(Path(f).resolve()) for f in corpus_folders(cfg.corpus)),
            "corpus_fingerprint": corpus_fingerprint(rows), "corpus_rows": len(rows), "ok_rows": len(ok),
            "answer_format": cfg.answer_format, "context": cfg.context, "targets": cfg.targets,
            "tried_shown": sum(len(json.loads(t)) for split in cols.values() for t in split["tried"]),
            "train": len(dd["train"]), "eval": len(dd["eval"]), "goal_kinds": kinds, "skipped": skipped,
            "eval_sources": sorted(set(cols["eval"]["source_id"]))}
    return dd, info


def pairs_report(cfg: DatasetConfig, info: dict) -> str:
    """What `finetune dataset` prints for the pairs it wrote."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(info["goal_kinds"].items()))
    skipped = "".join(f"; skipped {v} ({k})" for k, v in sorted(info["skipped"].items()))
    return (f"wrote {info['train']} train and {info['eval']} eval {cfg.answer_format}/{cfg.context} pairs ({kinds}) "
            f"from {info['ok_rows']} ok rows of {cfg.corpus} to {cfg.out}; eval holds out {len(info['eval_sources'])} "
            f"source networks{skipped}")
