"""Frozen base model vs LoRA adapter on held-out prompts: does the answer hold code, does it run, does it meet the goal?

    python -m finetune eval --model smollm2-135m --adapter runs/lora_fm --corpus corpus_fm --n 10 --out eval.json

The prompts are the eval split of the corpus pairs (source networks no training prompt showed),
made with the adapter's own pair settings from its `run_card.json` (seed, eval fraction, pairs per
parent) so the split matches the one it was trained with. Each model answers greedily; an answer
may run to `--max-new-tokens` (default: 1.5x the prompt's source tokens + 64, at most 2048).

Three shares per model, each of the prompts asked:
- code: `extract_code` found Python that parses;
- runs: that code builds and runs forward at the data set's input shape with the right number of
  classes, in a sandboxed worker (`mutator.analysis:validate`: memory and time limits, no network
  where bubblewrap is available; see `mutator.sandbox` for what it does not cover);
- goal: the profiled answer meets the prompt's goal relative to the source row's corpus metrics
  (`finetune.prompts.goal_met`). Profiling uses the corpus's own recipe (data set, train limit,
  epochs, seed) unless `--dataset` / `--train-limit` say otherwise; an answer whose code equals a
  corpus row's code (same SHA-256) takes that row's metrics instead of being trained again.
  Latency goals compare a fresh measurement against the corpus's: on a busy or different machine
  they are noisy.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.pairs import FinetuneError

IMAGE_SIZE = {"fashion-mnist": 28, "mnist": 28, "cifar10": 32, "cifar100": 32}  # corpus.data's data sets


@dataclass(frozen=True)
class EvalConfig:
    model: str
    corpus: str
    adapter: str | None = None
    n: int = 50
    out: str | None = None
    dataset: str | None = None
    train_limit: int | None = None
    max_new_tokens: int = 0
    batch_size: int = 4
    pairs_per_parent: int = 4
    eval_fraction: float = 0.1
    seed: int = 0
    timeout_s: float = 600.0


def profile_settings(rows: list[dict], cfg: EvalConfig) -> dict:
    """Data set and recipe to profile answers with: the corpus's, unless flags override."""
    ok = [r for r in rows if r.get("status") == "ok"]
    recipe = json.loads(ok[0]["recipe"]) if ok and ok[0].get("recipe") else {}
    dataset = cfg.dataset or (ok[0].get("dataset") if ok else None)
    if not dataset:
        raise FinetuneError("the corpus does not say which data set it was profiled on: pass --dataset")
    if dataset not in IMAGE_SIZE:
        raise FinetuneError(f"unknown data set {dataset!r} (known: {', '.join(IMAGE_SIZE)})")
    same = cfg.dataset in (None, ok[0].get("dataset") if ok else None) and cfg.train_limit in (
        None, recipe.get("train_limit"))
    return {"dataset": dataset,
            "train_limit": cfg.train_limit if cfg.train_limit is not None else recipe.get("train_limit", 0),
            "epochs": recipe.get("epochs", 1.0), "batch_size": recipe.get("batch_size", 256),
            "seed": recipe.get("seed", 0), "same_recipe_as_corpus": same}


def generate(model, tok, prompts: list[list[dict]], cfg: EvalConfig, desc: str) -> list[str]:
    """Greedy answers, batched with left padding."""
    import torch
    from tqdm import tqdm

    tok.padding_side = "left"
    out = []
    bar = tqdm(total=len(prompts), desc=desc, unit="answer")
    for i in range(0, len(prompts), cfg.batch_size):
        batch = prompts[i:i + cfg.batch_size]
        enc = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
               for m in batch]
        if cfg.max_new_tokens:
            budget = cfg.max_new_tokens
        else:  # the answer is a whole source file: about as long as the one in the prompt
            src_tokens = max(len(tok(m[-1]["content"])["input_ids"]) for m in batch)
            budget = min(2048, int(1.5 * src_tokens) + 64)
        padded = tok.pad({"input_ids": enc}, return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**padded.to(model.device), max_new_tokens=budget, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, padded["input_ids"].shape[1]:]:
            out.append(tok.decode(row, skip_special_tokens=True))
        bar.update(len(batch))
    bar.close()
    return out


def judge(answers: list[str], pairs: list[dict], by_id: dict, by_sha: dict, settings: dict, cfg: EvalConfig,
          desc: str) -> list[dict]:
    """One record per answer: code found, sandbox check, profile, goal met."""
    from tqdm import tqdm

    from corpus.build import BuildConfig, Profiler
    from corpus.data import info
    from finetune.prompts import extract_code, goal_met
    from mutator.calls import validate
    from mutator.sandbox import WorkerPool

    size = IMAGE_SIZE[settings["dataset"]]
    spec = {"in_shape": [1, info(settings["dataset"])["channels"], size, size],
            "classes": info(settings["dataset"])["classes"], "class_name": None}
    recs = []
    profiler = None
    pool = WorkerPool(1, timeout_s=120, memory_mb=6144)
    try:
        for ans, pair in tqdm(list(zip(answers, pairs)), desc=desc, unit="answer"):
            rec = {"source_id": pair["source_id"], "target_id": pair["target_id"], "goal": pair["goal"],
                   "answer": ans, "code": False, "runs": False, "goal_met": False}
            recs.append(rec)
            code = extract_code(ans)
            if code is None:
                rec["error"] = "no code in the answer"
                continue
            rec["code"] = True
            sha = hashlib.sha256(code.encode()).hexdigest()
            rec["sha256"] = sha
            rec["same_as_source"] = sha == by_id[pair["source_id"]].get("sha256")
            v = validate(pool, code, spec)
            if not v.ok:
                rec["error"] = f"{v.status}: {v.error or ''}"[:300]
                continue
            rec["runs"] = True
            known = by_sha.get(sha) if settings["same_recipe_as_corpus"] else None
            if known is not None:
                row, rec["metrics_from"] = known, f"corpus row {known['id']}"
            else:
                if profiler is None:
                    profiler = Profiler(BuildConfig(variants="", dataset=settings["dataset"], out="",
                                                    train_limit=settings["train_limit"], epochs=settings["epochs"],
                                                    batch_size=settings["batch_size"], seed=settings["seed"],
                                                    timeout_s=cfg.timeout_s))
                row, rec["metrics_from"] = profiler.profile(code), "profiled"
            rec["profile"] = {k: row.get(k) for k in ("status", "error", "accuracy", "flops", "params", "latency_ms")}
            rec["goal_met"] = goal_met(pair["goal"], by_id[pair["source_id"]], row)
    finally:
        pool.close()
        if profiler is not None:
            profiler.close()
    return recs


def summary(recs: list[dict]) -> dict:
    n = len(recs)
    return {"prompts": n, **{k: sum(r[k] for r in recs) for k in ("code", "runs", "goal_met")},
            "copied_source": sum(bool(r.get("same_as_source")) for r in recs)}


def table(results: dict) -> str:
    names = list(results)
    lines = [f"{'':<22}" + "".join(f"{n:>18}" for n in names)]
    n = {k: results[k]["summary"]["prompts"] for k in names}
    for key, label in (("code", "code extracted"), ("runs", "builds and runs"), ("goal_met", "meets the goal"),
                       ("copied_source", "source copied as is")):
        cells = []
        for k in names:
            v = results[k]["summary"][key]
            cells.append(f"{v}/{n[k]} ({100 * v / max(n[k], 1):.0f}%)")
        lines.append(f"{label:<22}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def main_eval(cfg: EvalConfig) -> int:
    print(f"config: {cfg}", file=sys.stderr)
    if cfg.n < 1 or cfg.batch_size < 1:
        raise FinetuneError("--n and --batch-size must be at least 1")
    if cfg.out and Path(cfg.out).is_dir():
        raise FinetuneError(f"--out {cfg.out} is a folder; give a .json file path")
    from finetune.models import check_adapter_base, load_model, load_tokenizer, read_adapter, resolve_model
    from finetune.pairs import load_rows
    from finetune.train import load_pairs

    acfg, card = read_adapter(cfg.adapter) if cfg.adapter else ({}, {})
    pc = card.get("config", {})
    pairs_cfg = {k: pc.get(k, getattr(cfg, k)) for k in ("pairs_per_parent", "eval_fraction", "seed")}
    rows = load_rows(cfg.corpus)
    settings = profile_settings(rows, cfg)
    base = resolve_model(cfg.model)
    if cfg.adapter:
        check_adapter_base(acfg, card, cfg.model, base, cfg.adapter)
    dd, _ = load_pairs(cfg.corpus, **pairs_cfg)
    held = dd["eval"]
    if len(held) == 0:
        raise FinetuneError(f"corpus {cfg.corpus} gives no held-out eval pairs (too few source networks)")
    held = held.select(range(min(cfg.n, len(held))))
    pairs = [{"source_id": r["source_id"], "target_id": r["target_id"], "goal": json.loads(r["goal"])} for r in held]
    prompts = [r["messages"][:-1] for r in held]
    by_id = {r["id"]: r for r in rows}
    by_sha = {r["sha256"]: r for r in rows if r.get("status") == "ok" and r.get("sha256")}

    tok = load_tokenizer(base)
    model = load_model(base)
    model.eval()
    answers = {"base": generate(model, tok, prompts, cfg, "base model")}
    if cfg.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter)
        model.eval()
        answers["adapter"] = generate(model, tok, prompts, cfg, "with adapter")
    results = {}
    for name, ans in answers.items():
        recs = judge(ans, pairs, by_id, by_sha, settings, cfg, f"checking {name} answers")
        results[name] = {"summary": summary(recs), "answers": recs}
    print(table(results))
    if cfg.out:
        keys = ("base_model", "corpus", "steps", "train_loss")
        doc = {"config": dataclasses.asdict(cfg), "pairs": pairs_cfg, "base": base, "profile": settings,
               "adapter_card": {k: card.get(k) for k in keys} if card else None,
               "results": results, "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {cfg.out}")
    return 0
