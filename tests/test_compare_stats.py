"""`search.stats` against hand-computable cases, brute force and scipy; `search compare`'s Holm, effect
size, median intervals and `--baseline best` on hand-made run stores (`test_compare_formats.make_run`)."""
import itertools
import json
import math
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, rankdata

import search.stats
from search.compare import compare, non_llm
from search.loop import SearchError
from search.stats import bootstrap_median_ci, expected_median_best_rank, holm, permutation_p, superiority
from test_compare_formats import make_run, random_run, widths_run


def brute_p(a, b):
    """Two-sided p over every split of the pooled midranks: 2 min(P(sum <= obs), P(sum >= obs)), capped at 1."""
    r = rankdata(list(a) + list(b))
    sums = r[np.array(list(itertools.combinations(range(len(r)), len(a))))].sum(axis=1)
    obs = r[:len(a)].sum()
    return min(1.0, 2 * min(np.mean(sums <= obs + 1e-9), np.mean(sums >= obs - 1e-9)))


def test_permutation_p_hand_computed():
    # 1 of the C(6, 3) = 20 splits puts all of a lowest, 1 all highest: p = 2 / 20
    assert permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert permutation_p([4, 5, 6], [1, 2, 3]) == pytest.approx(0.1)
    assert permutation_p([1, 1], [1, 1, 1]) == 1.0  # all tied: no evidence at all
    assert permutation_p([], [1, 2]) is None


def test_permutation_p_is_scipy_exact_mann_whitney_without_ties():
    rng = np.random.default_rng(3)
    for na, nb, shift in ((4, 4, 1.0), (7, 9, 0.5), (10, 10, 0.8), (3, 12, 0.0)):
        a, b = rng.normal(size=na), rng.normal(size=nb) + shift
        assert permutation_p(a, b) == pytest.approx(mannwhitneyu(a, b, method="exact").pvalue, rel=1e-9)


def test_heavy_ties_exact_p_differs_from_the_asymptotic_one():
    # 10 vs 10 on 5 values: the normal approximation says 0.054, every one of the 184,756 splits 0.047
    a, b = [1, 1, 2, 2, 2, 2, 3, 3, 3, 4], [2, 2, 2, 2, 4, 4, 5, 5, 5, 5]
    exact = permutation_p(a, b)
    assert exact == pytest.approx(brute_p(a, b), rel=1e-9)
    assert exact < 0.05 < mannwhitneyu(a, b, method="asymptotic").pvalue


def test_monte_carlo_p_is_seeded_and_near_the_exact_one(monkeypatch):
    a, b = [1, 1, 2, 2, 2, 2, 3, 3, 3, 4], [2, 2, 2, 2, 4, 4, 5, 5, 5, 5]
    exact = permutation_p(a, b)
    monkeypatch.setattr(search.stats, "EXACT_CELLS", 0)  # too big to count: random relabellings
    mc = permutation_p(a, b, n_resamples=40_000, rng_seed=1)
    assert mc == permutation_p(a, b, n_resamples=40_000, rng_seed=1)
    assert mc == pytest.approx(exact, abs=0.006)  # 4 standard errors of 2 x a tail of 0.023 over 40k draws
    assert not search.stats.is_exact(10, 10)
    monkeypatch.undo()
    assert search.stats.is_exact(10, 10) and search.stats.is_exact(20, 20)


def test_holm_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, and never below a smaller p's
    assert holm([None]) == [None] and holm([]) == []


def test_superiority_direction_and_ties():
    assert superiority([2], [1]) == 1.0 and superiority([1], [2]) == 0.0 and superiority([1], [1]) == 0.5
    assert superiority([3, 1], [2]) == 0.5 and superiority([1, 2], [1, 2]) == 0.5
    a, b = [0.5, 0.7, 0.7, 0.9], [0.6, 0.7, 0.8]
    assert superiority(a, b) == pytest.approx(mannwhitneyu(a, b).statistic / 12)  # U / (n_a n_b)
    ranks_a, ranks_b = [3, 5], [10, 40]  # ranks: lower is better, so pass them negated
    assert superiority([-r for r in ranks_a], [-r for r in ranks_b]) == 1.0
    assert superiority([], [1]) is None


def test_bootstrap_median_interval():
    vals = [0.61, 0.58, 0.64, 0.60, 0.59, 0.66, 0.62, 0.57, 0.63, 0.65]
    lo, hi = bootstrap_median_ci(vals)
    assert lo <= statistics.median(vals) <= hi and min(vals) <= lo < hi <= max(vals)
    assert bootstrap_median_ci(vals) == (lo, hi)  # seeded
    assert bootstrap_median_ci(vals, level=0.5) != (lo, hi)
    assert bootstrap_median_ci([2, 2, 2]) == (2.0, 2.0) and bootstrap_median_ci([]) is None


def test_expected_median_best_rank_against_every_draw():
    for m, n in ((8, 3), (10, 1), (12, 4), (6, 6)):
        best = sorted(min(c) for c in itertools.combinations(range(1, m + 1), n))  # every draw, equally likely
        want = next(r for r in range(1, m + 1) if sum(b <= r for b in best) >= len(best) / 2)
        assert expected_median_best_rank(m, n) == want, (m, n)
    # and a bigger one by simulation: the median of 4,000 simulated bests is within a rank of the exact one
    rng = np.random.default_rng(0)
    sims = [rng.choice(200, size=5, replace=False).min() + 1 for _ in range(4000)]
    assert abs(np.median(sims) - expected_median_best_rank(200, 5)) <= 1.5
    # 16,384 configurations, 20 draws: the median sits well below the mean of 780.2 (a long right tail)
    r, below = expected_median_best_rank(16384, 20), lambda r: 1 - math.comb(16384 - r, 20) / math.comb(16384, 20)
    assert below(r) >= 0.5 > below(r - 1)
    assert r == 558
    with pytest.raises(ValueError):
        expected_median_best_rank(10, 0)


def test_non_llm_runs():
    assert non_llm(SimpleNamespace(llm="random"))  # old runs: no strategy field
    assert not non_llm(SimpleNamespace(llm="scripted"))
    assert non_llm(SimpleNamespace(llm="scripted", strategy="evolution"))
    assert not non_llm(SimpleNamespace(llm="scripted", strategy="llm"))
    # a model that scores the candidates is a language-model configuration, never the "strongest non-LLM" one
    assert not non_llm(SimpleNamespace(llm="smollm2-135m", strategy="scored", scorer="smollm2-135m"))


def test_scored_runs_group_by_their_scorer():
    from search.loop import SearchConfig

    tuned = SearchConfig(strategy="scored", scorer="smollm2-135m", scorer_adapter="adapters/score-on-resnet")
    assert tuned.group == "scored:smollm2-135m+adapters/score-on-resnet"
    assert SearchConfig(strategy="scored", scorer="smollm2-135m").group == "scored:smollm2-135m"
    assert SearchConfig(strategy="scored", scorer="x", label="mine").group == "mine"
    assert SearchConfig(strategy="tpe").group == "tpe"


def test_compare_holm_superiority_and_median_interval(tmp_path):
    dirs = [widths_run(tmp_path / f"w-{s}", shift=s / 100, rng_seed=s) for s in range(4)]  # best 0.61 .. 0.64
    dirs += [random_run(tmp_path / f"r-{s}", [0.45 + s / 100] * 12, rng_seed=s) for s in range(4)]
    text = compare(dirs, str(tmp_path / "cmp"))
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    w = data["groups"]["widths"]
    assert data["holm_family"] == [["widths", "random"]] and data["test"].startswith("Mann-Whitney U, exact")
    assert w["p_vs"]["random"] == pytest.approx(2 / 70) == w["p_holm_vs"]["random"]  # 1 of C(8, 4) each way
    assert w["p_vs_baseline"] == w["p_vs"]["random"] and w["superiority_vs"] == {"random": 1.0}
    ci = w["median_ci"]
    assert ci["of"] == "accuracy" and ci["median"] == pytest.approx(0.625) and ci["lo"] <= 0.625 <= ci["hi"]
    assert "exact permutation p (two-sided); Holm p: adjusted over the K = 1 comparisons of this compare" in text
    row = next(line for line in text.splitlines() if line.startswith("| widths |"))
    assert f"| 62.50 [{100 * ci['lo']:.2f}, {100 * ci['hi']:.2f}] |" in row
    assert row.endswith("| 0.0286 | 0.0286 | 1.00 |")


def test_baseline_best_picks_the_strongest_non_llm_configuration(tmp_path):
    dirs = []
    for s in range(4):
        dirs.append(widths_run(tmp_path / f"w-{s}", label="llm", shift=0.30 + s / 100, rng_seed=s))  # best 0.91..
        dirs.append(random_run(tmp_path / f"m-{s}", [0.80 + s / 100] * 12, label="mutation", rng_seed=s))
        dirs.append(random_run(tmp_path / f"r-{s}", [0.45 + s / 100] * 12, rng_seed=s))
    text = compare(dirs, str(tmp_path / "cmp"), baseline="best")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    g = data["groups"]
    assert data["baseline_mode"] == "best" and data["baseline"] == "mutation" and data["baselines"] == ["mutation"]
    assert {k: v["baseline"] for k, v in g.items()} == {"llm": "mutation", "mutation": "random", "random": "mutation"}
    assert list(g["llm"]["p_vs"]) == ["mutation"] and g["llm"]["p_vs_baseline"] == pytest.approx(2 / 70)
    # 2 pairs: llm-mutation, mutation-random (tested once, though asked both ways); no llm-random
    assert sorted(map(sorted, data["holm_family"])) == [["llm", "mutation"], ["mutation", "random"]]
    assert g["llm"]["p_holm_vs"]["mutation"] == pytest.approx(2 * 2 / 70)
    assert g["random"]["superiority_vs"]["mutation"] == 0.0 and g["mutation"]["superiority_vs"]["random"] == 1.0
    head = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert head.endswith("| baseline | p vs baseline | Holm p | P(superior) vs baseline |")
    assert "the strongest non-LLM configuration of the runs (`--baseline best`" in text
    with pytest.raises(SearchError, match="--baseline best: no non-LLM configuration among llm"):
        compare(dirs[::3], str(tmp_path / "cmp2"), baseline="best")


def test_baseline_best_in_benchmark_mode_takes_the_lowest_median_rank(tmp_path):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({f"{i:07d}": {"acc": [90.0 - i] * 3, "mean": 90.0 - i, "std": 0.0, "flops": 100,
                                              "params": 1} for i in range(10)}))
    common = {"evaluator": "table:cbm-mobilenet", "benchmark_file": str(table),
              "seed_row": {"status": "ok", "accuracy": 0.80, "flops": 100}}
    dirs = []
    for s in range(3):  # ranks: llm 1, "near" 3, "far" 6 (rank 1 = 90 %)
        dirs.append(make_run(tmp_path / f"l-{s}", [("ok", 0.90, 100, {})] * 3, llm="scripted", label="llm",
                             rng_seed=s, **common))
        dirs.append(make_run(tmp_path / f"f-{s}", [("ok", 0.85, 100, {})] * 3, llm="random", label="far",
                             rng_seed=s, **common))
        dirs.append(make_run(tmp_path / f"n-{s}", [("ok", 0.88, 100, {})] * 3, llm="random", label="near",
                             rng_seed=s, **common))
    text = compare(dirs, str(tmp_path / "cmp"), baseline="best")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    g = data["groups"]
    assert g["llm"]["ranks"] == [1, 1, 1] and g["near"]["ranks"] == [3, 3, 3] and g["far"]["ranks"] == [6, 6, 6]
    assert data["baseline"] == "near" and g["llm"]["baseline"] == "near" and g["near"]["baseline"] == "far"
    assert g["llm"]["superiority_vs"]["near"] == 1.0  # lower rank = better
    assert g["llm"]["median_ci"] == {"of": "rank", "median": 1, "lo": 1.0, "hi": 1.0, "level": 0.95}
    # uniform sampling, 3 draws from 10: P(best > r) = C(10 - r, 3) / C(10, 3); r = 2 gives 56 / 120 <= 1/2
    assert data["benchmark"]["uniform_median_rank"] == 2
    assert "uniform sampling's exact best-of-3 rank (3 draws without replacement from the 10): median 2" in text
