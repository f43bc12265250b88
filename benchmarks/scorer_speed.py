"""How long `--strategy scored` takes to score one pool: N score prompts through an in-process model,
side by side: one batch with the prompts' common prefix run once and its cache shared (`finetune.score.
score_texts`, the search's path), one batch of whole prompts (`share_prefix=False`), and (`--one-by-one`)
one prompt at a time, and (`--bf16`) the search's path with the model as `--scorer-dtype bfloat16` loads
it (adapter merged into the weights, cast to bfloat16).

    python benchmarks/scorer_speed.py --model smollm2-135m --n 64 [--adapter DIR] [--rounds 2] [--one-by-one] [--bf16]

The prompts are the ones the search writes (`search.strategies.scored`): uniform configurations of
the Channel-Bench-Macro ResNet space relative to its seed, with synthetic FLOPs/params ratios (the
prompt's length and shape are what matter here). Issue 29's target: 64 candidates in <= 3 s on this CPU.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def prompts(n: int, seed: int = 0) -> list[list[dict]]:
    from corpus.spaces import SPACES
    from finetune.score import score_messages

    choices = SPACES["cbm-resnet"]["choices"]
    rng = random.Random(seed)
    fam = {"parent": "cbm-resnet", "dataset": "cifar10", "recipe": json.dumps({"source": "benchmark table"})}
    ref = {**fam, "widths": [c[1] for c in choices], "flops": 5e8, "params": 1e6}
    out = []
    for _ in range(n):
        w = [rng.choice(c) for c in choices]
        scale = sum(a / b for a, b in zip(w, ref["widths"])) / len(w)
        out.append(score_messages({**fam, "widths": w, "flops": 5e8 * scale ** 2, "params": 1e6 * scale ** 2}, ref))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one-by-one", action="store_true", help="also score the prompts one at a time (slow)")
    ap.add_argument("--bf16", action="store_true", help="also the shared-prefix pass in bfloat16, adapter merged")
    a = ap.parse_args()
    import torch

    from finetune.llm import make_llm
    from finetune.score import parse_score, score_texts

    llm = make_llm(a.model, a.adapter, backend="transformers")
    ps = prompts(a.n)
    score_texts(llm.model, llm.tok, ps[:4], batch_size=4)  # warm-up
    passes = {"batched, shared prefix": (llm, dict(batch_size=a.n)),
              "batched, whole prompts": (llm, dict(batch_size=a.n, share_prefix=False))}
    if a.one_by_one:
        passes["one by one, shared prefix"] = (llm, dict(batch_size=1))
    if a.bf16:
        bf = make_llm(a.model, a.adapter, backend="transformers").for_inference("bfloat16")
        score_texts(bf.model, bf.tok, ps[:4], batch_size=4)
        passes["batched, shared prefix, bfloat16 merged"] = (bf, dict(batch_size=a.n))
    times = {k: [] for k in passes}
    answers = {}
    for _ in range(a.rounds):  # interleaved: the machine's load hits every pass alike
        for k, (m, kw) in passes.items():
            t0 = time.perf_counter()
            answers[k] = score_texts(m.model, m.tok, ps, **kw)
            times[k].append(time.perf_counter() - t0)
    print(f"{a.n} score prompts, {a.model}{' + ' + a.adapter if a.adapter else ''}, {torch.get_num_threads()} threads, "
          f"best of {a.rounds} rounds\n")
    ref = answers["batched, shared prefix"]
    print("| pass | seconds | prompts/s | answers that parse | answers as float32 shared prefix | max difference, points |\n"
          "|---|---:|---:|---:|---:|---:|")
    for k, v in times.items():
        ok = sum(parse_score(t) is not None for t in answers[k])
        same = sum(x == y for x, y in zip(answers[k], ref))
        diffs = [abs(parse_score(x) - parse_score(y)) for x, y in zip(answers[k], ref)
                 if parse_score(x) is not None and parse_score(y) is not None]
        print(f"| {k} | {min(v):.2f} | {a.n / min(v):.1f} | {ok}/{a.n} | {same}/{a.n} | {max(diffs, default=0):.1f} |")
    best = {k: min(v) for k, v in times.items()}
    base = best["batched, shared prefix"]
    print("\n" + "; ".join(f"{k}: {v / base:.2f}x the float32 shared-prefix time" for k, v in best.items() if v != base))
    if a.n == 64:
        print("target <= 3 s for 64: " + "; ".join(f"{k}: {'reached' if v <= 3 else 'not reached'} ({v:.2f} s)"
                                                  for k, v in best.items() if "shared prefix" in k and "one by" not in k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
