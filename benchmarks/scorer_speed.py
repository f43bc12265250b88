"""How long `--strategy scored` takes to score one pool: N score prompts through an in-process model,
one batched pass (`finetune.score.score_texts`, the search's path) vs one prompt at a time, side by side.

    python benchmarks/scorer_speed.py --model smollm2-135m --n 64 [--adapter DIR] [--rounds 2]

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
    a = ap.parse_args()
    import torch

    from finetune.llm import make_llm
    from finetune.score import parse_score, score_texts

    llm = make_llm(a.model, a.adapter, backend="transformers")
    ps = prompts(a.n)
    score_texts(llm.model, llm.tok, ps[:4], batch_size=4)  # warm-up
    times = {"batched": [], "one by one": []}
    answers = {}
    for _ in range(a.rounds):  # interleaved: the machine's load hits both alike
        t0 = time.perf_counter()
        answers["batched"] = score_texts(llm.model, llm.tok, ps, batch_size=a.n)
        times["batched"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        answers["one by one"] = score_texts(llm.model, llm.tok, ps, batch_size=1)
        times["one by one"].append(time.perf_counter() - t0)
    print(f"{a.n} score prompts, {a.model}{' + ' + a.adapter if a.adapter else ''}, {torch.get_num_threads()} threads, "
          f"best of {a.rounds} rounds\n")
    print("| pass | seconds | prompts/s | answers that parse |\n|---|---:|---:|---:|")
    for k, v in times.items():
        ok = sum(parse_score(t) is not None for t in answers[k])
        print(f"| {k} | {min(v):.2f} | {a.n / min(v):.1f} | {ok}/{a.n} |")
    print(f"\nbatched vs one by one: {min(times['one by one']) / min(times['batched']):.1f}x; target <= 3 s for 64: "
          f"{'reached' if a.n == 64 and min(times['batched']) <= 3 else 'not reached' if a.n == 64 else 'n/a'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
