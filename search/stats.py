"""Small statistics for `search compare`: exact permutation p, Holm adjustment, probability of
superiority, bootstrap intervals of a median, and uniform sampling's median best-of-n rank.

    python -c "from search.stats import permutation_p; print(permutation_p([1, 2, 3], [4, 5, 6]))"  # 0.1

Conventions:
- `permutation_p` is the Mann-Whitney U test with its p computed from the permutation distribution
  of U (midranks under ties), not from the normal approximation: exact when the counting below is
  cheap (always, for the group sizes a compare sees), else Monte-Carlo with a fixed seed. Two-sided:
  p = min(1, 2 min(P(U <= u), P(U >= u))), scipy's convention (on untied data it equals
  `scipy.stats.mannwhitneyu(method="exact")`). With heavy ties the asymptotic p can sit on the other
  side of 0.05; this one cannot be off by more than the Monte-Carlo error, and is exact where counted.
- `superiority(a, b)` = P(A > B) + P(A = B) / 2 over all pairs: larger values are better. Pass
  scores where higher is better (accuracies; negated ranks), so that > 0.5 means a is better.
- `bootstrap_median_ci` is the percentile bootstrap: seeded, so one input gives one interval.
- `expected_median_best_rank(m, n)`: the median of the best (lowest) rank of n configurations drawn
  uniformly without replacement from m, P(best >= r) = C(m - r + 1, n) / C(m, n), in exact integers.
"""
from __future__ import annotations

import math

import numpy as np

EXACT_CELLS = 50_000_000  # counting table cells (values x subset sizes x rank sums) up to which p is exact


def _midranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)  # average ranks of ties


def _sum_counts(r2: np.ndarray, k: int) -> np.ndarray:
    """counts[s] = number of k-element subsets of r2 (integers) summing to s, as float64 (exact up to
    2**53, relative error 1e-16 beyond: enough for a p-value)."""
    top = int(r2.sum())
    cnt = np.zeros((k + 1, top + 1))
    cnt[0, 0] = 1.0
    for v in r2.astype(int):
        # a 0/1 knapsack step: the right-hand side is the table before this value
        cnt[1:, v:] = cnt[1:, v:] + cnt[:-1, :top + 1 - v]
    return cnt[k]


def is_exact(na: int, nb: int) -> bool:
    """Whether `permutation_p` counts every split of groups of na and nb values (it depends on the sizes
    only: the midranks of n values always sum to n (n + 1) / 2)."""
    n = na + nb
    return (min(na, nb) + 1) * (n * (n + 1) + 1) * n <= EXACT_CELLS


def permutation_p(a, b, n_resamples: int = 100_000, rng_seed: int = 0) -> float | None:
    """Two-sided p of the Mann-Whitney U statistic under random relabelling of a and b (module
    docstring). Exact (every C(n_a + n_b, n_a) split counted, through the distribution of the rank sum)
    when the counting table has at most EXACT_CELLS cells (up to about 50 vs 50); else
    n_resamples seeded random relabellings, p = (count + 1) / (n_resamples + 1) per tail. None when a
    or b is empty."""
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if not len(a) or not len(b):
        return None
    if len(a) > len(b):  # count subsets of the smaller group: the test is symmetric
        a, b = b, a
    na, n = len(a), len(a) + len(b)
    r2 = np.rint(2 * _midranks(np.concatenate([a, b]))).astype(int)  # midranks are halves: doubled, integers
    obs = int(r2[:na].sum())
    if is_exact(na, n - na):
        cnt = _sum_counts(r2, na)
        total = cnt.sum()
        lo, hi = cnt[:obs + 1].sum() / total, cnt[obs:].sum() / total
    else:
        rng = np.random.default_rng(rng_seed)
        le = ge = 0
        for start in range(0, n_resamples, 10_000):
            k = min(10_000, n_resamples - start)
            sums = rng.permuted(np.tile(r2, (k, 1)), axis=1)[:, :na].sum(axis=1)
            le, ge = le + int((sums <= obs).sum()), ge + int((sums >= obs).sum())
        lo, hi = (le + 1) / (n_resamples + 1), (ge + 1) / (n_resamples + 1)
    return float(min(1.0, 2 * min(lo, hi)))


def holm(pvalues) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order: the i-th smallest of the K p-values that
    are not None becomes max over j <= i of min(1, (K - j + 1) p_(j)); None stays None."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    k, out, run = len(idx), [None] * len(pvalues), 0.0
    for j, i in enumerate(idx):
        run = max(run, min(1.0, (k - j) * pvalues[i]))
        out[i] = run
    return out


def superiority(a, b) -> float | None:
    """P(A > B) + P(A = B) / 2 for A drawn from a and B from b (the common-language effect size, U / (n_a
    n_b)); higher values are better, so > 0.5 means a tends to be better. None when a or b is empty."""
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if not len(a) or not len(b):
        return None
    d = a[:, None] - b[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def bootstrap_median_ci(values, level: float = 0.95, n: int = 10_000, rng_seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median: the (1 - level) / 2 and (1 + level) / 2 quantiles of
    the medians of n resamples with replacement (seeded). None when values is empty."""
    x = np.asarray([v for v in values if v is not None], float)
    if not len(x):
        return None
    meds = np.median(np.random.default_rng(rng_seed).choice(x, size=(n, len(x))), axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def expected_median_best_rank(m: int, n: int) -> int:
    """Median best rank (1 = best) of n configurations drawn uniformly without replacement from m: the
    smallest r with P(best <= r) = 1 - C(m - r, n) / C(m, n) >= 1/2 (exact integer arithmetic)."""
    if m < 1 or n < 1:
        raise ValueError(f"need m >= 1 configurations and n >= 1 draws, got m={m}, n={n}")
    total, lo, hi = math.comb(m, n), 1, max(1, m - n + 1)  # at r = m - n + 1, C(n - 1, n) = 0
    while lo < hi:  # P(best > r) falls with r: bisect for the first r where it is <= 1/2
        mid = (lo + hi) // 2
        if 2 * math.comb(m - mid, n) <= total:
            hi = mid
        else:
            lo = mid + 1
    return lo
