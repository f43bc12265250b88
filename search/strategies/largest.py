"""`--strategy largest`: the widest configuration inside the limits, then a greedy over one-step changes.

First proposal: the configuration with the largest sum of choice indices (every slot as wide as the
limits allow; ties broken by the larger cost, then the first in order) among those that fit: the whole
table is enumerated (its costs need no build); a code space narrows from the widest grid point, one
step of the slot that saves the most FLOPs at a time, until it fits (pre-checks). Then, from the best
network so far, the one-step changes (one slot one choice up or down) and swaps (one slot up, another
down) that are new and fit, in order of accuracy gained per FLOP: each slot's observed accuracy change
per FLOP of its earlier one-step moves from a best (untried slots first, widening before narrowing),
ties by the larger cost. "Largest" is what a practitioner tries first; it is a strong baseline on a
benchmark whose accuracy grows with width (Channel-Bench-Macro: nearly additive in the slot widths).
"""
from __future__ import annotations

from search.strategies.base import WidthsStrategy

ENUMERATE = 200_000  # spaces up to this size are enumerated for the first proposal


class Largest(WidthsStrategy):
    name = "largest"

    def widest(self) -> list[int] | None:
        sp = self.space
        if sp.size <= ENUMERATE and (sp.table or not sp.limits):
            top, most = [], None  # the fitting configurations of the largest index sum, in order
            for w in sp.all():
                if tuple(w) in self.seen or not sp.fits(w):
                    continue
                n = sum(sp.index(w))
                if most is None or n > most:
                    top, most = [w], n
                elif n == most:
                    top.append(w)
            # costs only for the ties (a code space pre-checks each in the sandbox: never the whole space)
            return max(top, key=lambda w: (sp.cost(w) or {}).get("flops") or 0) if top else None
        w = [c[-1] for c in sp.choices]
        for _ in range(sum(len(c) for c in sp.choices)):
            if sp.fits(w) and tuple(w) not in self.seen:
                return w
            base = (sp.cost(w) or {}).get("flops") or 0
            steps = []
            for s, c in enumerate(sp.choices):
                i = c.index(w[s])
                if i > 0:
                    n = list(w)
                    n[s] = c[i - 1]
                    steps.append((base - ((sp.cost(n) or {}).get("flops") or base), -s, n))
            if not steps:
                return None
            w = max(steps)[2]
        return None

    def slot_gain(self) -> dict[tuple[int, int], float]:
        """(slot, direction) -> mean accuracy change per FLOP of the one-step moves tried from a best."""
        acc = dict(self.scored())
        gains: dict[tuple[int, int], list[float]] = {}
        for w, a in acc.items():
            for v, b in acc.items():
                diff = [s for s in range(len(w)) if w[s] != v[s]]
                if len(diff) != 1:
                    continue
                s = diff[0]
                d = 1 if self.space.index(v)[s] > self.space.index(w)[s] else -1
                dflops = ((self.space.cost(v) or {}).get("flops") or 0) - ((self.space.cost(w) or {}).get("flops") or 0)
                if d == 1 and dflops > 0:
                    gains.setdefault((s, d), []).append((b - a) / dflops)
        return {k: sum(v) / len(v) for k, v in gains.items()}

    def choose(self, rng, parent, parent_row):
        if not self.scored():
            w = self.widest()
            return (w, "widest that fits") if w is not None else None
        base = self.best()
        sp, gain = self.space, self.slot_gain()
        idx = sp.index(base)
        n = len(sp.choices)
        ups = [s for s in range(n) if idx[s] + 1 < len(sp.choices[s])]
        downs = [t for t in range(n) if idx[t] > 0]
        moves = [((s, 1),) for s in ups] + [((t, -1),) for t in downs] + \
            [((s, 1), (t, -1)) for s in ups for t in downs if s != t]
        ranked = []
        for m in moves:
            w = list(base)
            for s, d in m:
                w[s] = sp.choices[s][idx[s] + d]
            if not self.new(w):
                continue
            known = [gain.get((s, 1)) for s, d in m if d == 1]
            untried = any(g is None for g in known) if known else False
            score = sum(g for g in known if g is not None)
            ranked.append(((untried, m[0][1] == 1 and len(m) == 1, score, (sp.cost(w) or {}).get("flops") or 0), w))
        if not ranked:
            w = self.uniform_new(rng)
            return (w, "no new neighbour: uniform") if w is not None else None
        return max(ranked, key=lambda x: x[0])[1], "greedy step from the best"
