"""The fine-tuning tasks, by name: what `finetune dataset|train|eval --task NAME` builds, trains and evaluates.

    from finetune.tasks import get_task
    task = get_task("score")                      # FinetuneError for an unknown name
    dd, info = task.build(DatasetConfig(corpus="corpus_fm", task="score"), progress=False)
    task.evaluate(eval_config, adapter_config, run_card)      # the eval command's work (exit code)

- `improve` (the default): (network, goal) -> an improved network, `finetune.pairs` (answer formats
  widths / diff / code), judged by building and profiling the answers (`finetune.evaluate`);
- `score`: one network described relative to its family's reference -> its accuracy in percent,
  `finetune.score`, judged by rank correlation with the measured accuracies;
- `prefer`: a family's reference -> per-slot widths relative to it, as preference pairs (the more
  accurate of two networks chosen), `finetune.prefer`, tuned with DPO and judged by how often the model
  gives the chosen answer the higher log-probability.

Every task's data set is a `datasets.DatasetDict` (train / eval) with the `columns` its trainer reads
(`trainer`: "sft", `finetune train` tunes on `messages` (system, user, assistant), loss on the answer
only; "dpo": conversational `prompt` / `chosen` / `rejected`) and a `finetune_dataset.json` whose `task`
names it (a folder without one is an `improve` folder, as written before tasks existed).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import json
import sys
from pathlib import Path

from finetune.pairs import FinetuneError

DEFAULT_TASK = "improve"


@dataclass(frozen=True)
class Task:
    name: str
    help: str
    build: Callable  # (DatasetConfig, progress) -> (DatasetDict train/eval with messages, info dict)
    report: Callable  # (DatasetConfig, info) -> the line `finetune dataset` prints
    evaluate: Callable  # (EvalConfig, adapter_config, run_card) -> exit code
    trainer: str = "sft"  # how `finetune train` tunes on it: a key of finetune.train.TRAINERS (sft, dpo)
    columns: tuple[str, ...] = ("messages",)  # what a data set folder of the task must have


def _improve_build(cfg, progress=False):
    from finetune.pairs import build_pairs

    if cfg.sample:
        others = " or ".join(n for n in TASKS if n != "improve")
        raise FinetuneError(f"--sample applies to --task {others} (the improve task's pairs use every ok row)")
    return build_pairs(cfg, progress)


def _improve_report(cfg, info):
    from finetune.pairs import pairs_report

    return pairs_report(cfg, info)


def _improve_eval(cfg, acfg, card):
    from finetune.evaluate import eval_improve

    return eval_improve(cfg, acfg, card, load_pairs=load_pairs)


def _score_build(cfg, progress=False):
    from finetune.score import build_score

    return build_score(cfg, progress)


def _score_report(cfg, info):
    from finetune.score import score_report

    return score_report(cfg, info)


def _score_eval(cfg, acfg, card):
    from finetune.score import eval_score

    return eval_score(cfg, acfg, card)


def _prefer_build(cfg, progress=False):
    from finetune.prefer import build_prefer

    return build_prefer(cfg, progress)


def _prefer_report(cfg, info):
    from finetune.prefer import prefer_report

    return prefer_report(cfg, info)


def _prefer_eval(cfg, acfg, card):
    from finetune.prefer import eval_prefer

    return eval_prefer(cfg, acfg, card)


TASKS: dict[str, Task] = {
    "improve": Task("improve", "(network, goal) -> an improved network in --answer-format",
                    _improve_build, _improve_report, _improve_eval),
    "score": Task("score", "one network relative to its family's reference -> its accuracy in percent",
                  _score_build, _score_report, _score_eval),
    "prefer": Task("prefer", "a family's reference -> per-slot widths relative to it, preference pairs (DPO)",
                   _prefer_build, _prefer_report, _prefer_eval, trainer="dpo", columns=("prompt", "chosen", "rejected")),
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str | None) -> Task:
    """The task by name ("" or None: the default); FinetuneError for an unknown one."""
    name = name or DEFAULT_TASK
    if name not in TASKS:
        raise FinetuneError(f"unknown --task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def task_of(given: str | None, recorded: str | None, what: str = "") -> Task:
    """The task a command works on: `given` (the --task flag; "" or None: not given), else the one
    `recorded` by its input (a data set folder, an adapter's run card: pass "improve" for one written
    before tasks existed, None when there is none), else the default. A given task that disagrees with
    a recorded one is an error (`what` names the input)."""
    if given and recorded and given != recorded:
        get_task(given)
        raise FinetuneError(f"--task {given}: {what} is for the {recorded} task")
    return get_task(given or recorded)


# The commands that dispatch on a task live here, above every task's implementation (no import cycle).


def current_data(cfg) -> dict | None:
    """`finetune dataset --reuse`: OUT's `finetune_dataset.json` when OUT was built with these settings from
    these corpus rows (their fingerprint), else None."""
    from finetune.pairs import corpus_fingerprint, load_rows, with_class_name

    try:
        info = json.loads((Path(cfg.out) / "finetune_dataset.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return None
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "reuse"}
    if {k: v for k, v in info["config"].items() if k != "reuse"} != settings:
        return None
    rows = with_class_name(load_rows(cfg.corpus), cfg.class_name)
    return info if info.get("corpus_fingerprint") == corpus_fingerprint(rows) else None


def main_dataset(cfg) -> int:
    """`finetune dataset`: the task's train/eval data set and `finetune_dataset.json` in OUT."""
    import sys

    import datasets

    print(f"config: {cfg}", file=sys.stderr)
    task = get_task(cfg.task)
    out = Path(cfg.out)
    if not cfg.out:
        raise FinetuneError("missing --out (a flag or a key in --config)")
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} exists and is not a folder")
    if cfg.reuse and (kept := current_data(cfg)):
        print(f"{out} already holds these data ({kept.get('corpus_rows')} corpus rows, the same settings): "
              "kept (--reuse)")
        return 0
    dd, info = task.build(cfg, progress=True)
    datasets.disable_progress_bars()
    dd.save_to_disk(str(out))
    (out / "finetune_dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    print(task.report(cfg, info))
    return 0


def main_eval(cfg) -> int:
    """`finetune eval`: the task's evaluation (`--task`, else the adapter's, else improve)."""
    print(f"config: {cfg}", file=sys.stderr)
    if cfg.n < 1 or cfg.batch_size < 1:
        raise FinetuneError("--n and --batch-size must be at least 1")
    if cfg.out and Path(cfg.out).is_dir():
        raise FinetuneError(f"--out {cfg.out} is a folder; give a .json file path")
    from finetune.models import read_adapter

    acfg, card = read_adapter(cfg.adapter) if cfg.adapter else ({}, {})
    task = task_of(cfg.task, (card.get("task") or "improve") if card else None, f"adapter {cfg.adapter}")
    return task.evaluate(cfg, acfg, card)


def load_pairs(corpus: str, pairs_per_parent: int, eval_fraction: float, seed: int, answer_format: str = "widths",
               context: str = "source", progress: bool = False, class_name: str | None = None, task: str = "",
               sample: int = 0):
    """(DatasetDict train/eval with the task's `columns`, info): from a data set folder written by `finetune dataset`
    (its own task and format, `info["task"]` / `info["answer_format"]`; a `task` given that disagrees is an
    error) or built from a corpus for `task` (default improve: pairs in `answer_format` / `context`)."""
    import datasets

    from finetune.pairs import DatasetConfig

    p = Path(corpus)
    if (p / "dataset_dict.json").exists():
        try:
            dd = datasets.load_from_disk(str(p))
        except Exception as exc:
            raise FinetuneError(f"{corpus} is not a readable pairs dataset ({type(exc).__name__})") from None
        info_file = p / "finetune_dataset.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {"corpus": str(p.resolve())}
        kind = task_of(task, info.get("task") or "improve", f"data set {corpus}")
        if "train" not in dd or not set(kind.columns) <= set(dd["train"].column_names):
            raise FinetuneError(f"{corpus} is not a {kind.name} data set (needs a train split with "
                                f"{', '.join(kind.columns)} column{'s' if len(kind.columns) > 1 else ''})")
        if len(dd["train"]) == 0:
            raise FinetuneError(f"pairs dataset {corpus} has no training pairs")
        return dd, info
    kind = task_of(task, None)
    cfg = DatasetConfig(corpus=corpus, pairs_per_parent=pairs_per_parent, eval_fraction=eval_fraction, seed=seed,
                        answer_format=answer_format, context=context, class_name=class_name, task=kind.name,
                        sample=sample)
    return kind.build(cfg, progress)
