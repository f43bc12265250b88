"""Frozen base model vs LoRA adapter on held-out prompts: does the answer parse, does it run, does it meet the goal?

    python -m finetune eval --model smollm2-135m --adapter runs/lora_fm --corpus corpus_fm --n 10 --out eval.json
    python -m finetune eval --model smollm2-135m --corpus corpus_fm --answer-format widths,diff,code --n 10
    python -m finetune eval --model smollm2-135m --adapter runs/lora_fm --llm-url http://127.0.0.1:8000 --corpus corpus_fm

This is the improve task's eval; `--task score` (the default for an adapter tuned on it) runs
`finetune.score.eval_score` instead (predicted vs measured accuracy: rank correlations, top-k overlap).

The prompts are the eval split of the corpus pairs (source networks no training prompt showed),
made with the adapter's own pair settings from its `run_card.json` (seed, eval fraction, pairs per
parent, answer format and context) so the split matches the one it was trained with.
`--answer-format` (comma-separated) asks each model in each format named instead; `--context
summary` applies to the `widths` prompts (the other formats need the source). Each model answers
greedily; an answer may run to `--max-new-tokens` (default: the format's `token_budget`: `widths` 8
tokens per slot + 16; `diff` half the prompt's tokens + 128, at most 1024; `code` 1.5x the prompt's
tokens + 64, at most 2048).

The models answer through `finetune.llm`'s interface, as the search's do: in process by default
(transformers, batched `--batch-size` prompts at once, the adapter loaded on the same base weights),
or a served model with `--llm-url` (an OpenAI-compatible server that serves the base under
`--model`'s name and the adapter under `--adapter`'s; the adapter folder must still be here, for its
run card; prompt tokens are then estimated at 4 characters a token for the default budget).

Shares per model and format, each of the prompts asked (valid-rate = runs, goal-met rate = goal):
- parsed: the format's parser (`finetune.formats.parse_answer`) accepted the answer, and it became a
  source file: a `widths` list realised by the mutator from the source network
  (`mutator.calls.realize`, every coupled layer updated), `diff` blocks applied to the source, a
  `code` answer's Python that parses (`extract_code`); a failure keeps the parser's reason;
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
    answer_format: str = ""  # comma-separated; "": the adapter's (run_card.json), else widths
    context: str = ""  # "": the adapter's, else source
    class_name: str | None = None  # builds every corpus network; None: each row's class_name column
    llm_url: str | None = None  # an OpenAI-compatible server that serves the models; None: in process
    dtype: str = "float32"  # score task, in process: bfloat16 = what `search run --scorer-dtype bfloat16` scores with
    task: str = ""  # finetune.tasks: "" = the adapter's (run_card.json), else improve
    sample: int = 0  # score task, split rebuilt from a corpus: as the data set was built (default: the adapter's)


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
            "min_steps": recipe.get("min_steps", 0),  # corpora from before min_steps trained without it
            "fast_cpu": "on" if recipe.get("channels_last") and recipe.get("bf16") else "off",  # the corpus's arithmetic
            "seed": recipe.get("seed", 0), "same_recipe_as_corpus": same}


def answer_budget(fmt: str, prompt_tokens: int, slots: int = 0) -> int:
    """New tokens an answer in `fmt` may need (the format's `token_budget`)."""
    from finetune.formats import get_format

    return get_format(fmt).token_budget(prompt_tokens, slots)


def generate(llm, prompts: list[list[dict]], cfg: EvalConfig, desc: str, fmt: str = "code",
             slots: list[int] | None = None) -> list[str]:
    """Greedy answers through the LLM interface (`finetune.llm.generate_many`: batched in process);
    `slots`: each prompt's number of width slots. A batch generates up to its largest budget."""
    from finetune.llm import count_tokens, generate_many

    if cfg.max_new_tokens:
        budgets = [cfg.max_new_tokens] * len(prompts)
    else:  # a whole file is about as long as the one in the prompt; a width list is short
        slots = slots or [0] * len(prompts)
        budgets = [answer_budget(fmt, count_tokens(llm, m[-1]["content"]), n) for m, n in zip(prompts, slots)]
    return generate_many(llm, prompts, max_new_tokens=budgets, desc=desc, batch_size=cfg.batch_size)


def candidate(fmt: str, text: str, src: dict, net, pool, spec: dict) -> tuple[str | None, str, str | None]:
    """(source code, status, error) of one answer: the format's parser and candidate (a width list
    realised from the source network by the mutator, a diff applied to the source)."""
    from finetune.formats import get_format
    from mutator.calls import realize

    def realized(widths: list[int]):
        return realize(pool, src["code"], spec, net.analysis, [widths])[0]

    return get_format(fmt).eval_candidate(text, src["code"], net, realized)


def judge(answers: list[str], pairs: list[dict], by_id: dict, by_sha: dict, settings: dict, cfg: EvalConfig,
          desc: str, fmt: str = "code", nets: dict | None = None) -> list[dict]:
    """One record per answer: parsed into a candidate, sandbox check, profile, goal met."""
    from tqdm import tqdm

    from corpus.evaluator import Evaluator, fast_cpu, recipe_for
    from finetune.pairs import spec_for
    from finetune.prompts import goal_met
    from mutator.calls import validate
    from mutator.sandbox import WorkerPool

    base_spec = spec_for(settings["dataset"])
    recs = []
    profiler = None
    pool = WorkerPool(1, timeout_s=120, memory_mb=6144)
    try:
        for ans, pair in tqdm(list(zip(answers, pairs)), desc=desc, unit="answer"):
            rec = {"source_id": pair["source_id"], "target_id": pair["target_id"], "goal": pair["goal"],
                   "format": fmt, "answer": ans, "parsed": False, "runs": False, "goal_met": False}
            recs.append(rec)
            src = by_id[pair["source_id"]]
            spec = {**base_spec, "class_name": src.get("class_name") or None}  # an answer keeps its source's builder
            code, rec["status"], error = candidate(fmt, ans, src, (nets or {}).get(pair["source_id"]), pool, spec)
            if code is None:
                rec["error"] = f"{rec['status']}: {error or ''}"[:300]
                continue
            rec["parsed"] = True
            sha = hashlib.sha256(code.encode()).hexdigest()
            rec["sha256"] = sha
            rec["same_as_source"] = sha == src.get("sha256")
            v = validate(pool, code, spec)
            if not v.ok:
                rec["status"], rec["error"] = v.status, f"{v.status}: {v.error or ''}"[:300]
                continue
            rec["runs"] = True
            known = by_sha.get(sha) if settings["same_recipe_as_corpus"] else None
            if known is not None:
                row, rec["metrics_from"] = known, f"corpus row {known['id']}"
            else:
                if profiler is None:
                    recipe = recipe_for(settings["dataset"], settings["epochs"], settings["batch_size"],
                                        settings["train_limit"], settings["seed"], min_steps=settings["min_steps"],
                                        **fast_cpu(settings["fast_cpu"]))
                    profiler = Evaluator(settings["dataset"], recipe, timeout_s=cfg.timeout_s)
                row, rec["metrics_from"] = profiler.evaluate(code, class_name=spec["class_name"]), "profiled"
            rec["profile"] = {k: row.get(k) for k in ("status", "error", "accuracy", "flops", "params", "latency_ms")}
            rec["goal_met"] = goal_met(pair["goal"], src, row)
    finally:
        pool.close()
        if profiler is not None:
            profiler.close()
    return recs


def summary(recs: list[dict]) -> dict:
    n = len(recs)
    out = {"prompts": n, **{k: sum(r[k] for r in recs) for k in ("parsed", "runs", "goal_met")},
           "copied_source": sum(bool(r.get("same_as_source")) for r in recs)}
    out["valid_rate"] = round(out["runs"] / max(n, 1), 4)
    out["goal_rate"] = round(out["goal_met"] / max(n, 1), 4)
    fails: dict[str, int] = {}
    for r in recs:
        if not r["runs"]:
            fails[r["status"]] = fails.get(r["status"], 0) + 1
    out["failures"] = fails
    return out


def table(results: dict) -> str:
    names = list(results)
    width = max(18, *(len(n) + 2 for n in names))
    lines = [f"{'':<22}" + "".join(f"{n:>{width}}" for n in names)]
    n = {k: results[k]["summary"]["prompts"] for k in names}
    for key, label in (("parsed", "answer parsed"), ("runs", "valid (runs)"), ("goal_met", "meets the goal"),
                       ("copied_source", "source copied as is")):
        cells = []
        for k in names:
            v = results[k]["summary"][key]
            cells.append(f"{v}/{n[k]} ({100 * v / max(n[k], 1):.0f}%)")
        lines.append(f"{label:<22}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def split_settings(card: dict, cfg: EvalConfig) -> dict:
    """The pair-split settings the held-out prompts are rebuilt with: what the adapter's training data was
    built with (its run card's `data_config`: a data set folder's own settings, else the train flags), then
    the train flags (cards written before `data_config`), then this command's flags. A folder built with
    another --rng-seed or --eval-fraction than the train command's defaults would otherwise be split
    differently here, and networks the adapter was tuned on would be judged as held out."""
    data, flags = card.get("data_config") or {}, card.get("config") or {}
    return {k: data.get(k, flags.get(k, getattr(cfg, k))) for k in ("pairs_per_parent", "eval_fraction", "seed")}


def eval_improve(cfg: EvalConfig, acfg: dict, card: dict, load_pairs=None) -> int:
    """The improve task's eval: base vs adapter answers parsed, run and profiled against their goals.
    load_pairs: `finetune.tasks.load_pairs` (passed in by the task registry, which sits above this module)."""
    from finetune.formats import get_format
    from finetune.llm import LLMError, make_llm
    from finetune.models import check_adapter_base, resolve_model
    from finetune.pairs import check_format, describe_all, load_rows, with_class_name

    pairs_cfg = split_settings(card, cfg)
    formats = [f.strip() for f in cfg.answer_format.split(",") if f.strip()] or \
        [card.get("answer_format") or ("code" if card else "widths")]  # adapters before formats: code
    context = cfg.context or card.get("context") or "source"
    for fmt in formats:
        check_format(fmt, "source")  # a known format
        check_format(fmt, get_format(fmt).context_for(context))
    rows = with_class_name(load_rows(cfg.corpus), cfg.class_name)
    settings = profile_settings(rows, cfg)
    base = cfg.model if cfg.llm_url else resolve_model(cfg.model)  # a server knows its models by name
    if cfg.adapter and not cfg.llm_url:
        check_adapter_base(acfg, card, cfg.model, base, cfg.adapter)
    by_id = {r["id"]: r for r in rows}
    by_sha = {r["sha256"]: r for r in rows if r.get("status") == "ok" and r.get("sha256")}
    asked = {}  # format -> (pairs, prompts, networks)
    for fmt in formats:
        ctx = get_format(fmt).context_for(context)
        dd, _ = load_pairs(cfg.corpus, **pairs_cfg, answer_format=fmt, context=ctx, class_name=cfg.class_name,
                           task="improve")
        held = dd["eval"]
        if len(held) == 0:
            raise FinetuneError(f"corpus {cfg.corpus} gives no held-out {fmt} eval pairs (too few source networks)")
        held = held.select(range(min(cfg.n, len(held))))
        pairs = [{"source_id": r["source_id"], "target_id": r["target_id"], "goal": json.loads(r["goal"])}
                 for r in held]
        nets = describe_all([by_id[i] for i in sorted({p["source_id"] for p in pairs})]) \
            if get_format(fmt).needs_network else {}
        asked[fmt] = (pairs, [r["messages"][:-1] for r in held], nets)

    try:
        llm = make_llm(base, url=cfg.llm_url)
    except LLMError as exc:
        raise FinetuneError(str(exc)) from None
    results = {}

    def ask(name, m):
        for fmt, (pairs, prompts, nets) in asked.items():
            slots = [len(nets[p["source_id"]].slots) if p["source_id"] in nets else 0 for p in pairs]
            ans = generate(m, prompts, cfg, f"{name}, {fmt}", fmt, slots)
            recs = judge(ans, pairs, by_id, by_sha, settings, cfg, f"checking {name} {fmt} answers", fmt, nets)
            results[f"{name}/{fmt}"] = {"format": fmt, "context": get_format(fmt).context_for(context),
                                        "summary": summary(recs), "answers": recs}

    ask("base", llm)
    if cfg.adapter:
        ask("adapter", llm.with_adapter(cfg.adapter))  # the same base weights: asked after the base
    print(table(results))
    write_report(cfg, card, results, ("base_model", "corpus", "steps", "train_loss"), pairs=pairs_cfg, base=base,
                 profile=settings)
    return 0


def write_report(cfg, card: dict, results: dict, card_keys: tuple, **more) -> None:
    """An eval's JSON report at `--out` (nothing without it): the config, `more`, the adapter card's
    `card_keys`, the results and the time."""
    if not cfg.out:
        return
    doc = {**({"task": more.pop("task")} if "task" in more else {}), "config": dataclasses.asdict(cfg), **more,
           "adapter_card": {k: card.get(k) for k in card_keys} if card else None,
           "results": results, "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {cfg.out}")
