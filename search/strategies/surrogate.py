"""`--strategy surrogate`: a ridge model over one-hot slot widths, refit after every evaluation.

Features: one indicator per (slot, allowed width). The first `STARTUP` proposals are uniform draws
inside the limits; then, with probability `--explore` a uniform draw, else the new configuration inside
the limits with the highest predicted accuracy (the whole space when it has at most `ENUMERATE`
configurations, else `POOL` uniform draws). Ridge (scikit-learn, alpha 1) fits a nearly additive
benchmark such as Channel-Bench-Macro well (R^2 0.91-0.93 on the slot widths).

`--prior CORPUS`: labelled rows of another space or family (a corpus folder with `rows.jsonl`: a
`corpus from-table` or `corpus build` output; rows with `widths` and an `accuracy`) warm-start it: a
ridge over space-agnostic features (per slot the width's position among that slot's widths, 0 = the
narrowest, 1 = the widest, and its square) is fitted on them; its prediction is one more feature of the
run's own model, and the ranking until the run has `STARTUP` evaluations of its own (no uniform start).
The prior needs as many slots as the searched space.
"""
from __future__ import annotations

import json
from pathlib import Path

from search.strategies.base import WidthsStrategy

STARTUP, ENUMERATE, POOL = 5, 50_000, 4096


class PriorError(ValueError):
    pass


def positions(widths, choices) -> list[float]:
    out = []
    for w, c in zip(widths, choices):
        i = c.index(w) / max(len(c) - 1, 1)
        out += [i, i * i]
    return out


def load_prior(folder: str, slots: int):
    """(model, rows used) of a prior corpus; a one-line PriorError when it cannot be used."""
    from sklearn.linear_model import Ridge

    path = Path(folder)
    path = path / "rows.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise PriorError(f"--prior {folder}: no rows.jsonl (a `corpus build` or `corpus from-table` folder)")
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        w, a = r.get("widths"), r.get("accuracy")
        if r.get("status", "ok") == "ok" and isinstance(w, list) and len(w) == slots and \
                all(isinstance(x, int) for x in w) and isinstance(a, (int, float)):
            rows.append((w, float(a)))
    if len(rows) < 10:
        raise PriorError(f"--prior {folder}: {len(rows)} labelled rows with {slots} widths (need >= 10)")
    choices = [sorted({w[s] for w, _ in rows}) for s in range(slots)]
    model = Ridge(alpha=1.0).fit([positions(w, choices) for w, _ in rows], [a for _, a in rows])
    return model, len(rows)


class Surrogate(WidthsStrategy):
    name = "surrogate"

    def __init__(self, space, cfg, prior=None):
        super().__init__(space, cfg)
        self.explore = getattr(cfg, "explore", 0.1)
        self.prior = prior  # a fitted model over `positions`, or None
        self._pool = None

    def onehot(self, widths) -> list[float]:
        out = []
        for w, c in zip(widths, self.space.choices):
            out += [1.0 if w == x else 0.0 for x in c]
        return out

    def features(self, widths_list):
        import numpy as np

        x = np.array([self.onehot(w) for w in widths_list])
        if self.prior is not None:
            p = self.prior.predict(np.array([positions(w, self.space.choices) for w in widths_list]))
            x = np.hstack([x, p[:, None]])
        return x

    def candidates(self, rng) -> list[list[int]]:
        if self.space.size <= ENUMERATE:
            if self._pool is None:
                self._pool = list(self.space.all())
            return [w for w in self._pool if tuple(w) not in self.seen]
        return [w for w in (self.space.sample(rng) for _ in range(POOL)) if tuple(w) not in self.seen]

    def choose(self, rng, parent, parent_row):
        import numpy as np
        from sklearn.linear_model import Ridge

        data = self.scored()
        if (len(data) < STARTUP and self.prior is None) or rng.random() < self.explore:
            w = self.uniform_new(rng)
            return (w, "uniform (start)" if len(data) < STARTUP else "uniform (exploration)") \
                if w is not None else None
        pool = self.candidates(rng)
        if not pool:
            return None
        x = self.features(pool)
        if len(data) < STARTUP:  # the prior's ranking alone
            pred = x[:, -1]
        else:
            model = Ridge(alpha=1.0).fit(self.features([w for w, _ in data]), [a for _, a in data])
            pred = model.predict(x)
        for j in np.argsort(-pred, kind="stable")[:200]:
            if self.space.fits(pool[j]):
                return pool[j], f"predicted {100 * pred[j]:.2f}%" if pred[j] < 1.5 else "predicted best"
        w = self.uniform_new(rng)
        return (w, "no predicted candidate fits: uniform") if w is not None else None
