"""A learned predictor of proxy accuracy from zero-cost features, and how far each feature ranks.

    python -m corpus predictor fit --corpus corpus_fm --out pred.joblib --holdout 0.2 --seed 0
    python -m corpus predictor eval --corpus corpus_fm --model pred.joblib

Rows: status ok with a measured `accuracy` (a corpus built with `--zero-cost`). Features (default):
every `zc_*` proxy the corpus has, `params` and `flops`; a missing value stays NaN (the trees route
it). Model: scikit-learn's HistGradientBoostingRegressor on accuracy (small leaves and a slow
learning rate, since corpora have hundreds of rows, not thousands).

Split: networks (unique `sha256`) drawn with `--seed`; `--holdout` of them are held out. The model
file's JSON sidecar (`FILE.json`) lists the sha256 of every training network, so `eval` scores
exactly the rows the model never saw, on the fitting corpus or on any other.

The table: Spearman ρ and Kendall τ (tau-b, scipy) against measured accuracy, for the predictor and
for every single feature used raw (higher score = predicted better; a negative value means the
feature ranks backwards), on the held-out rows and, for single features, also on all rows (they
are not fitted, so every row is a fair test and the estimate is steadier). `fit` adds the
predictor's 5-fold cross-validated correlation over all rows (out-of-fold predictions). `--by parent`
adds the single features' correlations within each seed family (all rows of that family).

For search screening:
    from corpus.predictor import load_predictor
    pred = load_predictor("pred.joblib")        # PredictorError if missing, damaged or not ours
    pred.predict(rows) -> list[float]            # rows: dicts with pred.features (e.g. score_source())
The model file is a pickle (joblib): load only files you made yourself.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

from corpus.build import CorpusError

DEFAULT_FEATURES = ("zc_synflow", "zc_naswot", "zc_snip", "zc_grad_norm", "zc_grasp", "params", "flops")
TARGET = "accuracy"


class PredictorError(CorpusError):
    """Bad predictor input or model file: one line, exit code 2."""


def eligible_rows(folder: str) -> tuple[list[dict], list[str]]:
    """(rows with a measured accuracy, the zc_* columns the corpus has)."""
    from corpus.show import load_corpus

    ds = load_corpus(folder)
    cols = [c for c in ds.column_names if c != "code"]
    rows = [r for r in ds.select_columns(cols).to_list() if r["status"] == "ok" and r.get(TARGET) is not None]
    return rows, [c for c in cols if c.startswith("zc_") and c not in ("zc_seconds", "zc_error")]


def _matrix(rows: list[dict], features) -> "np.ndarray":
    import numpy as np

    return np.array([[math.nan if r.get(f) is None else float(r[f]) for f in features] for r in rows], dtype=float)


def rank_correlation(score, truth) -> tuple[int, float, float]:
    """(n, Spearman ρ, Kendall τ-b) over the pairs where both values exist; NaN when undefined."""
    from scipy.stats import kendalltau, spearmanr

    pairs = [(s, t) for s, t in zip(score, truth) if s is not None and t is not None and not math.isnan(s)]
    if len(pairs) < 3 or len({s for s, _ in pairs}) < 2:
        return len(pairs), math.nan, math.nan
    s, t = zip(*pairs)
    return len(pairs), float(spearmanr(s, t).statistic), float(kendalltau(s, t).statistic)


def table(lines: list[tuple]) -> str:
    head = "| score | n held-out | Spearman ρ | Kendall τ | n all | Spearman ρ (all) | Kendall τ (all) |"
    out = [head, "|" + "---|" * 7]
    fmt = lambda v: "" if v is None else f"{v:+.3f}" if isinstance(v, float) and not math.isnan(v) \
        else "n/a" if isinstance(v, float) else str(v)
    for name, held, every in lines:
        out.append("| " + " | ".join([name, *map(fmt, held), *map(fmt, every or ("", "", ""))]) + " |")
    return "\n".join(out)


class Predictor:
    """A fitted model and its sidecar (features, training networks, fingerprint)."""

    def __init__(self, model, meta: dict):
        self.model, self.meta = model, meta
        self.features = list(meta["features"])

    def predict(self, rows: list[dict]) -> list[float]:
        """Predicted accuracy per row (dicts holding `self.features`; missing values allowed)."""
        from threadpoolctl import threadpool_limits

        if not rows:
            return []
        with threadpool_limits(1):
            return [float(v) for v in self.model.predict(_matrix(rows, self.features))]


def load_predictor(path: str) -> Predictor:
    import joblib

    p, side = Path(path), Path(str(path) + ".json")
    if not p.is_file():
        raise PredictorError(f"no such model file: {path}")
    try:
        meta = json.loads(side.read_text())
        want = meta["model_sha256"]
        meta["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PredictorError(f"{side} is missing or not a predictor sidecar ({type(exc).__name__})") from None
    if hashlib.sha256(p.read_bytes()).hexdigest() != want:
        raise PredictorError(f"{path} does not match its sidecar (damaged or replaced model file)")
    try:
        model = joblib.load(p)
    except Exception as exc:  # a damaged pickle can raise nearly anything
        raise PredictorError(f"{path} cannot be loaded ({type(exc).__name__}: {str(exc)[:100]})") from None
    return Predictor(model, meta)


def _features(arg: str | None, zc_cols: list[str], rows: list[dict]) -> list[str]:
    if arg:
        feats = [f.strip() for f in arg.split(",") if f.strip()]
        known = set(rows[0]) if rows else set()
        bad = [f for f in feats if f not in known]
        if bad:
            raise PredictorError(f"unknown feature column(s) {', '.join(bad)}; the corpus has {', '.join(sorted(known))}")
        return feats
    if not any(r.get(c) is not None for r in rows for c in zc_cols):
        raise PredictorError("the corpus has no zero-cost columns with values (build it with --zero-cost)")
    return [f for f in DEFAULT_FEATURES if f in zc_cols or f in ("params", "flops")]


def _report(model_preds, held: list[dict], every: list[dict], features, extra=()) -> str:
    truth_h, truth_a = [r[TARGET] for r in held], [r[TARGET] for r in every]
    lines = [("predictor", rank_correlation(model_preds, truth_h), None), *extra]
    for f in features:
        lines.append((f, rank_correlation([r.get(f) for r in held], truth_h),
                      rank_correlation([r.get(f) for r in every], truth_a)))
    return table(lines)


def by_group(rows: list[dict], features, column: str) -> str:
    """Single features' rank correlations within each value of `column` (e.g. parent), all rows."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get(column), []).append(r)
    out = []
    for g, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        truth = [r[TARGET] for r in rs]
        lines = ["| score | n | Spearman ρ | Kendall τ |", "|---|---|---|---|"]
        for f in features:
            n, rho, tau = rank_correlation([r.get(f) for r in rs], truth)
            lines.append(f"| {f} | {n} | {rho:+.3f} | {tau:+.3f} |")
        out.append(f"\n{column} = {g}\n" + "\n".join(lines))
    return "\n" + "\n".join(out)


def fit(corpus: str, out: str, features: str | None = None, holdout: float = 0.2, seed: int = 0,
        by: str | None = None) -> str:
    """Fit, save model + sidecar, return the held-out correlation table."""
    import joblib
    import numpy as np
    import sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    if not 0 < holdout < 1:
        raise PredictorError(f"--holdout must be between 0 and 1, not {holdout}")
    rows, zc_cols = eligible_rows(corpus)
    feats = _features(features, zc_cols, rows)
    nets = sorted({r["sha256"] for r in rows})
    if len(nets) < 10:
        raise PredictorError(f"{corpus} has {len(nets)} networks with a measured accuracy; at least 10 are needed")
    rng = np.random.default_rng(seed)
    test = set(rng.permutation(nets)[:max(2, round(holdout * len(nets)))].tolist())
    train = [r for r in rows if r["sha256"] not in test]
    held = [r for r in rows if r["sha256"] in test]
    params = dict(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=max(3, min(20, len(train) // 10)),
                  random_state=seed)
    # one thread: on a few hundred rows OpenMP only adds overhead (100x slower on a busy shared CPU)
    with threadpool_limits(1):
        model = HistGradientBoostingRegressor(**params).fit(_matrix(train, feats), [r[TARGET] for r in train])
        cv = cross_val_predict(HistGradientBoostingRegressor(**params), _matrix(rows, feats),
                               [r[TARGET] for r in rows], cv=KFold(5, shuffle=True, random_state=seed))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out)
    fingerprint = hashlib.sha256(json.dumps(sorted((r["sha256"], r[TARGET], r.get("recipe")) for r in rows))
                                 .encode()).hexdigest()
    meta = {"features": feats, "target": TARGET, "model": "HistGradientBoostingRegressor", "params": params,
            "corpus": str(Path(corpus).resolve()), "corpus_fingerprint": fingerprint, "holdout": holdout,
            "seed": seed, "n_train": len(train), "n_held_out": len(held),
            "train_sha256": sorted({r["sha256"] for r in train}),
            "model_sha256": hashlib.sha256(Path(out).read_bytes()).hexdigest(),
            "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__},
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(out + ".json").write_text(json.dumps(meta, indent=1) + "\n")
    preds = Predictor(model, meta).predict(held)
    cv_line = ("predictor, 5-fold out-of-fold", ("", "", ""), rank_correlation(list(cv), [r[TARGET] for r in rows]))
    return _report(preds, held, rows, feats, [cv_line]) + (by_group(rows, feats, by) if by else "")


def evaluate(corpus: str, model_path: str, by: str | None = None) -> str:
    pred = load_predictor(model_path)
    rows, _ = eligible_rows(corpus)
    seen = set(pred.meta.get("train_sha256", ()))
    held = [r for r in rows if r["sha256"] not in seen]
    if not held:
        raise PredictorError(f"every row of {corpus} was used to fit {model_path}: nothing held out to evaluate on")
    missing = [f for f in pred.features if not rows or f not in rows[0]]
    if missing:
        raise PredictorError(f"{corpus} lacks the model's feature column(s) {', '.join(missing)}")
    return _report(pred.predict(held), held, rows, pred.features) + (by_group(rows, pred.features, by) if by else "")


def main_fit(args) -> int:
    text = fit(args.corpus, args.out, args.features, args.holdout, args.seed, args.by)
    print(text)
    print(f"saved {args.out} (+ {args.out}.json)", file=sys.stderr)
    return 0


def main_eval(args) -> int:
    print(evaluate(args.corpus, args.model, args.by))
    return 0
