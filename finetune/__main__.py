"""Command line of the fine-tuning stage.

    python -m finetune dataset --corpus corpus_fm --out pairs_fm              # pairs with true goals, train/eval
    python -m finetune train --corpus corpus_fm --model smollm2-135m --out runs/lora_fm --max-steps 60
    python -m finetune eval --model smollm2-135m --adapter runs/lora_fm --corpus corpus_fm --n 10 --out eval.json
    python -m finetune merge --model smollm2-135m --adapter runs/lora_fm --out merged_fm   # full model folder
    python -m finetune dataset --task score --corpus corpus_fm --out score_fm     # network -> its accuracy

Tasks (`--task`, finetune.tasks): improve (the default: a network and a goal -> an improved network),
score (one network, relative to its family's reference -> its accuracy in percent, finetune.score) and
prefer (preference pairs of a family's networks, tuned with DPO, finetune.prefer).

Every command also reads `--config FILE.yaml` (keys are the flag names, with - or _); flags given
on the command line override it, unknown keys are an error.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from mutator.cli import RNG_SEED_RENAMED, renamed
from mutator.cli import config_from as fill

_S = argparse.SUPPRESS  # only flags actually given reach the config; the rest keep its defaults


def _opt(p, flag, cls, help, field: str | None = None, **kw):
    """An option whose shown default is the config dataclass's default (of `field`, default the flag's name)."""
    name = field or flag.lstrip("-").replace("-", "_")
    if field:
        kw["dest"] = field
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    shown = "" if field.default is dataclasses.MISSING else f" (default {field.default})"
    p.add_argument(flag, default=_S, help=help + shown, **kw)


def make_parser() -> argparse.ArgumentParser:
    from finetune.evaluate import EvalConfig
    from finetune.pairs import DatasetConfig
    from corpus.evaluator import FAST_CPU
    from finetune.train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dataset", help="training pairs (messages + true goals) from a corpus, train/eval split")
    _opt(d, "--corpus", DatasetConfig, "corpus folder written by python -m corpus build (a,b: several, concatenated)")
    _opt(d, "--out", DatasetConfig, "output folder (datasets.load_from_disk opens it)")
    _task_args(d, DatasetConfig, _known())
    _pairs_args(d, DatasetConfig)
    _opt(d, "--targets", DatasetConfig, "any: each target a random variant that meets a goal; best: the most "
         "accurate of --best-of variants drawn (rejection sampling), with an accuracy goal", choices=["any", "best"])
    _opt(d, "--best-of", DatasetConfig, "with --targets best: variants drawn per target", type=int)
    _opt(d, "--history", DatasetConfig, "with --targets best (widths): show up to this many of the other, less "
         "accurate drawn variants as the prompt's Tried: list, as the search does", type=int)
    _opt(d, "--reuse", DatasetConfig, "keep OUT when it already holds these data (built with the same settings "
         "from the same corpus rows); else build", action="store_true")
    d.add_argument("--config", default=None, help="YAML file with any of these options")

    t = sub.add_parser("train", help="LoRA fine-tuning with trl's SFTTrainer, loss on the answer only")
    _opt(t, "--corpus", TrainConfig, "corpus folder, or a pairs folder from python -m finetune dataset")
    _opt(t, "--model", TrainConfig, "smollm2-135m, a local model folder, or a Hub id")
    _opt(t, "--out", TrainConfig, "output folder: adapter, run_card.json, checkpoints")
    _task_args(t, TrainConfig, f"{_known()}; default: a data set folder's own, else improve")
    _opt(t, "--beta", TrainConfig, "DPO tasks (prefer): how far the tuned model may move from the base", type=float)
    _opt(t, "--epochs", TrainConfig, "training epochs (ignored when --max-steps is given)", type=float)
    _opt(t, "--max-steps", TrainConfig, "optimizer steps; -1: run --epochs", type=int)
    _opt(t, "--lr", TrainConfig, "learning rate", type=float)
    _opt(t, "--lora-r", TrainConfig, "LoRA rank", type=int)
    _opt(t, "--lora-alpha", TrainConfig, "LoRA alpha", type=int)
    _opt(t, "--lora-dropout", TrainConfig, "LoRA dropout", type=float)
    _opt(t, "--target-modules", TrainConfig, "all-linear, or comma-separated module names (q_proj,v_proj)")
    _opt(t, "--max-length", TrainConfig, "pairs longer than this many tokens are dropped; auto: the longest "
         "pair rounded up to 64, capped by the model's context", type=_max_length)
    _opt(t, "--batch-size", TrainConfig, "sequences per device step", type=int)
    _opt(t, "--grad-accum", TrainConfig, "gradient accumulation steps", type=int)
    _opt(t, "--load-in-4bit", TrainConfig, "QLoRA: 4-bit NF4 base through bitsandbytes (CUDA only)",
         action="store_true")
    _opt(t, "--merge", TrainConfig, "also write the base with the adapter merged in to OUT/merged",
         action="store_true")
    _opt(t, "--resume", TrainConfig, "continue from the last checkpoint in OUT (written with the same recipe "
         "and rows, else refused)", action="store_true")
    _opt(t, "--reuse", TrainConfig, "keep OUT when it already holds this training (the same rows, recipe and "
         "length: its run card says so); else train", action="store_true")
    _opt(t, "--gradient-checkpointing", TrainConfig, "recompute activations to save memory",
         action="store_true")
    _opt(t, "--batching", TrainConfig, "auto (padding-free with flash-attn on CUDA, else grouped), "
         "padding-free, grouped (padded, similar lengths together) or padded")
    _opt(t, "--fast-cpu", TrainConfig, "on a CPU: train in bf16 autocast (fp32 master weights; ~1.7-2x on CPUs "
         "with bf16 instructions, slower elsewhere): auto (on where the CPU has them), on, off",
         choices=FAST_CPU)
    _opt(t, "--logging-steps", TrainConfig, "log the loss every N steps", type=int)
    _opt(t, "--save-steps", TrainConfig, "write a checkpoint every N steps", type=int)
    _opt(t, "--eval-steps", TrainConfig, "also compute the eval loss every N steps (on the --eval-limit "
         "subset; 0: at the end only)", type=int)
    _opt(t, "--eval-limit", TrainConfig, "held-out pairs the final eval loss is computed on (0: no eval, "
         "-1: all)", type=int)
    _pairs_args(t, TrainConfig)
    t.add_argument("--config", default=None, help="YAML file with any of these options")

    e = sub.add_parser("eval", help="base model vs adapter on held-out prompts: code, runs, meets the goal")
    _opt(e, "--model", EvalConfig, "base model: smollm2-135m, a local folder, or a Hub id")
    _opt(e, "--adapter", EvalConfig, "peft adapter folder from python -m finetune train")
    _opt(e, "--corpus", EvalConfig, "corpus folder the prompts and source metrics come from (score task: "
         "also a data set folder from python -m finetune dataset --task score, its eval split)")
    _task_args(e, EvalConfig, f"{_known()}; default: the adapter's, else improve")
    _opt(e, "--n", EvalConfig, "number of held-out prompts", type=int)
    _opt(e, "--out", EvalConfig, "JSON file for the table and every answer")
    _opt(e, "--dataset", EvalConfig, "data set to profile answers on (default: the corpus's)")
    _opt(e, "--train-limit", EvalConfig, "proxy-training images (default: the corpus's recipe)", type=int)
    _opt(e, "--max-new-tokens", EvalConfig, "answer length limit; 0: 1.5x the prompt's source", type=int)
    _opt(e, "--batch-size", EvalConfig, "prompts generated at once", type=int)
    _opt(e, "--timeout-s", EvalConfig, "time limit per profiled answer", type=float)
    _opt(e, "--llm-url", EvalConfig, "OpenAI-compatible server serving --model (and --adapter by its name); "
         "default: in process")
    _opt(e, "--dtype", EvalConfig, "score task, in process: float32 | bfloat16 (the adapter merged, as "
         "search run --scorer-dtype bfloat16 scores)")
    _pairs_args(e, EvalConfig)
    e.add_argument("--config", default=None, help="YAML file with any of these options")

    m = sub.add_parser("merge", help="base model with the adapter merged in, as a plain transformers folder "
                                     "(to convert to GGUF for llama.cpp, or serve with vLLM)")
    m.add_argument("--model", required=True, help="base model: smollm2-135m, a local folder, or a Hub id")
    m.add_argument("--adapter", default=None, help="peft adapter folder (omit to export the base alone)")
    m.add_argument("--out", required=True, help="new folder to write")
    return parser


def _max_length(text: str):
    """A number of tokens, or the text as given (auto; anything else is refused by check_config)."""
    try:
        return int(text)
    except ValueError:
        return text


def _known() -> str:
    from finetune.tasks import task_names

    names = task_names()
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _task_args(p, cls, which: str) -> None:
    _opt(p, "--task", cls, f"what the model is tuned for: {which}")
    _opt(p, "--sample", cls, "score task: a random subset of this many labelled corpus rows (--rng-seed; 0: all); "
         "prefer task: at most this many pairs (0: 4 per labelled row, at most 20000)", type=int)


def _pairs_args(p, cls) -> None:
    from finetune.formats import format_names

    _opt(p, "--pairs-per-parent", cls, "at most this many pairs per source network", type=int)
    _opt(p, "--eval-fraction", cls, "share of source networks held out for eval", type=float)
    _opt(p, "--rng-seed", cls, "rng seed for pair sampling, the split and training", field="seed", metavar="N", type=int)
    renamed(p, "--seed", RNG_SEED_RENAMED)
    _opt(p, "--answer-format", cls, f"one of {', '.join(format_names())}: widths (the list of channel widths), "
         "diff (SEARCH/REPLACE blocks) or code (the whole file)" + (", comma-separated for several; default: the adapter's" if cls.__name__ ==
                                   "EvalConfig" else ""))
    _opt(p, "--context", cls, "what the prompt shows: source (the file) or summary (a per-layer table; "
         "widths only)")
    _opt(p, "--class-name", cls, "class or factory function that builds every corpus network (default: each "
         "row's class_name, as given to mutator generate)")


def config_from(cls, args):
    """cls(defaults < YAML file < flags given): `mutator.cli.config_from` (the one way every command fills
    its config), errors as FinetuneError."""
    from finetune.pairs import FinetuneError

    return fill(cls, vars(args), getattr(args, "config", None), error=FinetuneError)


def cmd_dataset(args) -> int:
    from finetune.pairs import DatasetConfig
    from finetune.tasks import main_dataset

    return main_dataset(config_from(DatasetConfig, args))


def cmd_train(args) -> int:
    from finetune.train import TrainConfig, main_train

    return main_train(config_from(TrainConfig, args))


def cmd_eval(args) -> int:
    from finetune.evaluate import EvalConfig
    from finetune.tasks import main_eval

    return main_eval(config_from(EvalConfig, args))


def cmd_merge(args) -> int:
    from finetune.models import merge

    out = merge(args.model, args.adapter, args.out)
    print(f"wrote {'the merged model' if args.adapter else 'the base model'} to {out}")
    return 0


COMMANDS = {"dataset": cmd_dataset, "train": cmd_train, "eval": cmd_eval, "merge": cmd_merge}


def main(argv=None) -> int:
    from finetune.pairs import FinetuneError
    from mutator.cli import run_command

    return run_command(make_parser(), COMMANDS, argv, errors=(FinetuneError,),
                       interrupted="interrupted; checkpoints written so far are kept (train --resume continues)")


if __name__ == "__main__":
    sys.exit(main())
