"""The prefer task: a tuned small LM that prefers the more accurate of two networks of a family (DPO).

    python -m finetune dataset --task prefer --corpus corpus_cbm --out prefer_cbm --sample 4000 --eval-fraction 0.2
    python -m finetune train --corpus prefer_cbm --model smollm2-135m --out adapters/prefer_cbm --max-steps 200
    python -m finetune eval --task prefer --model smollm2-135m --adapter adapters/prefer_cbm --corpus prefer_cbm --n 200

    from finetune.prefer import prefer_messages, answer_logprobs
    msgs = prefer_messages(ref)                  # system + user: a request for widths relative to the reference
    answer_logprobs(model, tokenizer, [msgs, ...], ["x0.5 x1 x2", ...]) -> [-12.3, ...]
    parse_ratios("x0.5 x1 x2", [64, 128, 256], choices) -> (32, 128, 512)   # a generator's answer as widths

Each example is a preference pair of two labelled corpus rows (status ok, an accuracy:
`finetune.score.labelled`) of one family (`finetune.score.family_key`: one seed, one data set, one
recipe; accuracies compare only there). The prompt is the same for every pair of a family, short and
space-agnostic: the family line and the data/recipe (`finetune.score.family_line` / `recipe_text`), the
reference network (`finetune.score.references`: the seed's row, else the median-FLOPs one) by its
widths and accuracy, and a request for per-slot widths relative to it. The chosen and rejected answers
are the two networks' widths relative to the reference (`x0.5 x1 x2`, `finetune.score.widths_text`);
`trl`'s DPOTrainer tunes the model to give the chosen answer more probability than the rejected one.

Pairs are drawn across rank strata: a family's rows sorted by accuracy are cut into 4 strata
(quartiles; rows of equal accuracy share one, so two strata never tie), and both members of a pair
come from different strata, the better (chosen) from the higher one. Pairs of near neighbours in rank
would mostly teach measurement noise; pairs across strata are differences the recipe resolves.
`--sample N` caps the pairs (0: min(4 x labelled rows, 20000)); each family gets a share of that cap
in proportion to its rows, drawn with `--rng-seed`. Rows without widths, and pairs whose two answers
read the same, are left out (nothing to prefer).

Split (`--eval-fraction`): distinct networks (by `sha256`) are held out as the score task holds them
out (`finetune.score.split_networks`); train pairs are drawn among the other networks only and eval
pairs among the held-out ones only -- the pairs that would mix the two are never drawn -- so no network
is in both splits.

Eval (`finetune eval --task prefer`): for N held-out pairs, each model's (base, adapter) summed
log-probability of the chosen and the rejected answer given the prompt (the model in process,
`answer_logprobs`, the answer's end-of-turn token included, as DPO scores it); reported: the preference
accuracy (share of pairs where the chosen answer is the more probable) and the mean margin in nats.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from finetune.pairs import FinetuneError
from finetune.score import (family_key, family_line, labelled, median_note, recipe_text, references, split_networks,
                            widths_text)

PREFER_SYSTEM = "Propose a network of this family for the highest accuracy: its widths relative to the reference."
STRATA = 4
DEFAULT_PAIRS_PER_ROW = 4
MAX_DEFAULT_PAIRS = 20000
_ENUMERATE_UP_TO = 200_000  # cross-strata pairs of a family listed outright below this; sampled above


# -- prompt and answers ------------------------------------------------------------------------------

def prefer_messages(ref: dict) -> list[dict]:
    """System + user message: the family, its data and recipe, and its reference `ref` (a row with
    widths and an accuracy), asking for per-slot widths relative to the reference."""
    widths = " ".join(str(int(w)) for w in ref.get("widths") or []) or "unknown"
    acc = ref.get("accuracy")
    user = (f"Family: {family_line(ref)}\n"
            f"Data: {ref.get('dataset') or 'unknown'}, {recipe_text(ref)}\n"
            f"Reference: widths {widths}" + (f"; accuracy {100 * acc:.1f}%" if isinstance(acc, (int, float)) else "")
            + "\nGive each slot's width relative to the reference (x0.5 x1 x2 ...).")
    return [{"role": "system", "content": PREFER_SYSTEM}, {"role": "user", "content": user}]


def parse_ratios(text: str | None, ref_widths, choices=None, tolerance: float = 0.05) -> tuple[int, ...] | None:
    """The widths an answer `x0.5 x1 x2 ...` gives relative to `ref_widths` (one ratio per slot, the first
    that many `x<number>` in the text); with `choices` (allowed widths per slot) each width is the allowed one
    nearest to ratio x reference, if within `tolerance` of it (relative), else the answer gives none. None:
    too few ratios or a width off the choices."""
    import re

    ratios = [float(m) for m in re.findall(r"x\s*([0-9]+(?:\.[0-9]+)?)", text or "")][:len(ref_widths)]
    if len(ratios) != len(ref_widths) or not ref_widths:
        return None
    out = []
    for i, (r, w) in enumerate(zip(ratios, ref_widths)):
        want = r * float(w)
        if choices is None:
            if want < 1:
                return None
            out.append(int(round(want)))
            continue
        near = min(choices[i], key=lambda c: abs(c - want))
        if abs(near - want) > tolerance * near:
            return None
        out.append(int(near))
    return tuple(out)


def answer(row: dict, ref: dict) -> list[dict]:
    """The one assistant message of a chosen or rejected answer: `row`'s widths relative to `ref`."""
    return [{"role": "assistant", "content": widths_text(row, ref)}]


# -- pairs across strata -----------------------------------------------------------------------------

def strata(rows: list[dict], n: int = STRATA) -> list[int]:
    """The stratum (0: least accurate .. n-1) of each row of `rows`, sorted by accuracy ascending:
    the quartile of its rank, the rank of its first equal (equal accuracies share a stratum)."""
    out, first = [], 0
    for i, r in enumerate(rows):
        if i and r["accuracy"] != rows[i - 1]["accuracy"]:
            first = i
        out.append(first * n // len(rows))
    return out


def draw_pairs(rows: list[dict], want: int, rng: random.Random, levels: list[int] | None = None) -> list[tuple[int, int]]:
    """Up to `want` distinct (better, worse) index pairs of `rows` (sorted by accuracy ascending) whose
    members lie in different strata (`levels`, default `strata(rows)`), the better from the higher one."""
    levels = strata(rows) if levels is None else levels
    n = len(rows)
    sizes: dict[int, int] = {}
    for s in levels:
        sizes[s] = sizes.get(s, 0) + 1
    total = (n * n - sum(v * v for v in sizes.values())) // 2  # pairs across strata
    if want <= 0 or total == 0:
        return []
    if total <= _ENUMERATE_UP_TO:
        every = [(j, i) for i in range(n) for j in range(i + 1, n) if levels[i] != levels[j]]
        return every if want >= len(every) else rng.sample(every, want)
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < want:  # total >> want here (want is at most 4 per row): few draws are wasted
        i, j = rng.randrange(n), rng.randrange(n)
        if levels[i] == levels[j]:
            continue
        pair = (max(i, j), min(i, j))  # levels rise with the index: the higher index is the better
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def prefer_pairs(rows: list[dict], sample: int = 0, eval_fraction: float = 0.0, seed: int = 0):
    """(train pairs, eval pairs, facts): preference records {prompt, chosen, rejected, chosen_id,
    rejected_id, chosen_accuracy, rejected_accuracy, chosen_sha256, rejected_sha256, family} of the
    labelled `rows`, per family and across strata (module docstring); FinetuneError when none can be drawn."""
    refs = references(rows)
    good = sorted((r for r in rows if labelled(r) and r.get("widths")), key=lambda r: str(r.get("id")))
    families: dict[str, list[dict]] = {}
    for r in good:
        families.setdefault(family_key(r), []).append(r)
    cap = sample if sample > 0 else min(DEFAULT_PAIRS_PER_ROW * len(good), MAX_DEFAULT_PAIRS)
    nets = [{"sha256": r.get("sha256") or str(r.get("id"))} for r in good]
    _, held_nets = split_networks(nets, eval_fraction, seed)
    held = {r["sha256"] for r in held_nets}
    rng = random.Random(f"prefer-pairs-{seed}")
    parts: dict[str, list[dict]] = {"train": [], "eval": []}
    singles = []
    for key in sorted(families):
        family = sorted(families[key], key=lambda r: (r["accuracy"], str(r.get("id"))))
        if len(family) < 2:
            singles.append(key)
            continue
        ref = refs[key][0]
        prompt = prefer_messages(ref)
        levels = strata(family)
        for part in ("train", "eval"):
            idx = [i for i, r in enumerate(family) if ((r.get("sha256") or str(r.get("id"))) in held) == (part == "eval")]
            members = [family[i] for i in idx]
            want = max(1, round(cap * len(members) / len(good)))
            for b, w in draw_pairs(members, want, rng, [levels[i] for i in idx]):
                better, worse = members[b], members[w]
                chosen, rejected = answer(better, ref), answer(worse, ref)
                if chosen[0]["content"] == rejected[0]["content"]:
                    continue
                parts[part].append({
                    "prompt": prompt, "chosen": chosen, "rejected": rejected,
                    "chosen_id": str(better.get("id")), "rejected_id": str(worse.get("id")),
                    "chosen_accuracy": float(better["accuracy"]), "rejected_accuracy": float(worse["accuracy"]),
                    "chosen_sha256": better.get("sha256") or str(better.get("id")),
                    "rejected_sha256": worse.get("sha256") or str(worse.get("id")), "family": key})
    if not parts["train"] and not parts["eval"]:
        if not good:
            raise FinetuneError("no labelled rows with widths (status ok with an accuracy) to pair")
        raise FinetuneError(f"no preference pairs: every family has fewer than two labelled networks of different "
                            f"accuracy ({len(families)} famil{'y' if len(families) == 1 else 'ies'}, "
                            f"{len(good)} labelled rows)")
    total = len(parts["train"]) + len(parts["eval"])
    if total > cap:  # the per-family shares round up: trim to the cap, keeping the split's proportions
        for part in ("train", "eval"):
            keep = round(cap * len(parts[part]) / total)
            parts[part] = [parts[part][i] for i in sorted(rng.sample(range(len(parts[part])), keep))]
    for part in parts.values():
        rng.shuffle(part)
    facts = {"labelled_rows": len(good), "families": {k: len(v) for k, v in sorted(families.items())},
             "single_row_families": singles, "cap": cap,
             "held_out_networks": len(held)}
    return parts["train"], parts["eval"], facts


COLUMNS = ("prompt", "chosen", "rejected", "chosen_id", "rejected_id", "chosen_accuracy", "rejected_accuracy",
           "chosen_sha256", "rejected_sha256", "family")


def build_prefer(cfg, progress: bool = False):
    """(DatasetDict train/eval of preference pairs, info) for a `DatasetConfig` (corpus, eval_fraction,
    seed, sample, class_name); FinetuneError on bad input."""
    import datasets

    from finetune.pairs import corpus_fingerprint, corpus_folders, load_rows, with_class_name

    if cfg.sample < 0:
        raise FinetuneError("--sample must be 0 (the default number of pairs) or more")
    if not 0 <= cfg.eval_fraction < 1:
        raise FinetuneError("--eval-fraction must be in [0, 1)")
    rows = with_class_name(load_rows(cfg.corpus), cfg.class_name)
    if not any(labelled(r) for r in rows):
        ok = sum(r.get("status") == "ok" for r in rows)
        raise FinetuneError(f"corpus {cfg.corpus} has no labelled rows (status ok with an accuracy): {len(rows)} rows, "
                            f"{ok} ok" + (", none with an accuracy (a --zero-cost-only corpus?)" if ok else ""))
    train, held, facts = prefer_pairs(rows, cfg.sample, cfg.eval_fraction, cfg.seed)
    msg = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    features = datasets.Features({"prompt": msg, "chosen": msg, "rejected": msg,
                                  **{c: datasets.Value("string") for c in COLUMNS[3:5] + COLUMNS[7:]},
                                  **{c: datasets.Value("float64") for c in COLUMNS[5:7]}})
    dd = datasets.DatasetDict({name: datasets.Dataset.from_dict({c: [r[c] for r in part] for c in COLUMNS},
                                                                features=features)
                               for name, part in (("train", train), ("eval", held))})
    example = (train or held)[0]
    info = {"task": "prefer", "config": dataclasses.asdict(cfg),
            "corpus": ",".join(str(Path(f).resolve()) for f in corpus_folders(cfg.corpus)),
            "corpus_fingerprint": corpus_fingerprint(rows), "corpus_rows": len(rows),
            "ok_rows": facts["labelled_rows"], "pairs": len(train) + len(held), "sample": cfg.sample,
            "pair_cap": facts["cap"], "strata": STRATA,
            "answer_format": "widths", "context": "relative",  # what the run card and the loss plot say
            "prompt": {"system": example["prompt"][0]["content"], "user_example": example["prompt"][1]["content"],
                       "chosen_example": example["chosen"][0]["content"],
                       "rejected_example": example["rejected"][0]["content"],
                       "shape": "family line; data set and recipe; the reference's widths and accuracy -> widths "
                                "relative to the reference; chosen: the more accurate network, from a higher "
                                "accuracy quartile of the family"},
            "families": facts["families"], "single_row_families": facts["single_row_families"],
            "references": {p: {"id": str(r.get("id")), "kind": kind} for p, (r, kind) in sorted(references(rows).items())},
            "train": len(train), "eval": len(held), "eval_fraction": cfg.eval_fraction,
            "split": "distinct networks (sha256) held out; pairs drawn within each side",
            "eval_sources": sorted({r[c] for r in held for c in ("chosen_id", "rejected_id")})}
    return dd, info


def prefer_report(cfg, info: dict) -> str:
    skipped = info["single_row_families"]
    return (f"wrote {info['train']} train and {info['eval']} eval preference pairs (across {info['strata']} accuracy "
            f"strata) from {info['ok_rows']} labelled rows in {len(info['families'])} families of {cfg.corpus} "
            f"to {cfg.out}" + (f"; {len(skipped)} single-row famil{'y' if len(skipped) == 1 else 'ies'} skipped"
                               if skipped else "") + median_note(info.get("references") or {}))


# -- log-probabilities -----------------------------------------------------------------------------------

def answer_logprobs(model, tokenizer, prompts: list[list[dict]], answers: list[list[dict]],
                    batch_size: int = 8) -> list[float]:
    """Summed log-probability (nats) of each answer (a list with one assistant message) given its prompt
    (system + user), through the chat template: the tokens after the prompt with its generation prompt,
    the end of turn included. Batched by length with right padding; one forward pass per batch."""
    import torch

    if len(prompts) != len(answers):
        raise ValueError("one answer per prompt")
    seqs = []
    for p, a in zip(prompts, answers):
        head = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(p + a, tokenize=True, return_dict=True)["input_ids"]
        start = next((k for k, (x, y) in enumerate(zip(head, full)) if x != y), min(len(head), len(full)))
        seqs.append((list(full), start))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    out: list[float] = [0.0] * len(seqs)
    device = next(model.parameters()).device
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for b, i in enumerate(idx):
            toks = seqs[i][0]
            ids[b, :len(toks)] = torch.tensor(toks)
            mask[b, :len(toks)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for b, i in enumerate(idx):
            toks, start = seqs[i]
            out[i] = float(logp[b, max(start, 1) - 1:len(toks) - 1].sum())  # position t predicts token t + 1
    return out


def preference_metrics(chosen: list[float], rejected: list[float]) -> dict:
    """Preference accuracy (share of pairs whose chosen answer is the more probable) and the mean and
    median margin (chosen - rejected log-probability, nats)."""
    margins = sorted(c - r for c, r in zip(chosen, rejected))
    n = len(margins)
    return {"n": n, "preference_accuracy": round(sum(m > 0 for m in margins) / n, 4) if n else None,
            "mean_margin": round(sum(margins) / n, 4) if n else None,
            "median_margin": round(margins[n // 2] if n % 2 else (margins[n // 2 - 1] + margins[n // 2]) / 2, 4)
            if n else None}


def metrics_table(results: dict) -> str:
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    rows = [("pairs", lambda s: str(s["n"])),
            ("pref. accuracy", lambda s: "n/a" if s["preference_accuracy"] is None else f"{s['preference_accuracy']:.3f}"),
            ("mean margin", lambda s: "n/a" if s["mean_margin"] is None else f"{s['mean_margin']:+.3f}"),
            ("median margin", lambda s: "n/a" if s["median_margin"] is None else f"{s['median_margin']:+.3f}")]
    from finetune.score import table_text

    return table_text(results, rows, width)


# -- eval ------------------------------------------------------------------------------------------------

def held_out(cfg, card: dict):
    """(eval split pairs, where they came from): `finetune.score.held_out` for the prefer task."""
    from finetune.score import held_out as split_of

    return split_of(cfg, card, "prefer", build_prefer)


def eval_prefer(cfg, acfg: dict, card: dict) -> int:
    """`finetune eval --task prefer`: base (and adapter) preference accuracy on N held-out pairs."""
    from finetune.llm import LLMError, make_llm
    from finetune.models import check_adapter_base, resolve_model

    if cfg.llm_url:
        raise FinetuneError("--llm-url: the prefer task's eval needs the answers' log-probabilities, from a model "
                            "in process; leave --llm-url out")
    held, source = held_out(cfg, card)
    if len(held) == 0:
        raise FinetuneError(f"{cfg.corpus} gives no held-out preference pairs (raise --eval-fraction, or too few "
                            "networks per family)")
    held = held.select(range(min(cfg.n, len(held))))
    base = resolve_model(cfg.model)
    if cfg.adapter:
        check_adapter_base(acfg, card, cfg.model, base, cfg.adapter)
    try:
        llm = make_llm(base, backend="transformers")
    except LLMError as exc:
        raise FinetuneError(str(exc)) from None
    prompts = list(held["prompt"])
    results = {}
    models = [("base", lambda: llm)] + ([("adapter", lambda: llm.with_adapter(cfg.adapter))] if cfg.adapter else [])
    for name, get in models:  # the adapter after the base: peft injects its layers into the base model
        try:
            m = get()
        except LLMError as exc:
            raise FinetuneError(str(exc)) from None
        chosen = answer_logprobs(m.model, m.tok, prompts, list(held["chosen"]), cfg.batch_size)
        rejected = answer_logprobs(m.model, m.tok, prompts, list(held["rejected"]), cfg.batch_size)
        results[name] = {"summary": preference_metrics(chosen, rejected),
                         "pairs": [{"chosen_id": r["chosen_id"], "rejected_id": r["rejected_id"],
                                    "chosen": r["chosen"][0]["content"], "rejected": r["rejected"][0]["content"],
                                    "chosen_logp": round(c, 4), "rejected_logp": round(j, 4),
                                    "margin": round(c - j, 4)} for r, c, j in zip(held, chosen, rejected)]}
    print(metrics_table(results))
    from finetune.evaluate import write_report

    write_report(cfg, card, results, ("base_model", "corpus", "steps", "train_loss", "task"), task="prefer",
                 held_out=source, base=base)
    return 0
