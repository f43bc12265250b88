"""benchmarks/scorer_table.py's decision (issue 29's protocol, benchmarks/scorer.md): the two Holm families
over the table cells, from per-cell ranks. Synthetic ranks with known outcomes; no table needed."""
import pytest
from benchmark_module import load_benchmark


@pytest.fixture(scope="module")
def scorer_table():
    return load_benchmark("scorer_table")


def cell(tuned, frozen, baselines):
    return {"tuned": tuned, "frozen": frozen, "baselines": baselines}


def test_families_pick_the_strongest_baseline_correct_by_holm_and_say_better_or_worse(scorer_table):
    from search.stats import holm, permutation_p

    good = list(range(1, 11))  # ranks 1..10: far better than any reference below
    far = list(range(500, 510))
    cells = {
        # tuned better than random and frozen; the strongest baseline (`largest`, rank 1 every seed) beats it
        "a": cell((good, good), (far, far), {"random": (far, far), "largest": ([1] * 10, [1] * 10),
                                             "surrogate": ([50] * 10, [50] * 10)}),
        # frozen seeds short: the cell has not run, its tests count as p = 1
        "b": cell((good, good), (far[:9], far[:9]), {"random": (far, far), "largest": ([5] * 10, [5] * 10)}),
    }
    fam = scorer_table.families(cells)
    e, f = fam["e"], fam["f"]
    assert [(t["cell"], t["ref"], t["at"]) for t in e] == [("a", "random", 20), ("a", "frozen", 20),
                                                             ("b", "random", 20), ("b", "frozen", 20)]
    assert [(t["cell"], t["ref"], t["at"]) for t in f] == [("a", "largest", 20), ("a", "largest", 5),
                                                             ("b", "largest", 20), ("b", "largest", 5)]
    p = permutation_p(good, far)
    assert e[0]["p"] == pytest.approx(p) and e[2]["p"] is None and e[2]["verdict"] is None
    assert [t["holm"] for t in e] == pytest.approx(holm([p, p, 1.0, 1.0]))
    assert e[0]["verdict"] == e[1]["verdict"] == "yes"
    assert f[0]["verdict"] == "worse" and f[0]["holm"] < 0.05  # 1..10 against ten 1s: higher median, significant


def test_a_tie_in_median_is_never_better_or_worse(scorer_table):
    same = [3, 7, 7, 9, 11, 12, 12, 30, 31, 40]
    fam = scorer_table.families({"c": cell((same, same), (same, same),
                                           {"random": (same, same), "largest": (same[::-1], same)})})
    assert all(t["verdict"] == "no" and t["p"] == pytest.approx(1.0) for t in fam["e"] + fam["f"])
