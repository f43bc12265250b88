"""`search compare` and `search report` on answer formats: well-formed and repeat rates, LLM time,
best after 5/10/N, one p-value per baseline, and benchmark ranks inside a FLOPs budget.

The run folders are real run stores (`search.runner.new_store`, as `search run` writes them) filled
with hand-made iterations, so every count below is known exactly; the benchmark table is a small
file in Channel-Bench-Macro's format with made-up accuracies and FLOPs.
"""
import json

import pytest
import numpy as np
from scipy.stats import mannwhitneyu, permutation_test

from conftest import assert_one_line_error, run_module
from corpus.table import expected_best_rank
from search.compare import compare
from search.loop import SearchConfig, SearchError
from search.report import report
from search.runner import new_store


def make_run(folder, iters, seed_row=None, **cfg) -> str:
    """A run store in `folder`: config, seed row, and `iters` as (status, accuracy, flops, extra) tuples."""
    store = new_store(SearchConfig(out=str(folder), **cfg))
    try:
        store.set_meta("seed_row", seed_row or {"status": "ok", "accuracy": 0.40, "flops": 1000})
        for it, (status, acc, flops, extra) in enumerate(iters):
            extra = dict(extra)
            metrics = {"accuracy": acc, "flops": flops} if status == "ok" else {}
            store.add({"it": it, "status": status, "metrics": {**metrics, **(extra.pop("metrics", {}))},
                       "llm_seconds": extra.pop("llm_seconds", 2.0), "profile_seconds": 0.1, "extra": extra})
    finally:
        store.close()
    return str(folder)


def widths_run(folder, label="widths", shift=0.0, **cfg):
    """12 iterations, (ok, duplicate, parse_error, ok) three times: 6 ok, 3 duplicate, 3 parse errors;
    the ok ones at it 0, 3, 4, 7, 8, 11 with accuracy 0.50 + it / 100 (+ shift)."""
    pattern = ["ok", "duplicate", "parse_error", "ok"] * 3
    iters = [(s, 0.50 + it / 100 + shift, 1000, {"answer_format": "widths", "samples": 1 + (s == "duplicate"),
                                                 "repeats": int(s == "duplicate"), "repaired": it == 4})
             for it, s in enumerate(pattern)]
    return make_run(folder, iters, llm="scripted", label=label, answer_format="widths", **cfg)


def random_run(folder, accs, **cfg):
    return make_run(folder, [("ok", a, 1000, {"answer_format": None}) for a in accs], **{"strategy": "random", **cfg})


def test_compare_gives_format_rates_llm_time_and_best_after_5_10_n(tmp_path):
    dirs = [widths_run(tmp_path / f"w-{s}", rng_seed=s) for s in range(2)]
    dirs += [random_run(tmp_path / f"r-{s}", [0.45] * 12, rng_seed=s) for s in range(2)]
    text = compare(dirs, str(tmp_path / "cmp"))
    g = json.loads((tmp_path / "cmp" / "compare.json").read_text())["groups"]
    w, r = g["widths"], g["random"]
    assert w["format"] == "widths" and r["format"] == "-"
    assert w["well_formed"] == [0.75, 0.75] and w["repeat"] == [0.25, 0.25] and w["valid"] == [0.5, 0.5]
    assert w["llm_seconds"] == [2.0, 2.0] and r["llm_seconds"] == [None, None]
    assert w["best_at"] == {"5": [0.54, 0.54], "10": [0.58, 0.58]} and w["best"] == [0.61, 0.61]
    assert r["well_formed"] == [1.0, 1.0] and r["repeat"] == [0.0, 0.0]
    head = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert "| format | valid rate % | well-formed % | repeat rate % | LLM s / proposal | best acc after 5 % | " \
           "best acc after 10 % | best acc after N=12 % |" in head
    assert head.endswith("| median best % [95% CI] | AUC best-so-far % | runs reaching | mean its to reach | "
                         "p vs random | Holm p vs random | P(superior) vs random |")
    assert "| widths | 2 | widths | 50.0 ± 0.0 | 75.0 ± 0.0 | 25.0 ± 0.0 | 2.0 ± 0.0 | 54.00 ± 0.00 | " \
           "58.00 ± 0.00 | 61.00 ± 0.00 |" in text
    assert "| random | 2 | - | 100.0 ± 0.0 | 100.0 ± 0.0 | 0.0 ± 0.0 | - | 45.00 ± 0.00 |" in text
    # N = 8: the columns after 5 iterations and after N, none after 10
    short = compare(dirs[:1] + [random_run(tmp_path / "r-short", [0.45] * 8)], str(tmp_path / "cmp8"))
    assert "best acc after 5 %" in short and "best acc after 10 %" not in short and "after N=8 %" in short


def test_the_curves_title_names_the_task_and_seed(tmp_path, monkeypatch):
    """Trained runs of one seed and data set: the curves plot says which (cells' plots look alike)."""
    import matplotlib.axes

    titles = []
    orig = matplotlib.axes.Axes.set
    monkeypatch.setattr(matplotlib.axes.Axes, "set",
                        lambda self, **kw: (titles.append(kw.get("title")), orig(self, **kw))[1])
    dirs = [random_run(tmp_path / f"r-{s}", [0.45] * 6, rng_seed=s, seed="vgg-small") for s in range(2)]
    compare(dirs, str(tmp_path / "cmp"))
    assert "fashion-mnist, seed vgg-small: search curves: mean, min-max band" in titles
    titles.clear()  # different seeds: no common name
    compare(dirs + [random_run(tmp_path / "r-x", [0.45] * 6, seed="lenet")], str(tmp_path / "cmp2"))
    assert "search curves: mean, min-max band" in titles


def test_compare_notes_runs_measured_on_different_thread_counts(tmp_path):
    """A thread count changes what a trained network measures: mixing settings is said, not hidden."""
    def run(folder, threads, label):
        return make_run(folder, [("ok", 0.5, 1000, {"metrics": {"device_name": f"cpu: X ({threads} threads)"}})] * 6,
                        llm="random", label=label)
    same = compare([run(tmp_path / "a", 1, "random"), run(tmp_path / "b", 1, "tuned")], str(tmp_path / "c1"))
    assert "device settings" not in same
    mixed = compare([run(tmp_path / "d", 2, "random"), run(tmp_path / "e", 1, "tuned")], str(tmp_path / "c2"))
    assert ("note: these runs were measured on 2 device settings (cpu: X (1 threads): tuned; "
            "cpu: X (2 threads): random)") in mixed


def test_report_header_sums_up_the_answers(tmp_path):
    folder = widths_run(tmp_path / "w-0")
    report(folder)
    md = (tmp_path / "w-0" / "report.md").read_text()
    # 3 duplicates asked 2 answers, the rest 1: 15 / 12; iteration 4 was repaired
    assert "- answers: format widths; well-formed 75.0% (ok, duplicate, constraint); repeats 25.0% (duplicate); " \
           "repaired 1; answers asked per proposal 1.25" in md
    report(random_run(tmp_path / "r-0", [0.45] * 3))
    assert "- answers: format - (strategy random, no LLM); well-formed 100.0%" in (tmp_path / "r-0" / "report.md").read_text()


def test_one_p_value_per_baseline(tmp_path):
    dirs = []
    for s in range(4):  # a clearly ahead of b; c in between, overlapping a
        dirs.append(widths_run(tmp_path / f"a-{s}", label="a", shift=0.20 + s / 100, rng_seed=s))
        dirs.append(widths_run(tmp_path / f"b-{s}", label="b", shift=s / 100, rng_seed=s))
        dirs.append(widths_run(tmp_path / f"c-{s}", label="c", shift=0.18 + 2 * s / 100, rng_seed=s))
    text = compare(dirs, str(tmp_path / "cmp"), baseline="b,c")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    g = data["groups"]

    def p(x, y):  # exact: every relabelling of the 4 + 4 runs (a and c tie at 0.81 and 0.83)
        return permutation_test((g[x]["best"], g[y]["best"]), lambda u, v: mannwhitneyu(u, v).statistic,
                                n_resamples=np.inf).pvalue

    assert data["baselines"] == ["b", "c"] and data["baseline"] == "b"
    assert g["a"]["p_vs"] == {"b": pytest.approx(p("a", "b")), "c": pytest.approx(p("a", "c"))}
    assert g["a"]["p_vs"]["b"] < 0.05 < g["a"]["p_vs"]["c"]  # two different tests, not the first one twice
    assert g["a"]["p_vs_baseline"] == g["a"]["p_vs"]["b"]
    assert g["b"]["p_vs"]["b"] is None and g["b"]["p_vs"]["c"] == pytest.approx(p("b", "c"))
    # Holm over the 3 pairs tested (a-b, a-c, b-c; c-b is b-c again)
    assert sorted(map(tuple, data["holm_family"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    ps = {"ab": p("a", "b"), "ac": p("a", "c"), "bc": p("b", "c")}
    order = sorted(ps, key=ps.get)
    want, run = {}, 0.0
    for j, k in enumerate(order):
        run = max(run, min(1.0, (3 - j) * ps[k]))
        want[k] = run
    assert g["a"]["p_holm_vs"] == {"b": pytest.approx(want["ab"]), "c": pytest.approx(want["ac"])}
    assert g["c"]["p_holm_vs"]["b"] == g["b"]["p_holm_vs"]["c"] == pytest.approx(want["bc"])
    assert g["a"]["superiority_vs"]["b"] == 1.0 and g["b"]["superiority_vs"]["b"] is None
    head = next(line for line in text.splitlines() if line.startswith("| configuration"))
    assert head.endswith("| p vs b | Holm p vs b | p vs c | Holm p vs c | P(superior) vs b |")
    row_a = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row_a.endswith(f"| {g['a']['p_vs']['b']:.3g} | {g['a']['p_holm_vs']['b']:.3g} | "
                          f"{g['a']['p_vs']['c']:.3g} | {g['a']['p_holm_vs']['c']:.3g} | 1.00 |")


# key -> (mean accuracy %, FLOPs): the best configuration is over a budget of 500 FLOPs
TABLE = {"4444444": (95.0, 900), "3333333": (93.0, 400), "2222222": (92.0, 450), "1111111": (91.0, 100),
         "1212121": (90.0, 600), "2121212": (89.0, 200)}


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "mobilenet.json"
    path.write_text(json.dumps({k: {"acc": [m] * 3, "mean": m, "std": 0.0, "flops": f, "params": 1}
                                for k, (m, f) in TABLE.items()}))
    return str(path)


def table_run(folder, table_file, budget, iters, **cfg):
    """A benchmark run whose seed (93.5 %, 700 FLOPs) is over the budget of 500."""
    return make_run(folder, iters, seed_row={"status": "ok", "accuracy": 0.935, "flops": 700}, llm="scripted",
                    evaluator="table:cbm-mobilenet", benchmark_file=table_file, max_flops=budget, **cfg)


def test_benchmark_ranks_are_among_the_configurations_inside_the_budget(tmp_path, table_file):
    pre = {"metrics": {"pre_flops": 4 * 450}}  # the search's pre-check counts at 32x32: 4x the table
    # 92 % (450 FLOPs) found; a 95 % candidate over the budget (900) does not count
    found = [("ok", 0.90, 200, {}), ("ok", 0.92, 450, pre), ("ok", 0.95, 900, {})]
    dirs = {b: [table_run(tmp_path / f"{b}-{s}", table_file, b, found, label="llm", rng_seed=s) for s in range(2)]
            for b in (None, 500)}
    text = compare(dirs[500], str(tmp_path / "cmp"))
    bench = json.loads((tmp_path / "cmp" / "compare.json").read_text())["benchmark"]
    assert (bench["size"], bench["table_size"], bench["max_flops"], bench["optimum"]) == (4, 6, 500, 0.93)
    assert bench["random_expected_rank"] == pytest.approx(expected_best_rank(4, 3))
    g = json.loads((tmp_path / "cmp" / "compare.json").read_text())["groups"]["llm"]
    assert g["best"] == [0.92, 0.92] and g["ranks"] == [2, 2]  # 93 % (400 FLOPs) is the only one better inside
    assert "FLOPs budget 500 (the table's count" in text and "4 of 6 configurations inside" in text
    assert "optimum inside the budget 93.00%" in text and "| 2 [2, 2] | 50.00% | 2,2 |" in text
    # uniform sampling, 3 draws from the 4 inside: P(best > 1) = C(3, 3) / C(4, 3) = 1/4, so median 1, mean 1.25
    assert bench["uniform_median_rank"] == 1 and bench["uniform_mean_rank"] == pytest.approx(1.25)
    assert "uniform sampling's exact best-of-3 rank (3 draws without replacement from the 4): median 1" in text
    ref = next(line for line in text.splitlines() if line.startswith("| uniform sampling (exact, from the table) |"))
    assert f"| 1 | 25.00% | mean {bench['uniform_mean_rank']:.1f} |" in ref
    assert "note: these runs held --max-flops against the pre-check's FLOPs (32x32 input, median 4.00x" in text
    # the same answers without a budget: the seed (93.5 %) and the 95 % candidate count, among all 6
    text = compare(dirs[None], str(tmp_path / "cmp-all"))
    data = json.loads((tmp_path / "cmp-all" / "compare.json").read_text())
    assert data["benchmark"]["size"] == 6 and data["benchmark"]["max_flops"] is None
    assert data["groups"]["llm"]["ranks"] == [1, 1] and "FLOPs budget" not in text


def test_runs_with_different_budgets_are_refused(tmp_path, table_file):
    a = table_run(tmp_path / "a-0", table_file, 500, [("ok", 0.92, 450, {})])
    b = table_run(tmp_path / "b-0", table_file, None, [("ok", 0.92, 450, {})])
    c = table_run(tmp_path / "c-0", table_file, 800, [("ok", 0.92, 450, {})])
    with pytest.raises(SearchError, match=f"{a} --max-flops 500, {c} --max-flops 800"):
        compare([a, c], str(tmp_path / "cmp"))
    res = run_module("search", "compare", a, b, "--out", tmp_path / "cmp")
    assert_one_line_error(res, f"the runs have different FLOPs budgets: {a} --max-flops 500, {b} --max-flops none")
    assert not (tmp_path / "cmp").exists()
