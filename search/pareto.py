"""Multi-objective helpers: the Pareto archive, hypervolume and IGD (pymoo), complexity bins.

    archive = ParetoArchive()
    archive.add({"accuracy": 0.90, "cost": 0.8, ...})      # True if it is non-dominated
    F = normalise([(acc, cost), ...], seed_acc, seed_cost)
    hypervolume(F), igd(F, reference_front)

Conventions. Both objectives are minimised and stated relative to the seed network, so runs of
the same seed are comparable and the numbers do not depend on the metric's unit:

    f1 = (1 - accuracy) / (1 - seed accuracy)      error relative to the seed's error
    f2 = cost / seed cost                          hw metric (latency_ms | flops | params) relative to the seed's

The seed sits at (1, 1). Hypervolume uses the reference point HV_REF = (2, 2) (twice the seed's
error, twice its cost): points beyond it add nothing, and the seed alone has HV = 1. IGD is the
mean Euclidean distance from each point of a reference front to the nearest point of a run, in the
same normalised space; `search compare` uses the non-dominated union of all compared runs.
"""
from __future__ import annotations

import bisect
import math

HV_REF = (2.0, 2.0)
HW_METRICS = ("latency_ms", "flops", "params")
UNITS = {"latency_ms": "ms", "flops": "FLOPs", "params": "parameters"}


def cost_of(metrics: dict, metric: str) -> float | None:
    """The hw metric of a stored row: the pre-check's value (measured on --latency-device) if any."""
    v = metrics.get(f"pre_{metric}")
    return metrics.get(metric) if v is None else v


from corpus.show import dominates, nondominated  # noqa: E402,F401  (the one Pareto rule)


class ParetoArchive:
    """Non-dominated entries on (accuracy up, cost down); an entry is a dict with both keys."""

    def __init__(self):
        self.entries: list[dict] = []

    @staticmethod
    def _vec(e: dict) -> tuple[float, float]:
        return (-e["accuracy"], e["cost"])

    def add(self, entry: dict) -> bool:
        v = self._vec(entry)
        if any(dominates(self._vec(e), v) or self._vec(e) == v for e in self.entries):
            return False
        self.entries = [e for e in self.entries if not dominates(v, self._vec(e))]
        self.entries.append(entry)
        return True

    def pick(self, lo: float | None, hi: float | None, turn: int, key: str = "cost") -> dict:
        """The parent for the next proposal.

        With a bin [lo, hi) on the entries' `key` (the partition metric): the most accurate member
        inside it; if none is, the member closest to the bin (distance in log `key`), ties broken by
        accuracy. Without a bin (lo = hi = None): round-robin over the members sorted by cost, so
        every trade-off gets extended in turn.
        """
        if lo is None and hi is None:
            members = sorted(self.entries, key=lambda e: e["cost"])
            return members[turn % len(members)]

        def gap(e):
            v = e.get(key)
            if v is None:
                return math.inf
            c = math.log(max(v, 1e-12))
            if lo is not None and v < lo:
                return math.log(lo) - c
            if hi is not None and v >= hi:
                return c - math.log(hi)
            return 0.0

        return min(self.entries, key=lambda e: (gap(e), -e["accuracy"]))


def normalise(points, seed_acc: float, seed_cost: float):
    """(accuracy, cost) pairs -> numpy array of (relative error, relative cost), see module docstring."""
    import numpy as np

    err0 = max(1.0 - seed_acc, 1e-9)
    return np.array([[(1.0 - a) / err0, c / seed_cost] for a, c in points], dtype=float).reshape(-1, 2)


def hypervolume(F, ref=HV_REF) -> float:
    """Hypervolume (pymoo) of minimisation vectors F against `ref`; 0.0 for no points."""
    import numpy as np
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float).reshape(-1, 2)
    F = F[np.all(F < np.asarray(ref), axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref, dtype=float))(F))


def igd(F, reference_front) -> float:
    """Inverted generational distance (pymoo) of F to `reference_front`: lower is better."""
    import numpy as np
    from pymoo.indicators.igd import IGD

    F = np.asarray(F, dtype=float).reshape(-1, 2)
    if len(F) == 0:
        return float("inf")
    return float(IGD(np.asarray(reference_front, dtype=float).reshape(-1, 2))(F))


def quantile_edges(values, bins: int) -> list[float]:
    """The bins - 1 inner edges splitting `values` into equally filled bins (empirical quantiles)."""
    import numpy as np

    vals = sorted(v for v in values if v is not None)
    if bins < 2 or not vals:
        return []
    return [float(q) for q in np.quantile(vals, [i / bins for i in range(1, bins)])]


def bin_of(value: float | None, edges: list[float]) -> int | None:
    """Bin index of `value`: bin i covers [edges[i-1], edges[i]); the outer bins are open-ended."""
    if value is None or not edges:
        return None
    return bisect.bisect_right(edges, value)


def bin_range(b: int, edges: list[float]) -> tuple[float | None, float | None]:
    return (edges[b - 1] if b > 0 else None, edges[b] if b < len(edges) else None)


def fmt(v: float, metric: str) -> str:
    return f"{v:.3g} ms" if metric == "latency_ms" else (f"{v / 1e6:.3g} M" if v >= 1e5 else f"{v:,.0f}")


def bin_text(b: int, edges: list[float], metric: str) -> str:
    """Human-readable range of bin b, e.g. 'latency_ms 0.31 ms to 0.52 ms'."""
    lo, hi = bin_range(b, edges)
    name = {"latency_ms": "batch-1 latency", "flops": "FLOPs per sample", "params": "parameters"}[metric]
    if lo is None:
        return f"{name} below {fmt(hi, metric)}"
    if hi is None:
        return f"{name} of {fmt(lo, metric)} or more"
    return f"{name} from {fmt(lo, metric)} to {fmt(hi, metric)}"


def run_points(iters: list[dict], seed: dict, metric: str) -> list[tuple[float, float]]:
    """(accuracy, cost) of the seed and every profiled candidate of a run that has both."""
    pts = []
    for m in [seed] + [r["metrics"] or {} for r in iters if r["status"] == "ok"]:
        c = cost_of(m, metric)
        if m.get("accuracy") is not None and c is not None:
            pts.append((m["accuracy"], c))
    return pts


def hv_curve(iters: list[dict], seed: dict, metric: str, seed_acc: float, seed_cost: float) -> list[float]:
    """Hypervolume of the seed plus the candidates so far, after each iteration (normalised space)."""
    out = []
    for i in range(len(iters)):
        out.append(hypervolume(normalise(run_points(iters[:i + 1], seed, metric), seed_acc, seed_cost)))
    return out


def coverage(iters: list[dict], metric: str, edges: list[float]) -> list[dict]:
    """Per bin: iterations that targeted it, profiled candidates that landed in it, best accuracy there."""
    rows = [{"bin": b, "targeted": 0, "landed": 0, "best": None} for b in range(len(edges) + 1)]
    for r in iters:
        x = r.get("extra") or {}
        if x.get("bin") is not None and x["bin"] < len(rows):
            rows[x["bin"]]["targeted"] += 1
        m = r["metrics"] or {}
        b = bin_of(cost_of(m, metric), edges) if r["status"] == "ok" else None
        if b is not None:
            rows[b]["landed"] += 1
            if m.get("accuracy") is not None:
                rows[b]["best"] = max(rows[b]["best"] or 0.0, m["accuracy"])
    return rows
