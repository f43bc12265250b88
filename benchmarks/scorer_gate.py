"""Issue 29's gate beside its reference: the tuned scorer's rank correlation on held-out rows of the space it
did not see, and a ridge over space-agnostic width features fitted on the other space's whole table
(`search.strategies.surrogate.positions`, what `--prior` uses) on the same rows.

    NASFORGE_CBM_DIR=path/to/channel-bench-macro python benchmarks/scorer_gate.py \
        benchmarks/headline/models/gate-score-on-resnet-searching-mobilenet.json --tuned-on cbm-resnet

The gate file is `finetune eval --task score --out` (benchmarks/headline/models_scorer.sh writes it).

Fashion-MNIST (`--corpus`, the searched family's corpus the gate's rows come from; models_scorer_fm.sh): the
references are what a user has without any model, each network's FLOPs and its parameter count taken as its
predicted accuracy ("bigger is better"), on the same rows.

    python benchmarks/scorer_gate.py benchmarks/headline/models/gate-score-without-lenet.json \
        --corpus benchmarks/headline/models/corpus_fm_lenet
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gate", help="finetune eval --task score --out JSON")
    ap.add_argument("--tuned-on", choices=["cbm-resnet", "cbm-mobilenet"], help="a table gate: the space tuned on")
    ap.add_argument("--corpus", help="a Fashion-MNIST gate: the searched family's corpus (FLOPs, params)")
    a = ap.parse_args()
    if bool(a.tuned_on) == bool(a.corpus):
        ap.error("give --tuned-on (a table gate) or --corpus (a Fashion-MNIST gate)")
    if a.corpus:
        return cost_gate(json.loads(Path(a.gate).read_text()), a.corpus)
    from sklearn.linear_model import Ridge

    from corpus.spaces import SPACES, widths_of
    from corpus.table import load_table, table_path
    from finetune.score import score_metrics
    from search.strategies.surrogate import positions

    gate = json.loads(Path(a.gate).read_text())
    searched = "cbm-mobilenet" if a.tuned_on == "cbm-resnet" else "cbm-resnet"
    train = load_table(str(table_path(a.tuned_on)))
    choices = SPACES[a.tuned_on]["choices"]
    ridge = Ridge(alpha=1.0).fit([positions(widths_of(k, a.tuned_on), choices) for k in train],
                                 [train[k]["mean"] for k in train])
    rows = gate["results"]["adapter"]["answers"]
    widths = [widths_of(r["id"].rsplit("-", 1)[1], searched) for r in rows]
    measured = [r["measured"] for r in rows]
    pred = [float(v) for v in ridge.predict([positions(w, SPACES[searched]["choices"]) for w in widths])]
    ref = score_metrics(pred, measured)
    print(f"Gate: scorer tuned on {a.tuned_on} only, {len(rows)} held-out rows of {searched}\n")
    print("| predictor | Spearman rho | Kendall tau | top-10 overlap |\n|---|---:|---:|---:|")
    for name, key in (("frozen SmolLM2-135M", "base"), ("tuned SmolLM2-135M (score task)", "adapter"),
                      (f"ridge on width positions, fitted on all of {a.tuned_on}", None)):
        s = gate["results"][key]["summary"] if key else ref
        # a correlation is undefined where every prediction is the same (the frozen model may answer one number)
        same = key and len({r["predicted"] for r in gate["results"][key]["answers"]}) == 1
        cor = lambda v: (f"{v:+.3f}" if v is not None else "undefined")  # noqa: E731
        print(f"| {name}{' (the same answer for every row)' if same else ''} | {cor(s['spearman'])} | "
              f"{cor(s['kendall'])} | {s['top_k_overlap']:.2f} |")
    rho = gate["results"]["adapter"]["summary"]["spearman"]
    print(f"\ntarget (issue 29): Spearman >= 0.8 and above the ridge transfer: "
          f"{'reached' if rho is not None and rho >= 0.8 and rho > ref['spearman'] else 'not reached'} ({rho:.3f} vs ridge {ref['spearman']:.3f})")
    return 0


def cost_gate(gate: dict, corpus: str) -> int:
    """The gate on a Fashion-MNIST family beside FLOPs and params as predictors (no model, no fitting)."""
    import datasets

    from finetune.score import score_metrics

    rows = {r["id"]: r for r in datasets.load_from_disk(corpus).to_list()}
    answers = gate["results"]["adapter"]["answers"]
    missing = [r["id"] for r in answers if r["id"] not in rows]
    if missing:
        sys.exit(f"error: {len(missing)} gate rows are not in {corpus} (e.g. {missing[0]}): the wrong corpus?")
    measured = [r["measured"] for r in answers]
    family = answers[0]["parent"] if answers else "?"
    print(f"Gate: scorer tuned without {family}, {len(answers)} rows of {family} ({corpus})\n")
    print("| predictor | Spearman rho | Kendall tau | top-10 overlap |\n|---|---:|---:|---:|")
    cor = lambda v: (f"{v:+.3f}" if v is not None else "undefined")  # noqa: E731
    for name, key in (("frozen SmolLM2-135M", "base"), ("tuned SmolLM2-135M (score task)", "adapter")):
        s = gate["results"][key]["summary"]
        same = len({r["predicted"] for r in gate["results"][key]["answers"]}) == 1
        print(f"| {name}{' (the same answer for every row)' if same else ''} | {cor(s['spearman'])} | "
              f"{cor(s['kendall'])} | {s['top_k_overlap']:.2f} |")
    for col in ("flops", "params"):
        s = score_metrics([float(rows[r["id"]][col]) for r in answers], measured)
        print(f"| {'FLOPs' if col == 'flops' else 'parameters'} (bigger is better) | {cor(s['spearman'])} | "
              f"{cor(s['kendall'])} | {s['top_k_overlap']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
