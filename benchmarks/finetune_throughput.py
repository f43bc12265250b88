"""LoRA training tokens/s: trl's default SFTConfig vs the project's settings (`finetune.train`).

    python benchmarks/finetune_throughput.py                        # smollm2-135m, built-in pairs
    python benchmarks/finetune_throughput.py --corpus corpus_fm --steps 8 --batch-size 4
    python benchmarks/finetune_throughput.py --tiny                  # a tiny random Llama (smoke test)

Every setting runs in this one process on the same model, the same LoRA (r 16, all linear layers),
the same answer-only loss, the same rows in the same order, batch size and learning rate; only
SFTConfig differs:
- trl defaults: everything SFTConfig defaults to (padded batches, gradient checkpointing on), with
  `max_length` raised so no row is truncated and `bf16` only where the device has it (trl's
  default `bf16=True` refuses to start on a CPU without bf16);
- project: `finetune.train.sft_config` (batching auto: padding-free with flash-attn on CUDA, else
  padded batches grouped by length; no gradient checkpointing; bf16 only on CUDA); `--ablate`
  adds rows that change one thing at a time so the ratio can be traced to its causes; `--fast-cpu` adds
  the project's settings with bf16 autocast on a CPU (`finetune train --fast-cpu on`).
Tokens are the non-padding input tokens the trainer counted (`num_input_tokens_seen`), timed over
`--steps` optimizer steps after `--warmup` steps (a fresh LoRA each run), in `--rounds` interleaved
rounds over the settings (each setting's best round is its number: a shared machine's load comes and
goes; one pass in a fixed order measured the same setting 4x apart on a loaded CPU). Data: `--corpus` pairs,
else pairs made from the built-in seeds (sources of different lengths, as a mixed corpus has).
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def builtin_pairs(n: int):
    """Prompt/answer rows from the built-in seeds: every ordered pair of two seeds' sources."""
    import datasets

    from finetune.prompts import answer_message, build_messages
    from mutator import seeds

    srcs = [seeds.seed_source(s) for s in seeds.SEEDS]
    row = {"accuracy": 0.9, "flops": 1_200_000, "params": 40_000, "latency_ms": 0.4, "dataset": "fashion-mnist"}
    goal = {"kind": "cut_flops", "fraction": 0.3, "max_acc_drop": 0.01}
    msgs = [build_messages(a, row, goal) + [answer_message(b)] for a in srcs for b in srcs if a is not b]
    msgs = (msgs * (n // len(msgs) + 1))[:n]
    return datasets.Dataset.from_dict({"messages": msgs})


def tiny_model(folder: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_finetune import make_tiny_model

    make_tiny_model(folder)
    return str(folder)


class Clock:
    """Trainer callback: wall time and token count between the end of warm-up and the last step."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        clock = self

        class CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == warmup:
                    clock.t0, clock.tok0 = time.perf_counter(), state.num_input_tokens_seen
                clock.t1, clock.tok1 = time.perf_counter(), state.num_input_tokens_seen

        self.callback = CB()
        self.t0 = self.t1 = 0.0
        self.tok0 = self.tok1 = 0

    def tokens_per_s(self) -> float:
        return (self.tok1 - self.tok0) / max(self.t1 - self.t0, 1e-9)


def run(name, base, tok, rows, sft_args, model_kw, lora_kw, warmup, steps):
    import torch
    from peft import LoraConfig
    from trl import SFTTrainer

    from finetune.models import load_model

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process otherwise: each setting its own
    torch.manual_seed(0)
    model = load_model(base, **model_kw)
    clock = Clock(warmup)
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=rows, processing_class=tok,
                         peft_config=LoraConfig(**lora_kw), callbacks=[clock.callback])
    trainer.train()
    tps = clock.tokens_per_s()
    print(f"  {name:<44} {tps:>9.0f} tokens/s  ({clock.tok1 - clock.tok0} tokens in {clock.t1 - clock.t0:.1f} s)",
          flush=True)
    return tps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="model name (finetune.models.resolve_model)")
    p.add_argument("--tiny", action="store_true", help="use a tiny random Llama instead of --model")
    p.add_argument("--corpus", default=None, help="corpus or pairs folder (default: pairs from the built-in seeds)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per setting")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-length", type=int, default=4096, help="no row is longer (none is truncated)")
    p.add_argument("--ablate", action="store_true", help="also time each project change on its own")
    p.add_argument("--fast-cpu", action="store_true", help="on a CPU, also time the project's settings with "
                   "--fast-cpu on (bf16 autocast; the last row's ratio is then against it)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds over every setting; each setting's best round is reported (default 3)")
    args = p.parse_args()

    import datasets
    import torch
    import transformers
    from trl import SFTConfig

    from finetune.models import load_tokenizer, resolve_model
    from finetune.tasks import load_pairs
    from finetune.train import (TrainConfig, drop_long, loss_mode, model_kwargs, resolve_batching, sft_config,
                                to_trl_rows)

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    base = tiny_model(tmp / "tiny") if args.tiny else resolve_model(args.model)
    tok = load_tokenizer(base)
    n = args.batch_size * (args.warmup + args.steps)
    rows = load_pairs(args.corpus, 4, 0.1, 0)[0]["train"] if args.corpus else builtin_pairs(n)
    rows = rows.shuffle(seed=0).select(range(min(n, len(rows))))
    rows, dropped, lengths = drop_long(rows, tok, args.max_length)
    mode = loss_mode(tok)
    rows = to_trl_rows(rows, mode)
    cfg = TrainConfig(corpus="", model=args.model, out=str(tmp / "project"), max_steps=args.warmup + args.steps,
                      batch_size=args.batch_size, max_length=args.max_length, save_steps=10**6,
                      logging_steps=10**6)
    lora_kw = dict(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   target_modules="all-linear", task_type="CAUSAL_LM")
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    def defaults(name, **over):
        return SFTConfig(output_dir=str(tmp / name), max_length=args.max_length, bf16=bf16, max_steps=cfg.max_steps,
                         per_device_train_batch_size=args.batch_size, learning_rate=cfg.lr, seed=0, data_seed=0,
                         report_to="none", save_strategy="no", logging_steps=10**6,
                         include_num_input_tokens_seen="non_padding",
                         assistant_only_loss=mode == "assistant_only",
                         completion_only_loss=mode == "completion_only", **over)

    def project(**over):
        return sft_config(dataclasses.replace(cfg, out=str(tmp / "project"), **over), mode)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model {base}; {len(rows)} rows, {min(lengths)}-{max(lengths)} tokens ({dropped} longer dropped); "
          f"batch {args.batch_size}; {args.steps} timed steps after {args.warmup}; {device}; loss {mode}")
    plain = model_kwargs(cfg)  # the same dtype for every setting
    plain.pop("attn_implementation", None)
    settings = {"trl defaults": (lambda: defaults("defaults"), plain)}
    if args.ablate:
        settings["trl defaults, gradient checkpointing off"] = (
            lambda: defaults("nogc", **{ckpt_name(SFTConfig): False}), plain)
        settings["project, padded in random order"] = (lambda: project(batching="padded"), plain)
        free = dataclasses.replace(cfg, batching="padding-free")
        settings["project, padding-free"] = (lambda: project(batching="padding-free"), model_kwargs(free))
    settings[f"project (batching auto: {resolve_batching(cfg)})"] = (lambda: project(), model_kwargs(cfg))
    if not torch.cuda.is_available() and args.fast_cpu:  # bf16 autocast on the CPU (finetune train --fast-cpu on)
        settings["project, --fast-cpu on (bf16 autocast)"] = (lambda: project(fast_cpu="on"), model_kwargs(cfg))
    seen: dict[str, list[float]] = {}
    for r in range(args.rounds):  # interleaved rounds: a load that comes and goes hits every setting alike
        print(f"round {r + 1} of {args.rounds}", flush=True)
        for name, (make, model_kw) in settings.items():
            if name in seen and not seen[name]:
                continue  # failed in an earlier round
            try:
                seen.setdefault(name, []).append(run(name, base, tok, rows, make(), model_kw, lora_kw, args.warmup,
                                                     args.steps))
            except Exception as exc:  # a setting this device cannot run is reported, not hidden
                seen[name] = []
                print(f"  {name:<44} failed: {type(exc).__name__}: {str(exc)[:200]}")
    results = {name: max(v) for name, v in seen.items() if v}  # the best round: the least disturbed
    if args.rounds > 1:
        print(f"best of {args.rounds} rounds:")
        for name, v in seen.items():
            if v:
                print(f"  {name:<44} {max(v):>9.0f} tokens/s  (rounds: {', '.join(f'{x:.0f}' for x in v)})")
    first, names = next(iter(settings)), list(settings)
    for name in names[1:]:
        if first in results and name in results:
            print(f"{name} / trl defaults: {results[name] / results[first]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": base, "device": device, "tokens_per_s": results,
                                               "batch_size": args.batch_size, "steps": args.steps}, indent=2))


def ckpt_name(cls) -> str:
    names = {f.name for f in dataclasses.fields(cls)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


if __name__ == "__main__":
    main()
