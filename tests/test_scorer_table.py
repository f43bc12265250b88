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


def test_the_gen_and_pool_families_test_only_where_their_runs_have_ten_seeds(scorer_table):
    """(g): gen vs tuned and vs the strongest after 20 (amendment 3, two-sided since amendment 8); (j): pool vs
    the strongest after 20 and after 5 (amendment 8). A cell without ten gen or pool runs counts as p = 1."""
    from search.stats import holm, permutation_p

    good, mid, far = list(range(1, 11)), list(range(40, 50)), list(range(500, 510))
    base = {"random": (far, far), "largest": ([20] * 10, [60] * 10)}
    cells = {"a": {**cell((mid, far), (far, far), base), "gen": (good, good), "pool": (good, mid)},
             "b": {**cell((mid, far), (far, far), base), "gen": (good[:9], good[:9])}}  # no pool, gen short
    fam = scorer_table.families(cells)
    g, j = fam["g"], fam["j"]
    assert [(t["cell"], t["ref"], t["at"]) for t in g] == [("a", "tuned", 20), ("a", "largest", 20),
                                                             ("b", "tuned", 20), ("b", "largest", 20)]
    assert [(t["cell"], t["ref"], t["at"]) for t in j] == [("a", "largest", 20), ("a", "largest", 5),
                                                             ("b", "largest", 20), ("b", "largest", 5)]
    assert g[0]["p"] == pytest.approx(permutation_p(good, mid)) and g[2]["p"] is None and j[2]["p"] is None
    assert j[1]["p"] == pytest.approx(permutation_p(mid, [60] * 10))
    assert [t["holm"] for t in j] == pytest.approx(holm([j[0]["p"], j[1]["p"], 1.0, 1.0]))
    assert j[0]["verdict"] == "yes" and j[1]["verdict"] == "yes" and g[0]["verdict"] == "yes"
    # (e) and (f) are what they were without the new configurations
    assert scorer_table.families({"a": cell((mid, far), (far, far), base)})["f"][0]["p"] == \
        pytest.approx(fam["f"][0]["p"])


def test_a_tie_in_median_is_never_better_or_worse(scorer_table):
    same = [3, 7, 7, 9, 11, 12, 12, 30, 31, 40]
    fam = scorer_table.families({"c": cell((same, same), (same, same),
                                           {"random": (same, same), "largest": (same[::-1], same)})})
    assert all(t["verdict"] == "no" and t["p"] == pytest.approx(1.0) for t in fam["e"] + fam["f"])


def test_the_fm_families_are_higher_is_better_and_wait_for_every_seed(scorer_table):
    from search.stats import holm, permutation_p

    hi, lo = [0.80, 0.81, 0.82, 0.83, 0.84], [0.70, 0.71, 0.72, 0.73, 0.74]
    fams = {
        # tuned above random and frozen; the strongest baseline (highest median: surrogate) above tuned
        "vgg-small": cell((hi, hi), (lo, lo), {"random": (lo, lo), "mutation": (lo, lo),
                                               "surrogate": ([0.9] * 5, [0.9] * 5)}),
        # one baseline with 4 seeds: the family has not run
        "lenet": cell((hi, hi), (lo, lo), {"random": (lo, lo), "largest": (hi[:4], hi[:4])}),
    }
    fam = scorer_table.fm_families(fams)
    h, i = fam["h"], fam["i"]
    assert [(t["cell"], t["ref"]) for t in h] == [("vgg-small", "random"), ("lenet", "random")]
    assert [(t["cell"], t["ref"]) for t in i] == [("vgg-small", "frozen"), ("vgg-small", "surrogate"),
                                                  ("lenet", "frozen"), ("lenet", "strongest")]
    p = permutation_p(hi, lo)
    assert p == pytest.approx(2 / 252)  # five against five, complete separation: the smallest exact two-sided p
    assert h[1]["p"] is None and h[1]["verdict"] is None and all(t["p"] is None for t in i[2:])
    assert [t["holm"] for t in h] == pytest.approx(holm([p, 1.0]))
    assert [t["holm"] for t in i] == pytest.approx(holm([p, permutation_p(hi, [0.9] * 5), 1.0, 1.0]))
    assert h[0]["verdict"] == i[0]["verdict"] == "yes"  # 2/252 x 2 and x 4 < 0.05 (x 7 would not be)
    assert i[1]["b"] == [0.9] * 5 and i[1]["verdict"] == "worse"  # the strongest is the highest median, not the lowest


def test_the_fm_baselines_table_says_what_five_seeds_can_show(tmp_path, capsys):
    """benchmarks/baselines_table.py --fm on synthetic compare outputs of one family: partial, the strongest
    strategy by highest median, and the power line (5 a side: no test of family (c)'s 9 can pass 0.05)."""
    import json

    baselines_table = load_benchmark("baselines_table")
    best = {g: [0.70 + 0.01 * i + 0.001 * k for k in range(5)] for i, g in enumerate(baselines_table.STRATEGIES)}
    (tmp_path / "sw" / "compare-lenet").mkdir(parents=True)
    (tmp_path / "sw" / "compare-lenet" / "compare.json").write_text(
        json.dumps({"groups": {g: {"best": b} for g, b in best.items()}}))
    (tmp_path / "llm" / "fm-lenet").mkdir(parents=True)
    (tmp_path / "llm" / "fm-lenet" / "compare.json").write_text(
        json.dumps({"groups": {"frozen": {"best": [0.7] * 5}, "random": {"best": [0.71] * 5}}}))
    from search.loop import SearchConfig
    from search.runner import new_store

    for seed, statuses in enumerate((["ok", "duplicate", "ok"], ["ok", "ok", "ok"])):  # random's runs: 5 of 6 new
        store = new_store(SearchConfig(out=str(tmp_path / "sw" / "runs" / "lenet" / f"random-{seed}")))
        for it, status in enumerate(statuses):
            store.add({"it": it, "status": status, "metrics": {"accuracy": 0.7}, "extra": {}})
        store.close()
    assert baselines_table.fm_main(tmp_path / "sw", tmp_path / "llm") == 0
    out = capsys.readouterr().out
    assert "Partial: no runs yet of vgg-small, resnet-small" in out
    random_row = next(line for line in out.splitlines() if line.startswith("| random |"))
    assert random_row.split(" | ")[3] == "5/6"  # trained: the duplicate is not a new network
    assert next(line for line in out.splitlines() if line.startswith("| tpe |")).split(" | ")[3] == "–"  # no stores
    assert f"**{baselines_table.STRATEGIES[-1]}**" in out  # the highest median
    assert "smallest two-sided exact p is 0.0079" in out
    assert "family (c) by 3 (0.024)" in out and "(d) by 1 (0.008)" in out  # one family run: 3 and 1 tests
