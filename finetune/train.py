"""LoRA fine-tuning of a causal LM on corpus pairs, with trl's SFTTrainer (DPOTrainer for a task whose
`trainer` is "dpo", the prefer task: `TRAINERS`; the same LoRA, steps, run card and checkpoints).

    python -m finetune train --corpus corpus_fm --model smollm2-135m --out runs/lora_fm --max-steps 60

`--corpus` is a corpus folder (`python -m corpus build`; pairs are made as `python -m finetune
dataset` makes them, with the same flags) or a pairs folder written by `python -m finetune dataset`.

Loss is on the answer only, through the model's own chat template:
- a template with `{% generation %}` markers (or one trl knows how to patch): the `messages`
  column as is, `assistant_only_loss=True`;
- otherwise (SmolLM2's ChatML template has none): conversational prompt/completion rows (prompt =
  system + user, completion = the assistant message) and `completion_only_loss=True`. trl renders
  the prompt with the generation prompt (`<|im_start|>assistant\\n`) and masks every token up to
  where prompt and prompt+completion diverge, so the loss covers the answer and its end-of-turn
  token(s) and nothing the user wrote.

Batching (`--batching auto`): padding-free where the attention has variable-length kernels (CUDA
with flash-attn installed: the sequences of a batch are concatenated, `position_ids` restart at
each one, no pad token is computed); elsewhere padded batches of similar length
(`group_by_length`: rows sorted by length within random mega-batches of 50 batches, so little is
padded). Padding-free also runs on sdpa/eager -- transformers then builds a block-diagonal mask
from the `position_ids`, trl turns the KV cache off in training as that detection needs -- but
the mask is dense over the whole concatenation, so on a CPU it is slower than short padded
batches (`benchmarks/finetune_throughput.py` measures both). Examples longer than `--max-length`
tokens are dropped beforehand and counted, in every mode (a truncated answer would teach the model
to stop mid-file). `--max-length auto` (the default) is the longest pair (train and eval), rounded up
to a multiple of 64, capped by the model's context (`max_position_embeddings`): nothing is dropped
unless a pair does not fit the model at all; it is an error only when none fits. Gradient
checkpointing is off unless asked for (trl's default is on): it recomputes each layer's forward in
the backward pass. On a CPU the attention scores are materialised, so a step's memory grows with batch x length^2;
before training, the longest batch's activations are estimated (`activation_bytes`) and a warning
names `--gradient-checkpointing` when they exceed the memory available.

Outputs in OUT: the peft adapter (`adapter_config.json`, `adapter_model.safetensors`) and the
tokenizer, `run_card.json` (base model, corpus fingerprint, config, loss history, library
versions), `train_config.json`, `checkpoint-*/` (for `--resume`), TensorBoard logs in `OUT/runs`
when tensorboard is installed, and with `--merge` the merged model in `OUT/merged/`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.pairs import FinetuneError


@dataclass(frozen=True)
class TrainConfig:
    corpus: str
    model: str
    out: str
    epochs: float = 3.0
    max_steps: int = -1
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    max_length: int | str = "auto"  # or a number of tokens
    batch_size: int = 4
    grad_accum: int = 1
    load_in_4bit: bool = False
    merge: bool = False
    resume: bool = False
    reuse: bool = False  # OUT already holds this training (same recipe, same rows): not trained again
    seed: int = 0
    pairs_per_parent: int = 4
    eval_fraction: float = 0.1
    gradient_checkpointing: bool = False
    batching: str = "auto"
    logging_steps: int = 5
    save_steps: int = 50
    eval_limit: int = 32
    eval_steps: int = 0  # also evaluate (on the --eval-limit subset) every N steps; 0: at the end only
    answer_format: str = "widths"
    context: str = "source"
    class_name: str | None = None  # builds every corpus network; None: each row's class_name column
    task: str = ""  # finetune.tasks: "" = a data set folder's own task, else improve
    sample: int = 0  # score task, built from a corpus: a random subset of this many labelled rows (0: all)
    beta: float = 0.1  # DPO tasks (prefer): how far the tuned model may move from the reference (the base)
    # on a CPU: bf16 autocast (mixed precision, fp32 master weights and adapter); auto = on where the CPU has bf16
    # instructions (corpus.evaluator.cpu_has_bf16). CUDA uses bf16/fp16 always. A run stores the resolved value.
    fast_cpu: str = "off"


def versions() -> dict:
    from mutator.records import versions as of

    return of("torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf", "bitsandbytes")


def loss_mode(tokenizer) -> str:
    """'assistant_only' when the chat template marks assistant turns (or trl can patch it), else
    'completion_only' (prompt/completion rows)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return "assistant_only"
    try:
        patched = get_training_chat_template(tokenizer)
    except (ValueError, TypeError):
        patched = None
    return "assistant_only" if patched else "completion_only"


def to_trl_rows(ds, mode: str):
    """The columns trl reads for `mode`: `messages`, or conversational `prompt` / `completion`."""
    keep = ["messages"]
    if mode == "completion_only":
        ds = ds.map(lambda ex: {"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]})
        keep = ["prompt", "completion"]
    return ds.select_columns(keep)


def drop_long(ds, tokenizer, max_length: int, lengths: list[int] | None = None):
    """(rows whose whole conversation fits in max_length tokens, number dropped, every row's length)."""
    lengths = token_lengths(ds, tokenizer) if lengths is None else lengths
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    return ds.select(keep), len(ds) - len(keep), lengths


def token_lengths(ds, tokenizer) -> list[int]:
    """Tokens of each row's whole conversation, through the chat template (a preference row, with
    `prompt` / `chosen` / `rejected` columns: the prompt with its longer answer)."""
    def n(m):
        return len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])

    if "messages" in ds.column_names:
        return [n(m) for m in ds["messages"]]
    return [max(n(p + c), n(p + r)) for p, c, r in zip(ds["prompt"], ds["chosen"], ds["rejected"])]


def model_context(path: str) -> int | None:
    """The longest sequence the model's config allows (max_position_embeddings or its aliases), or None."""
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    for c in (conf, getattr(conf, "text_config", None)):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(c, name, None)
            if isinstance(v, int) and v > 0:
                return v
    return None


def activation_bytes(conf, batch: int, length: int, checkpointing: bool, bytes_per_value: int = 4) -> int:
    """Rough peak of what one training step keeps for its backward pass on a CPU (attention materialised),
    for a decoder config (`num_hidden_layers`, `num_attention_heads`, `hidden_size`, `intermediate_size`,
    `vocab_size`) and the longest batch (`batch` rows padded to `length` tokens).

    Per layer: the attention scores and their softmax (batch x heads x length^2 each) plus about
    16 hidden-size and 6 intermediate-size values per token (norms, q/k/v, rotary, LoRA dropout copies,
    the MLP); on top, the logits, their log-softmax and its gradient (3 x tokens x vocab). Gradient
    checkpointing keeps only each layer's input and recomputes one layer at a time. Calibrated on
    SmolLM2-135M here: batch 8 x 818 tokens was OOM-killed at 21 GB without checkpointing (estimate
    28 GiB) and used ~6 GB with it (estimate 5 GiB, plus the model and optimizer); batch 8 x 393 tokens
    trained on the 24 GB machine (estimate 11 GiB)."""
    layers, heads = conf.num_hidden_layers, conf.num_attention_heads
    hidden, inter, vocab = conf.hidden_size, conf.intermediate_size, conf.vocab_size
    tokens = batch * length
    layer = 2 * batch * heads * length * length + tokens * (16 * hidden + 6 * inter)
    logits = 3 * tokens * vocab
    kept = layers * tokens * hidden + layer if checkpointing else layers * layer
    return (kept + logits) * bytes_per_value


def memory_warning(cfg: TrainConfig, base: str, length: int) -> str | None:
    """A one-line warning when the estimated activations of the longest batch do not fit in the memory
    available now (CPU training only: a GPU's attention kernels do not materialise the scores)."""
    import psutil
    import torch
    from transformers import AutoConfig

    if torch.cuda.is_available():
        return None
    try:
        conf = AutoConfig.from_pretrained(base)
        conf = getattr(conf, "text_config", None) or conf
        need = activation_bytes(conf, cfg.batch_size, length, cfg.gradient_checkpointing)
    except (OSError, ValueError, AttributeError, TypeError):
        return None  # not a config this estimate knows
    free = psutil.virtual_memory().available
    if need <= free:
        return None
    hint = "a smaller --batch-size" if cfg.gradient_checkpointing else \
        "--gradient-checkpointing or a smaller --batch-size"
    return (f"warning: the longest batch ({cfg.batch_size} x {length} tokens) needs about {need / 2**30:.0f} GiB "
            f"for its backward pass, {free / 2**30:.0f} GiB is available: expect the OOM killer; use {hint}")


def resolve_max_length(max_length: int | str, lengths: list[int], context: int | None,
                       eval_lengths: list[int] = ()) -> int:
    """`--max-length` in tokens: as given, or for auto the longest pair (training or eval) rounded up to a
    multiple of 64, capped by the model's context. One-line errors when no training pair can fit."""
    ctx = f"the model's context of {context} tokens" if context else None
    if max_length == "auto":
        limit = -(-max([*lengths, *eval_lengths]) // 64) * 64
        limit = min(limit, context) if context else limit
        if min(lengths) > limit:
            raise FinetuneError(f"every training pair is longer than {ctx} (shortest: {min(lengths)}); "
                                f"use a model with a longer context")
        return limit
    if context and max_length > context:
        raise FinetuneError(f"--max-length {max_length} is longer than {ctx}")
    if min(lengths) > max_length:
        raise FinetuneError(f"every training pair is longer than --max-length {max_length} tokens "
                            f"(shortest: {min(lengths)}); raise --max-length or leave it at auto")
    return max_length


def check_config(cfg: TrainConfig) -> None:
    """Input errors that need no model: raised before anything heavy is loaded."""
    if cfg.lora_r < 1 or cfg.lora_alpha < 1:
        raise FinetuneError("--lora-r and --lora-alpha must be positive")
    if not 0 <= cfg.lora_dropout < 1:
        raise FinetuneError("--lora-dropout must be in [0, 1)")
    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise FinetuneError("--batch-size and --grad-accum must be positive")
    if cfg.max_length != "auto" and (isinstance(cfg.max_length, bool) or not isinstance(cfg.max_length, int)
                                     or cfg.max_length < 16):
        raise FinetuneError(f"--max-length must be auto or a number of tokens >= 16, not {cfg.max_length!r}")
    if cfg.eval_steps < 0 or (cfg.eval_steps > 0 and cfg.eval_limit == 0):
        raise FinetuneError("--eval-steps must be >= 0, and needs held-out pairs (--eval-limit is 0)")
    if cfg.max_steps == 0 or (cfg.max_steps < 0 and cfg.epochs <= 0):
        raise FinetuneError("nothing to train: give --max-steps > 0 or --epochs > 0")
    if cfg.lr <= 0:
        raise FinetuneError("--lr must be positive")
    if cfg.batching not in BATCHING:
        raise FinetuneError(f"--batching must be one of {', '.join(BATCHING)}, not {cfg.batching!r}")
    cpu_bf16(cfg)  # --fast-cpu auto|on|off
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} exists and is not a folder")
    if cfg.resume and not any(out.glob("checkpoint-*")):
        raise FinetuneError(f"--resume: no checkpoint-* folder in {out} to resume from")
    if not cfg.resume and not cfg.reuse:
        check_fresh(cfg)
    if cfg.load_in_4bit:
        import torch

        if not torch.cuda.is_available():
            raise FinetuneError("--load-in-4bit (QLoRA through bitsandbytes) needs a CUDA GPU; none is available")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise FinetuneError("--load-in-4bit needs bitsandbytes (pip install bitsandbytes)") from None


BATCHING = ("auto", "padding-free", "grouped", "padded")


def flash_attention() -> str | None:
    """The varlen attention implementation available here, or None (no CUDA, no flash-attn)."""
    import torch
    from transformers.utils import import_utils

    if not torch.cuda.is_available():
        return None
    for name, check in (("flash_attention_3", "is_flash_attn_3_available"),
                        ("flash_attention_2", "is_flash_attn_2_available")):
        if getattr(import_utils, check, lambda: False)():
            return name
    return None


def resolve_batching(cfg: TrainConfig) -> str:
    if cfg.batching not in BATCHING:
        raise FinetuneError(f"--batching must be one of {', '.join(BATCHING)}, not {cfg.batching!r}")
    if cfg.batching != "auto":
        return cfg.batching
    return "padding-free" if flash_attention() else "grouped"


def model_kwargs(cfg: TrainConfig) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"dtype": torch.float32}
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    kw = {"dtype": dtype}
    if resolve_batching(cfg) == "padding-free" and flash_attention():
        kw["attn_implementation"] = flash_attention()
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kw["device_map"] = {"": 0}
    return kw


def cpu_bf16(cfg: TrainConfig) -> bool:
    """Whether this run trains in bf16 autocast on the CPU (`--fast-cpu`)."""
    from corpus.evaluator import CorpusError, resolve_fast_cpu

    try:
        return resolve_fast_cpu(cfg.fast_cpu) == "on"
    except CorpusError as exc:
        raise FinetuneError(str(exc)) from None


def precision(cuda: bool, cfg: TrainConfig) -> dict:
    """The trainer's `bf16` / `fp16` flags: CUDA's best half type; on a CPU bf16 autocast only with `--fast-cpu`
    (trl's own default is bf16 everywhere, a CPU without bf16 instructions included, where it is slower)."""
    import torch

    if cuda:
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    if cpu_bf16(cfg):  # transformers refuses bf16 without a GPU unless told the run is on the CPU
        return {"bf16": True, "fp16": False, "use_cpu": True}
    return {"bf16": False, "fp16": False}


def sft_config(cfg: TrainConfig, mode: str):
    import importlib.util

    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    # transformers 5 renamed gradient checkpointing; the old name still works but warns
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    batching = resolve_batching(cfg)
    extra = {}
    if batching == "grouped":
        from transformers import TrainingArguments

        targs = {f.name for f in dataclasses.fields(TrainingArguments)}
        extra = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in targs
                 else {"group_by_length": True})
    return SFTConfig(
        output_dir=cfg.out, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, seed=cfg.seed, data_seed=cfg.seed,
        **precision(cuda, cfg),
        **{ckpt: cfg.gradient_checkpointing},
        # padding-free: trl refuses max_length there; long rows are dropped beforehand in every mode
        padding_free=batching == "padding-free", max_length=None if batching == "padding-free" else cfg.max_length,
        assistant_only_loss=mode == "assistant_only", completion_only_loss=mode == "completion_only",
        logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        eval_strategy="steps" if cfg.eval_steps > 0 else "no", eval_steps=cfg.eval_steps or None,
        include_num_input_tokens_seen="non_padding",
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        dataloader_num_workers=0, dataloader_pin_memory=cuda, remove_unused_columns=True, **extra,
    )


def dpo_config(cfg: TrainConfig, mode: str):
    """trl's DPOConfig with the settings `sft_config` gives SFT (steps, batches, precision, logging,
    checkpoints), the sigmoid DPO loss with `cfg.beta`; padded batches (trl's DPO has no padding-free
    mode now, and `group_by_length` needs an `input_ids` column it does not have before tokenising)."""
    import importlib.util

    import torch
    from trl import DPOConfig

    cuda = torch.cuda.is_available()
    names = {f.name for f in dataclasses.fields(DPOConfig)}  # transformers 5's name, as in sft_config
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return DPOConfig(
        output_dir=cfg.out, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, seed=cfg.seed, data_seed=cfg.seed,
        **precision(cuda, cfg),
        **{ckpt: cfg.gradient_checkpointing},
        max_length=cfg.max_length, beta=cfg.beta, loss_type=["sigmoid"],
        logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        eval_strategy="steps" if cfg.eval_steps > 0 else "no", eval_steps=cfg.eval_steps or None,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        dataloader_num_workers=0, dataloader_pin_memory=cuda,
    )


def preference_rows(ds, mode: str):
    """The columns trl's DPOTrainer reads: conversational `prompt`, `chosen`, `rejected`."""
    return ds.select_columns(["prompt", "chosen", "rejected"])


@dataclass(frozen=True)
class TrainerKind:
    """How a task's data set is tuned on (`finetune.tasks.Task.trainer` names one of `TRAINERS`)."""
    mode: object  # tokenizer -> the loss mode the run card records
    rows: object  # (split, mode) -> the columns the trainer reads
    config: object  # (TrainConfig, mode) -> the trainer's trl config
    trainer: str  # the trl class
    batching: object  # TrainConfig -> how its batches are made (the run card's `batching`)


TRAINERS = {
    "sft": TrainerKind(loss_mode, to_trl_rows, sft_config, "SFTTrainer", resolve_batching),
    "dpo": TrainerKind(lambda tok: "dpo", preference_rows, dpo_config, "DPOTrainer", lambda cfg: "padded"),
}


# What a resumed run must share with the run that wrote its checkpoints (besides the training rows): the rest
# (--max-steps, --epochs, logging, saving, evaluation) may change between segments.
RESUME_KEYS = ("model", "lr", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "batch_size",
               "grad_accum", "seed", "beta", "load_in_4bit", "batching", "fast_cpu")
# What `--reuse` must find in a finished run's card besides the rows: the recipe and its length.
REUSE_KEYS = RESUME_KEYS + ("max_steps", "epochs", "max_length")


def data_fingerprint(dd, data_info: dict) -> str:
    """sha256 of the rows a run trains on (and the held-out networks): what `--resume` must find unchanged."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(dd):
        digest.update(name.encode())
        for row in dd[name]:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    digest.update(json.dumps(data_info.get("eval_sources"), default=str).encode())
    return digest.hexdigest()


def check_resume(cfg: TrainConfig, fingerprint: str) -> None:
    """Refuse to continue checkpoints that another recipe or other rows wrote (`OUT/train_config.json`, written
    when a run starts): a resumed segment would silently mix them."""
    path = Path(cfg.out) / "train_config.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # checkpoints without a config (written by hand): nothing to compare with
    if not isinstance(before, dict):
        return
    now = dataclasses.asdict(cfg)
    changed = [f"{k} {before[k]!r} -> {now[k]!r}" for k in RESUME_KEYS if k in before and before[k] != now[k]]
    if before.get("data_fingerprint") not in (None, fingerprint):
        changed.append(f"the training rows ({cfg.corpus} is not what the checkpoints were trained on)")
    if changed:
        raise FinetuneError(f"--resume: the checkpoints in {cfg.out} were written with other settings: "
                            f"{'; '.join(changed)}; train into a new --out, or remove {cfg.out}")


def check_fresh(cfg: TrainConfig) -> None:
    if any(Path(cfg.out).glob("checkpoint-*")):
        raise FinetuneError(f"{cfg.out} already has checkpoints: pass --resume to continue, or choose a new --out")


def finished(cfg: TrainConfig, fingerprint: str) -> dict | None:
    """`--reuse`: OUT's run card when it records this training (the same rows, recipe and length), else None."""
    try:
        card = json.loads((Path(cfg.out) / "run_card.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("data_fingerprint") != fingerprint \
            or not (Path(cfg.out) / "adapter_config.json").is_file():
        return None
    before, now = card.get("config"), dataclasses.asdict(cfg)
    return card if isinstance(before, dict) and all(before.get(k) == now[k] for k in REUSE_KEYS) else None


def prepare(cfg: TrainConfig, progress: bool = True):
    """Everything up to a ready trl trainer (SFT, or DPO for a task whose `trainer` says so): (trainer,
    facts for the run card)."""
    check_config(cfg)
    from finetune.models import load_model, load_tokenizer, resolve_model

    from finetune.tasks import get_task, load_pairs

    dd, data_info = load_pairs(cfg.corpus, cfg.pairs_per_parent, cfg.eval_fraction, cfg.seed, cfg.answer_format,
                               cfg.context, progress, cfg.class_name, cfg.task, cfg.sample)
    kind = TRAINERS[get_task(data_info.get("task")).trainer]
    if cfg.beta <= 0:
        raise FinetuneError("--beta must be positive")
    fingerprint = data_fingerprint(dd, data_info)
    if cfg.reuse and (card := finished(cfg, fingerprint)):
        return None, {"reused": card}
    if cfg.resume:
        check_resume(cfg, fingerprint)
    else:
        check_fresh(cfg)
    base = resolve_model(cfg.model, progress)
    tok = load_tokenizer(base)

    import datasets
    import trl
    from peft import LoraConfig

    datasets.disable_progress_bars()
    mode = kind.mode(tok)
    evald = dd["eval"] if "eval" in dd else None
    lengths = token_lengths(dd["train"], tok)
    eval_lengths = token_lengths(evald, tok) if evald is not None else []
    max_length = resolve_max_length(cfg.max_length, lengths, model_context(base), eval_lengths)
    train, dropped, _ = drop_long(dd["train"], tok, max_length, lengths)
    if evald is not None:
        evald, _, _ = drop_long(evald, tok, max_length, eval_lengths)
        eval_total = len(evald)
        if 0 < cfg.eval_limit < len(evald):  # the periodic and the final eval use the same subset
            evald = evald.shuffle(seed=cfg.seed).select(range(cfg.eval_limit))
    model = load_model(base, **model_kwargs(cfg))
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else \
        [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    args = kind.config(dataclasses.replace(cfg, max_length=max_length), mode)
    if not progress:
        args.disable_tqdm = True
    try:  # DPO: no ref_model; with peft its reference is the base, the adapter disabled
        trainer = getattr(trl, kind.trainer)(
            model=model, args=args, train_dataset=kind.rows(train, mode),
            eval_dataset=kind.rows(evald, mode) if evald is not None and len(evald) else None,
            processing_class=tok, peft_config=lora)
    except ValueError as exc:  # e.g. target modules the model does not have
        raise FinetuneError(f"cannot set up training: {str(exc).splitlines()[0][:200]}") from None
    facts = {"base": base, "mode": mode, "batching": kind.batching(cfg), "data_info": data_info,
             "data_fingerprint": fingerprint,
             "dropped_long": dropped, "max_length": max_length,
             "longest": max([n for n in lengths if n <= max_length], default=max_length),
             "train_pairs": len(train), "eval_pairs": eval_total if evald is not None else 0,
             "tokens_per_pair": {"min": min(lengths), "max": max(lengths),
                                 "mean": round(sum(lengths) / len(lengths), 1)}}
    return trainer, facts


def plot_losses(card: dict, path: Path) -> None:
    """Train and eval loss against the step (and epochs on a second axis), from a run card."""
    hist = card.get("loss_history") or []
    train = [(h["step"], h["loss"]) for h in hist if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in hist if "eval_loss" in h and "step" in h]
    if not train and not evals:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), ".-", label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label=f"eval loss ({card.get('eval_loss_pairs') or '?'} held-out pairs)")
    minutes = (card.get("train_seconds") or 0) / 60
    partial = card.get("train_seconds_complete") is False  # resumed from a checkpoint without its time
    ax.set(xlabel="optimizer step",
           ylabel="DPO loss (chosen vs rejected)" if card.get("loss") == "dpo" else "loss (answer tokens)",
           title=f"{card['base_model']['name']} LoRA, {card.get('answer_format')}/{card.get('context')}: "
                 f"{card['pairs']['train']} pairs, {card.get('steps')} steps, "
                 + (f"{minutes:.0f} min after step {card.get('resumed_from_step')}" if partial else f"{minutes:.0f} min"))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


ELAPSED_FILE = "nasforge_train_seconds.json"  # in each checkpoint: training seconds up to that step


def elapsed_callback(before: float, t0: float):
    """A trainer callback that writes, into each checkpoint it saves, the training seconds up to it
    (`before` = the seconds of earlier segments, when resumed): a resumed run's card counts them all."""
    from transformers import TrainerCallback

    class Elapsed(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / ELAPSED_FILE).write_text(json.dumps({"seconds": round(before + time.time() - t0, 1)}))

    return Elapsed()


def seconds_before(checkpoint: str | None) -> float | None:
    """Training seconds up to `checkpoint` (0 when not resuming; None when the checkpoint does not say)."""
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((Path(checkpoint) / ELAPSED_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main_train(cfg: TrainConfig) -> int:
    import torch

    if not torch.cuda.is_available():  # stored as resolved: the card says what arithmetic the adapter was tuned in
        cfg = dataclasses.replace(cfg, fast_cpu="on" if cpu_bf16(cfg) else "off")
    print(f"config: {cfg}", file=sys.stderr)
    out = Path(cfg.out)
    trainer, facts = prepare(cfg)
    if trainer is None:
        print(f"{out} already holds this training ({facts['reused'].get('steps')} steps on the same rows, the same "
              f"recipe, trained {facts['reused'].get('trained_at')}): not trained again (--reuse)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(
        json.dumps({**dataclasses.asdict(cfg), "data_fingerprint": facts["data_fingerprint"]}, indent=2) + "\n")
    warning = memory_warning(cfg, facts["base"], facts["longest"])
    if warning:
        print(warning, file=sys.stderr)
    print(f"{facts['train_pairs']} training pairs ({facts['dropped_long']} longer than {facts['max_length']} tokens "
          f"dropped), loss: {facts['mode'].replace('_', '-')}, batching: {facts['batching']}, "
          f"base: {facts['base']}", file=sys.stderr)
    from transformers.trainer_utils import get_last_checkpoint

    resume = get_last_checkpoint(str(out)) if cfg.resume else None
    before = seconds_before(resume)
    t0 = time.time()
    trainer.add_callback(elapsed_callback(before or 0.0, t0))
    result = trainer.train(resume_from_checkpoint=resume)
    segment = time.time() - t0
    # a resumed run: the seconds up to its checkpoint (the steps after it, lost when killed, are redone)
    seconds = segment + (before or 0.0)
    trainer.save_model(str(out))  # before the eval: a killed eval never costs the adapter
    eval_loss = None
    evald = trainer.eval_dataset
    if evald is not None and len(evald) and cfg.eval_limit != 0:
        last = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        # --eval-steps may have evaluated the final step already (same subset)
        eval_loss = last[-1]["eval_loss"] if last else trainer.evaluate(eval_dataset=evald).get("eval_loss")
    model = trainer.model
    # peft records the folder the base was loaded from; keep that (PeftModel/AutoPeftModel reload it)
    card = {
        "base_model": {"name": cfg.model, "resolved": facts["base"]},
        "corpus": {"path": facts["data_info"].get("corpus"),
                   "fingerprint": facts["data_info"].get("corpus_fingerprint"),
                   "rows": facts["data_info"].get("corpus_rows"), "ok_rows": facts["data_info"].get("ok_rows")},
        "pairs": {"train": facts["train_pairs"], "eval": facts["eval_pairs"],
                  "max_length": facts["max_length"], "dropped_longer_than_max_length": facts["dropped_long"],
                  "tokens_per_pair": facts["tokens_per_pair"],
                  "eval_sources": facts["data_info"].get("eval_sources")},
        "data_fingerprint": facts["data_fingerprint"],  # what `--resume` checks; scripts compare it to skip a rerun
        "task": facts["data_info"].get("task", "improve"),  # a data set folder's own, else the flag's
        "answer_format": facts["data_info"].get("answer_format", "code"),  # a pairs folder's own, else the flags'
        "context": facts["data_info"].get("context", "source"),
        "loss": facts["mode"],
        "batching": facts["batching"],
        # the format a pairs folder was built in wins over the (then unused) --answer-format/--context flags
        "config": {**dataclasses.asdict(cfg), "answer_format": facts["data_info"].get("answer_format", cfg.answer_format),
                   "context": facts["data_info"].get("context", cfg.context),
                   "task": facts["data_info"].get("task", "improve")},
        # what the training data was built with (a data set folder's own settings, else the flags'): its split
        "data_config": facts["data_info"].get("config"),
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else None,
        # None: resumed from a checkpoint that does not record its time, so train_seconds is this segment's only
        "train_seconds_complete": before is not None,
        "tokens_seen": trainer.state.num_input_tokens_seen or None,  # None: the trainer does not count (DPO)
        "train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "eval_loss_pairs": len(evald) if eval_loss is not None else 0,
        "loss_history": [{k: v for k, v in h.items() if k in ("step", "loss", "learning_rate", "grad_norm",
                                                               "epoch", "num_input_tokens_seen", "eval_loss")}
                         for h in trainer.state.log_history if "loss" in h or "eval_loss" in h],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "versions": versions(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / "run_card.json").write_text(json.dumps(card, indent=2) + "\n")
    plot_losses(card, out / "loss.png")
    if cfg.merge:
        merged = out / "merged"
        if cfg.load_in_4bit:
            print("warning: merging into a 4-bit base dequantises it; merged weights are approximate",
                  file=sys.stderr)
        model.merge_and_unload().save_pretrained(str(merged))
        trainer.processing_class.save_pretrained(str(merged))
    last = next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)
    first = next((h["loss"] for h in trainer.state.log_history if "loss" in h), None)
    print(f"trained {trainer.state.global_step} steps in {seconds:.0f} s"
          + (f" ({segment:.0f} s since step {card['resumed_from_step']})" if resume else "")
          + (f" ({trainer.state.num_input_tokens_seen / max(seconds, 1e-9):.0f} tokens/s)"
             if trainer.state.num_input_tokens_seen else "") + f"; loss {first} -> {last}"
          + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else "")
          + f"; adapter in {out}" + (f", merged model in {out / 'merged'}" if cfg.merge else ""))
    return 0
