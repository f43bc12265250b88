"""The score task: a tuned small LM as a scorer of candidate networks (their accuracy, predicted).

    python -m finetune dataset --task score --corpus corpus_cbm --out score_cbm --sample 2000 --eval-fraction 0.2
    python -m finetune train --corpus score_cbm --model smollm2-135m --out adapters/score_cbm --max-steps 200
    python -m finetune eval --task score --model smollm2-135m --adapter adapters/score_cbm --corpus score_cbm --n 200

    from finetune.score import score_messages, parse_score, predict_scores
    msgs = score_messages(row, seed_row)       # system + user: one network relative to its family's reference
    parse_score("87.3") -> 87.3                # the answer: accuracy in percent, one decimal
    predict_scores(model, tokenizer, [msgs, ...], batch_size=64) -> [87.3, None, ...]

One example per labelled corpus row (status ok, an accuracy): the prompt describes the network in
terms that hold in any space, short (about 60-70 tokens through SmolLM2's chat template):
- the family line: the built-in seed's own one-line description (the first line of its docstring,
  `Channel-Bench-Macro ResNet space (seed "cbm-resnet")`), else the row's `parent` and its `class_name`;
- the data: the data set and the recipe that measured the accuracy (a benchmark table's, or the proxy
  training's epochs and images): accuracies are comparable only within one recipe;
- per width slot, the network's width relative to the reference's (`x0.50 x1.00 x2.00`), and its FLOPs
  and parameters relative to the reference's (`x1.23`).
The answer is the measured accuracy in percent with one decimal (`87.3`).

The reference of a family (`references`; a family is one seed measured on one data set with one recipe,
`family_key`) is its seed network: the corpus row whose widths are the seed's
(`seed_widths` where the corpus has that column; the middle key 2222222 of a Channel-Bench-Macro space) or
whose code is the built-in seed's file. A corpus without it (`mutator generate` never writes the seed
itself) uses its median-FLOPs labelled row of the family instead; the data set card says which
(`references`). At inference the search's own seed row is the reference (`score_messages(row, seed_row)`).
References are chosen from every labelled row before `--sample` draws its subset, so a sample does
not move them.

Split (`--eval-fraction`, `--rng-seed`): distinct networks (by `sha256`) are held out, as the improve
task holds out source networks; both splits are shuffled with the seed, so the first N of the eval
split are a random N.

Eval (`finetune eval --task score`): for N held-out rows, each model's predicted accuracy by
`predict_scores` -- batched greedy decoding of at most 5 new tokens (the prompts' common prefix run once
and its key/value cache shared by every row, each row's rest left-padded after it), every token but
those that keep the answer on the `DD.D` template (0.0 to 100.0 with one decimal) and the end of turn
masked (`score_template`'s rule) -- then `parse_score`. Reported per model (base, adapter):
the share of answers that parsed, Spearman rho and Kendall tau-b (scipy) of predicted vs measured over
the parsed ones, the overlap of the predicted and the measured top k (k = N // 5, at most 10, at least
1; an unparsed answer ranks last) and the mean absolute error in points.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import random
import re
from functools import lru_cache
from pathlib import Path

from finetune.llm.kv import cache_name, cache_of, chat_ids, common_prefix, eos_and_pad, keep_last
from finetune.pairs import FinetuneError

SCORE_SYSTEM = "Predict the network's test accuracy in percent, one decimal."
MAX_NEW_TOKENS = 5


# -- prompt and answer -------------------------------------------------------------------------------

def labelled(row: dict) -> bool:
    """A row the score task learns from: profiled ok with a finite accuracy."""
    acc = row.get("accuracy")
    return row.get("status") == "ok" and isinstance(acc, (int, float)) and math.isfinite(acc)


@lru_cache(maxsize=64)
def _seed_title(parent: str) -> str | None:
    """First line of a built-in seed's docstring, without its final period."""
    from mutator import seeds

    if parent not in seeds.SEEDS:
        return None
    try:
        doc = ast.get_docstring(ast.parse(seeds.seed_path(parent).read_text()))
    except (OSError, SyntaxError, ValueError):
        return None
    return doc.strip().splitlines()[0].rstrip(".") if doc and doc.strip() else None


def family_line(row: dict) -> str:
    """The seed family in one line: the built-in seed's description, else its name (and class)."""
    parent = str(row.get("parent") or "unknown")
    title = _seed_title(parent)
    if title:
        return title
    name = Path(parent).stem if parent.endswith(".py") else parent
    return name + (f" (class {row['class_name']})" if row.get("class_name") else "")


def recipe_text(row: dict) -> str:
    """How the accuracy was measured, short: `benchmark table`, `1 epoch on 8000 images`."""
    try:
        recipe = json.loads(row.get("recipe") or "{}")
    except (TypeError, ValueError):
        recipe = {}
    if not isinstance(recipe, dict):
        recipe = {}
    if "table" in str(recipe.get("source", "")).lower():
        return "benchmark table"
    epochs = recipe.get("epochs")
    if not isinstance(epochs, (int, float)):
        return "unknown recipe"
    limit = recipe.get("train_limit") or 0
    return f"{epochs:g} epoch{'' if epochs == 1 else 's'} on {f'{int(limit)} images' if limit else 'all images'}"


def ratio_text(value, ref) -> str:
    """`x1.23`, `x0.5`, `x2` (two decimals from 0.1 to 10, trailing zeros dropped, else three significant
    digits), `x?` when unknown."""
    if not isinstance(value, (int, float)) or not isinstance(ref, (int, float)) or not ref or ref < 0 \
            or not math.isfinite(value) or not math.isfinite(ref):
        return "x?"
    r = value / ref
    return "x" + (f"{r:.2f}".rstrip("0").rstrip(".") if 0.1 <= r < 10 else f"{r:.3g}")


def widths_text(row: dict, ref: dict) -> str:
    w, r = list(row.get("widths") or []), list(ref.get("widths") or [])
    if not w:
        return "unknown"
    if len(w) != len(r):  # a reference of another structure: the widths as they are
        return " ".join(str(int(v)) for v in w)
    return " ".join(ratio_text(a, b) for a, b in zip(w, r))


def score_messages(row: dict, seed_row: dict) -> list[dict]:
    """System + user message describing `row` relative to its family's reference `seed_row` (a row
    with widths, flops, params: the family's seed network, as the search has it)."""
    user = (f"Family: {family_line(row)}\n"
            f"Data: {row.get('dataset') or 'unknown'}, {recipe_text(row)}\n"
            f"Vs reference: widths {widths_text(row, seed_row)}; "
            f"FLOPs {ratio_text(row.get('flops'), seed_row.get('flops'))}; "
            f"params {ratio_text(row.get('params'), seed_row.get('params'))}")
    return [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": user}]


def score_answer(row: dict) -> dict:
    """The assistant message: the measured accuracy (a fraction) in percent, one decimal."""
    return {"role": "assistant", "content": f"{100 * row['accuracy']:.1f}"}


_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?|\.\d+)(?![\d])")


def parse_score(text: str | None) -> float | None:
    """The accuracy in percent an answer gives (its first number, 0 to 100), or None."""
    if not text:
        return None
    m = _NUMBER.search(text)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v if 0.0 <= v <= 100.0 else None


# -- references, rows and the split ------------------------------------------------------------------

def _seed_widths(parent: str, family: list[dict]) -> list[int] | None:
    from corpus.spaces import SPACES

    for r in family:
        if r.get("seed_widths"):
            return [int(v) for v in r["seed_widths"]]
    for space in SPACES.values():
        if space["seed"] == parent:
            return [c[1] for c in space["choices"]]  # the middle key 2222222 the seed is set to
    return None


def _seed_sha(parent: str) -> str | None:
    import hashlib

    from mutator import seeds

    if parent not in seeds.SEEDS:
        return None
    return hashlib.sha256(seeds.seed_source(parent).encode()).hexdigest()


def family_key(row: dict) -> str:
    """A family of networks whose numbers compare: one seed, measured on one data set with one recipe
    (`cbm-resnet on cifar10, benchmark table`; a table's FLOPs and a profiler's are not the same count)."""
    return f"{row.get('parent') or ''} on {row.get('dataset') or 'unknown'}, {recipe_text(row)}"


def references(rows: list[dict]) -> dict[str, tuple[dict, str]]:
    """{family_key: (reference row, "seed" or "median")} over the labelled rows of each family: the seed
    network's row where the corpus has it, else the family's median-FLOPs row (module docstring)."""
    families: dict[str, list[dict]] = {}
    for r in sorted((r for r in rows if labelled(r)), key=lambda r: str(r.get("id"))):
        families.setdefault(family_key(r), []).append(r)
    out = {}
    for key, family in families.items():
        parent = family[0].get("parent") or ""
        widths, sha = _seed_widths(parent, family), _seed_sha(parent)
        seed = next((r for r in family if (widths and [int(v) for v in r.get("widths") or []] == widths)
                     or (sha and r.get("sha256") == sha) or r.get("id") == parent), None)  # id: corpus --with-seed
        if seed is not None:
            out[key] = (seed, "seed")
            continue
        costed = sorted((r for r in family if r.get("flops") is not None), key=lambda r: (r["flops"], str(r.get("id"))))
        out[key] = (costed[len(costed) // 2] if costed else family[len(family) // 2], "median")
    return out


def score_rows(rows: list[dict], sample: int = 0, seed: int = 0) -> list[dict]:
    """One record per labelled row (a random `sample` of them when > 0): {messages (system, user,
    assistant), id, parent, reference_id, sha256, accuracy (a fraction)}."""
    refs = references(rows)
    good = sorted((r for r in rows if labelled(r)), key=lambda r: str(r.get("id")))
    if 0 < sample < len(good):
        good = sorted(random.Random(f"score-sample-{seed}").sample(good, sample), key=lambda r: str(r.get("id")))
    out = []
    for r in good:
        ref, _ = refs[family_key(r)]
        out.append({"messages": score_messages(r, ref) + [score_answer(r)], "id": str(r.get("id")),
                    "parent": r.get("parent") or "", "reference_id": str(ref.get("id")),
                    "sha256": r.get("sha256") or str(r.get("id")), "accuracy": float(r["accuracy"])})
    return out


def split_networks(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): eval holds every record of a random `eval_fraction` of the distinct networks (at
    least one when the fraction is > 0 and there are two); each split shuffled with the seed."""
    nets = sorted({r["sha256"] for r in records})
    n_eval = 0
    if eval_fraction > 0 and len(nets) >= 2:
        n_eval = min(len(nets) - 1, max(1, round(eval_fraction * len(nets))))
    rng = random.Random(f"score-split-{seed}")
    held = set(rng.sample(nets, n_eval))
    train = [r for r in records if r["sha256"] not in held]
    evald = [r for r in records if r["sha256"] in held]
    rng.shuffle(train)
    rng.shuffle(evald)
    return train, evald


def build_score(cfg, progress: bool = False):
    """(DatasetDict train/eval, info) of the score task for a `DatasetConfig` (corpus, eval_fraction,
    seed, sample, class_name); FinetuneError on bad input."""
    import datasets

    from finetune.pairs import corpus_fingerprint, corpus_folders, load_rows, with_class_name

    if cfg.sample < 0:
        raise FinetuneError("--sample must be 0 (every labelled row) or more")
    if not 0 <= cfg.eval_fraction < 1:
        raise FinetuneError("--eval-fraction must be in [0, 1)")
    rows = with_class_name(load_rows(cfg.corpus), cfg.class_name)
    records = score_rows(rows, cfg.sample, cfg.seed)
    if not records:
        ok = sum(r.get("status") == "ok" for r in rows)
        raise FinetuneError(f"corpus {cfg.corpus} has no labelled rows (status ok with an accuracy): {len(rows)} rows, "
                            f"{ok} ok" + (", none with an accuracy (a --zero-cost-only corpus?)" if ok else ""))
    train, held = split_networks(records, cfg.eval_fraction, cfg.seed)
    cols = ("messages", "id", "parent", "reference_id", "sha256", "accuracy")
    features = datasets.Features({
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        **{c: datasets.Value("string") for c in ("id", "parent", "reference_id", "sha256")},
        "accuracy": datasets.Value("float64")})
    dd = datasets.DatasetDict({name: datasets.Dataset.from_dict({c: [r[c] for r in part] for c in cols},
                                                                features=features)
                               for name, part in (("train", train), ("eval", held))})
    refs = references(rows)
    example = records[0]["messages"]
    info = {"task": "score", "config": dataclasses.asdict(cfg),
            "corpus": ",".join(str(Path(f).resolve()) for f in corpus_folders(cfg.corpus)),
            "corpus_fingerprint": corpus_fingerprint(rows), "corpus_rows": len(rows),
            "ok_rows": sum(labelled(r) for r in rows), "rows": len(records), "sample": cfg.sample,
            "answer_format": "accuracy", "context": "relative",  # what the run card and the loss plot say
            "prompt": {"system": example[0]["content"], "user_example": example[1]["content"],
                       "answer_example": example[2]["content"],
                       "shape": "family line; data set and recipe; widths per slot, FLOPs and params, each "
                                "relative to the family's reference -> accuracy in percent, one decimal"},
            "references": {p: {"id": str(r.get("id")), "kind": kind} for p, (r, kind) in sorted(refs.items())},
            "train": len(train), "eval": len(held), "eval_fraction": cfg.eval_fraction,
            "split": "distinct networks (sha256) held out",
            "eval_sources": sorted({r["id"] for r in held})}
    return dd, info


def score_report(cfg, info: dict) -> str:
    kinds = ", ".join(f"{p} ({v['kind']} {v['id']})" for p, v in info["references"].items())
    return (f"wrote {info['train']} train and {info['eval']} eval score examples from {info['rows']} of "
            f"{info['ok_rows']} labelled rows of {cfg.corpus} to {cfg.out}; references: {kinds}"
            + median_note(info["references"]))


def median_note(refs: dict) -> str:
    """A warning where a family's reference is not its seed (a corpus of variants without the seed's row)."""
    median = [p for p, v in refs.items() if v["kind"] == "median"]
    if not median:
        return ""
    return (f"\nwarning: {len(median)} famil{'y has' if len(median) == 1 else 'ies have'} no row of the seed network, "
            "so its networks are described against its median-FLOPs variant, while `search run --strategy scored` "
            "describes candidates against the seed: build the corpus with `corpus build --with-seed`")


# -- prediction ----------------------------------------------------------------------------------------

_PREFIX = re.compile(r"(?:(?:0|[1-9]\d?)(?:\.\d?)?|100(?:\.0?)?)?")  # what can still become an answer
_DONE = re.compile(r"(?:0|[1-9]\d?)\.\d|100\.0")  # a complete answer: 0.0 to 100.0, one decimal


def _number_pieces(tokenizer) -> dict[int, str]:
    """{token id: its text} for the tokens made only of digits and '.' (cached on the tokenizer)."""
    cached = getattr(tokenizer, "_nasforge_number_pieces", None)
    if cached is not None:
        return cached
    pieces = {}
    vocab = tokenizer.get_vocab()
    for text, i in vocab.items():
        if text and all(c in "0123456789." for c in text) and tokenizer.decode([i]) == text:
            pieces[i] = text
    try:
        tokenizer._nasforge_number_pieces = pieces
    except AttributeError:
        pass
    return pieces


def score_template(tokenizer, prompt_len: int, eos_ids):
    """A LogitsProcessor that keeps, for every row of a batch, only the tokens that extend its answer so
    far on the `DD.D` template (0.0 to 100.0: one or two digits or 100, '.', one digit), and the end of
    turn once it is complete."""
    import torch
    from transformers import LogitsProcessor

    pieces = _number_pieces(tokenizer)
    eos = sorted(set(eos_ids))

    class ScoreTemplate(LogitsProcessor):
        def __init__(self):
            self.masks: dict[str, list[int]] = {}

        def allowed(self, text: str) -> list[int]:
            if text not in self.masks:
                done = _DONE.fullmatch(text) is not None
                ids = [] if done else [i for i, p in pieces.items() if _PREFIX.fullmatch(text + p)]
                self.masks[text] = ids + (eos if done or not ids else [])
            return self.masks[text]

        def __call__(self, input_ids, scores):
            mask = torch.full_like(scores, float("-inf"))
            for b, row in enumerate(input_ids[:, prompt_len:].tolist()):
                if any(t in eos for t in row):  # finished: generate pads it whatever is chosen
                    mask[b] = 0
                    continue
                text = "".join(pieces.get(t, "") for t in row)
                ids = [i for i in self.allowed(text) if i < scores.shape[1]]
                mask[b, ids] = 0
            return scores + mask

    return ScoreTemplate()


def score_texts(model, tokenizer, prompts: list[list[dict]], batch_size: int = 64,
                max_new_tokens: int = MAX_NEW_TOKENS, progress: bool = False, share_prefix: bool = True) -> list[str]:
    """The raw answers (digits and '.' only) of greedy, template-constrained decoding, one per prompt in order.

    The prompts of a pool share their start (system message, family and data lines): that prefix is run
    through the model once and its key/value cache copied to every row (`share_prefix`; off: every row is
    run whole). Each row's own rest is left-padded after the prefix (the padding masked, positions counted
    without it), rows sorted by length into batches of `batch_size`; then up to `max_new_tokens` greedy
    steps, each row restricted to the tokens that keep its answer on the `DD.D` template
    (`score_template`'s rule) and the end of turn once it is complete. The same answers as
    `model.generate` with `score_template`, prompt by prompt (tested), at a fraction of the prefill."""
    import copy

    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    eos_ids, pad = eos_and_pad(model, tokenizer)
    enc = chat_ids(tokenizer, prompts)
    rule = score_template(tokenizer, 0, eos_ids)
    pieces = _number_pieces(tokenizer)
    device, cache_arg, last = model.device, cache_name(model), keep_last(model)
    shared = common_prefix(enc) if share_prefix else 0
    prefix_cache = None
    with torch.inference_mode():
        if shared:
            prefix_cache = cache_of(model(input_ids=torch.tensor([enc[0][:shared]], device=device), use_cache=True,
                                           **last(shared)))
    order = sorted(range(len(prompts)), key=lambda i: (len(enc[i]), i))
    out: list[str | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc="scores", unit="prompt", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        rests = [enc[i][shared:] for i in idx]
        width = max(len(r) for r in rests)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=device)
        own = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
        mask = torch.cat([torch.ones(len(idx), shared, dtype=own.dtype, device=device), own], dim=1)
        pos = (shared + own.cumsum(-1) - 1).clamp(min=0)
        kw = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(idx))
            kw[cache_arg] = cache
        texts, done = [""] * len(idx), [False] * len(idx)
        with torch.inference_mode():
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kw, **last(width))
            nxt = pos[:, -1:] + 1
            for step in range(max_new_tokens):
                logits = res.logits[:, -1].float()
                chosen = []
                for b in range(len(idx)):
                    if done[b]:
                        chosen.append(pad)
                        continue
                    allowed = [i for i in rule.allowed(texts[b]) if i < logits.shape[1]]
                    t = max(allowed, key=lambda i: (float(logits[b, i]), -i)) if allowed else next(iter(eos_ids), pad)
                    if t in eos_ids or t not in pieces:
                        done[b] = True
                    else:
                        texts[b] += pieces[t]
                    chosen.append(t)
                if all(done) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones(len(idx), 1, dtype=mask.dtype, device=device)], dim=1)
                res = model(input_ids=torch.tensor(chosen, device=device)[:, None], attention_mask=mask,
                            position_ids=nxt, use_cache=True, **{cache_arg: cache_of(res)})
                nxt = nxt + 1
        for i, t in zip(idx, texts):
            out[i] = t
        bar.update(len(idx))
    bar.close()
    return out


def predict_scores(model, tokenizer, prompts: list[list[dict]], batch_size: int = 64,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> list[float | None]:
    """Predicted accuracy in percent (or None: the answer did not parse) per prompt, in order."""
    return [parse_score(t) for t in score_texts(model, tokenizer, prompts, batch_size, max_new_tokens)]


def llm_score_texts(llm, prompts: list[list[dict]], batch_size: int = 64, progress: bool = False) -> list[str]:
    """Answers through a `finetune.llm` backend: in process (`model` and `tok`): `score_texts`; any other
    (a served model, the scripted double): greedy answers of a few tokens, unconstrained, one by one."""
    if hasattr(llm, "model") and hasattr(llm, "tok"):
        return score_texts(llm.model, llm.tok, prompts, batch_size, progress=progress)
    return [llm.generate(m, temperature=0.0, max_new_tokens=8) for m in prompts]


# -- metrics -------------------------------------------------------------------------------------------

def top_k(n: int) -> int:
    return max(1, min(10, n // 5))


def score_metrics(predicted: list[float | None], measured: list[float], k: int | None = None) -> dict:
    """Predicted vs measured accuracies (both in percent): parsed share, Spearman rho and Kendall tau-b
    over the parsed answers (None when undefined: fewer than 3, or constant predictions), top-k overlap
    (an unparsed answer ranks last; ties broken by position), mean absolute error in points."""
    from corpus.predictor import rank_correlation

    n = len(measured)
    if len(predicted) != n:
        raise ValueError("one prediction per measured value")
    k = min(k or top_k(n), n) if n else 0
    pairs = [(p, m) for p, m in zip(predicted, measured) if p is not None]
    _, rho, tau = rank_correlation([p for p, _ in pairs], [m for _, m in pairs])
    def clean(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 4)

    by_pred = sorted(range(n), key=lambda i: (predicted[i] is None, -(predicted[i] or 0.0), i))[:k]
    by_true = sorted(range(n), key=lambda i: (-measured[i], i))[:k]
    return {"n": n, "parsed": len(pairs), "parsed_share": round(len(pairs) / n, 4) if n else None,
            "spearman": clean(rho), "kendall": clean(tau), "k": k,
            "top_k_overlap": round(len(set(by_pred) & set(by_true)) / k, 4) if k else None,
            "mae_points": round(sum(abs(p - m) for p, m in pairs) / len(pairs), 3) if pairs else None}


def metrics_table(results: dict) -> str:
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    k = next(iter(results.values()))["summary"]["k"] if results else 0
    rows = [("answers parsed", lambda s: f"{s['parsed']}/{s['n']} ({100 * (s['parsed_share'] or 0):.0f}%)"),
            ("Spearman rho", lambda s: "n/a" if s["spearman"] is None else f"{s['spearman']:+.3f}"),
            ("Kendall tau", lambda s: "n/a" if s["kendall"] is None else f"{s['kendall']:+.3f}"),
            (f"top-{k} overlap", lambda s: "n/a" if s["top_k_overlap"] is None else f"{s['top_k_overlap']:.2f}"),
            ("MAE (points)", lambda s: "n/a" if s["mae_points"] is None else f"{s['mae_points']:.2f}")]
    return table_text(results, rows, width)


def table_text(results: dict, rows: list, width: int) -> str:
    """One column per model (base, adapter), one line per (label, cell of a summary) in `rows`."""
    names = list(results)
    cells = {(label, n): cell(results[n]["summary"]) for label, cell in rows for n in names}
    width = max([width] + [len(t) + 2 for t in cells.values()])  # a wide cell never runs into its neighbour
    lines = [f"{'':<18}" + "".join(f"{n:>{width}}" for n in names)]
    for label, _ in rows:
        lines.append(f"{label:<18}" + "".join(f"{cells[label, n]:>{width}}" for n in names))
    return "\n".join(lines)


# -- eval ------------------------------------------------------------------------------------------------

def held_out(cfg, card: dict, task: str = "score", build=None):
    """(eval split rows, where they came from): a `task` data set folder's eval split, or the split
    rebuilt from a corpus by `build` (default: the score task's) with the adapter's data settings
    (`data_config` of its run card), else the flags. The prefer task uses it too (`finetune.prefer`)."""
    import datasets

    from finetune.pairs import DatasetConfig

    p = Path(cfg.corpus)
    if (p / "dataset_dict.json").exists():
        info_file = p / "finetune_dataset.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        if info.get("task") != task:
            raise FinetuneError(f"--corpus {cfg.corpus} is a data set for the {info.get('task') or 'improve'} task, "
                                f"not {task}: give a {task} data set or a corpus")
        try:
            dd = datasets.load_from_disk(str(p))
        except Exception as exc:
            raise FinetuneError(f"{cfg.corpus} is not a readable data set ({type(exc).__name__})") from None
        return dd["eval"], {"data_set": str(p.resolve()), **{k: info.get("config", {}).get(k)
                                                              for k in ("eval_fraction", "seed", "sample")}}
    data = (card.get("data_config") or {}) if card.get("task") == task else {}
    settings = {k: data.get(k, getattr(cfg, k)) for k in ("eval_fraction", "seed", "sample")}
    dd, _ = (build or build_score)(DatasetConfig(corpus=cfg.corpus, task=task, class_name=cfg.class_name, **settings))
    return dd["eval"], {"corpus": cfg.corpus, **settings}


def eval_score(cfg, acfg: dict, card: dict) -> int:
    """`finetune eval --task score`: base (and adapter) predictions for N held-out rows, rank metrics."""
    from finetune.llm import LLMError, make_llm
    from finetune.models import check_adapter_base, resolve_model

    held, source = held_out(cfg, card)
    if len(held) == 0:
        raise FinetuneError(f"{cfg.corpus} gives no held-out score rows (raise --eval-fraction, or too few networks)")
    held = held.select(range(min(cfg.n, len(held))))
    prompts = [r["messages"][:-1] for r in held]
    measured = [100 * a for a in held["accuracy"]]
    base = cfg.model if cfg.llm_url else resolve_model(cfg.model)
    if cfg.adapter and not cfg.llm_url:
        check_adapter_base(acfg, card, cfg.model, base, cfg.adapter)
    dtype = getattr(cfg, "dtype", "float32")
    if dtype != "float32" and cfg.llm_url:
        raise FinetuneError(f"--dtype {dtype} is for a model in process, not one served at --llm-url")
    try:
        llm = make_llm(base, url=cfg.llm_url)
        if dtype != "float32":
            llm.for_inference(dtype)  # the adapter below is loaded on its own copy of the base, then merged
    except LLMError as exc:
        raise FinetuneError(str(exc)) from None
    results = {}
    tuned = (lambda: make_llm(base, cfg.adapter).for_inference(dtype)) if dtype != "float32" else \
        (lambda: llm.with_adapter(cfg.adapter))
    models = [("base", lambda: llm)] + ([("adapter", tuned)] if cfg.adapter else [])
    for name, get in models:  # the adapter after the base: peft injects its layers into the base model
        try:
            texts = llm_score_texts(get(), prompts, cfg.batch_size, progress=True)
        except LLMError as exc:
            raise FinetuneError(str(exc)) from None
        preds = [parse_score(t) for t in texts]
        results[name] = {"summary": score_metrics(preds, measured),
                         "answers": [{"id": r["id"], "parent": r["parent"], "measured": round(m, 4), "text": t,
                                      "predicted": p} for r, m, t, p in zip(held, measured, texts, preds)]}
    print(metrics_table(results))
    from finetune.evaluate import write_report

    write_report(cfg, card, results, ("base_model", "corpus", "steps", "train_loss", "task"), task="score",
                 held_out=source, base=base)
    return 0

