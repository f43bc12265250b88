"""Benchmark mode: Channel-Bench-Macro lookups, out-of-space failures, ranks, compare, from-table.

Every test that needs a table takes `cbm_dir` (conftest): it runs on a small table in the published
format that the tests build (real parameter counts, synthetic accuracies), and again on the published
tables where they are (`NASFORGE_CBM_DIR`, else where `corpus.table` looks; skipped with the reason
otherwise).
"""
import json
import random
import re

import pytest

from conftest import run_module
from corpus.table import SPACES, TableEvaluator, expected_best_rank, key_of, load_table, table_path, widths_of
from mutator.seeds import seed_source
from search.llm import ScriptedLLM
from search.loop import SearchConfig
from search.runner import run


def table_file(cbm_dir, space) -> str:
    return str(cbm_dir / SPACES[space]["file"])


def with_widths(space, widths):
    src = seed_source(SPACES[space]["seed"])
    return re.sub(r"^WIDTHS = \[[^\]]*\]$", f"WIDTHS = {list(widths)}", src, count=1, flags=re.M)


@pytest.fixture(scope="module")
def evaluators(cbm_dir):
    evs = {s: TableEvaluator(s, table_file(cbm_dir, s)) for s in SPACES}
    yield evs
    for e in evs.values():
        e.close()


@pytest.mark.parametrize("space", list(SPACES))
def test_widths_found_by_building_match_the_table(evaluators, space):
    ev = evaluators[space]
    keys = random.Random(1).sample(sorted(ev.table), 4)
    for key in keys:
        row = ev.evaluate(with_widths(space, widths_of(key, space)))
        assert row["status"] == "ok", row
        assert row["table_key"] == key  # the seven widths were recovered from the built model
        assert row["params"] == ev.table[key]["params"] and row["flops"] == ev.table[key]["flops"]
        assert row["accuracy"] == pytest.approx(ev.table[key]["mean"] / 100)


def test_out_of_space_candidates_say_exactly_why(evaluators):
    ev = evaluators["cbm-resnet"]
    row = ev.evaluate(with_widths("cbm-resnet", [128, 128, 128, 256, 300, 256, 256]))
    assert row["status"] == "out_of_space"
    assert row["error"] == "layer 4 width 300 is not one of 128/256/384/512"
    # same widths, different structure (an extra layer): refused by its parameter count
    src = with_widths("cbm-resnet", [128, 128, 128, 256, 256, 256, 256])
    src = src.replace("self.pool = nn.AdaptiveAvgPool2d(1)", "self.extra = nn.Conv2d(WIDTHS[4], WIDTHS[4], 1)\n        self.pool = nn.AdaptiveAvgPool2d(1)")
    if "self.extra" in src:
        row = ev.evaluate(src)
        assert row["status"] == "out_of_space" and "structure differs" in row["error"]
    assert ev.evaluate("x = (")["status"] == "build_error"


def test_expected_best_rank_closed_form():
    # m=4, n=2: P(best >= 1) = 1, P(>= 2) = C(3,2)/C(4,2) = 1/2, P(>= 3) = 1/6
    assert expected_best_rank(4, 2) == pytest.approx(1 + 1 / 2 + 1 / 6)
    assert expected_best_rank(16384, 20) / 16384 == pytest.approx(0.0476, abs=2e-4)


def test_compare_reports_ranks_on_a_scripted_llm(tmp_path, evaluators, cbm_dir):
    space = "cbm-mobilenet"
    tab = evaluators[space].table
    order = sorted(tab, key=lambda k: -tab[k]["mean"])
    good, bad = order[:max(3, len(order) // 400)], order[-max(10, len(order) // 4):]
    for group, pool in (("strong", good), ("random-ish", bad)):
        for s in range(4):
            rng = random.Random(s)
            answers = [f"```python\n{with_widths(space, widths_of(rng.choice(pool), space))}```" for _ in range(3)]
            cfg = SearchConfig(llm="scripted", evaluator=f"table:{space}", iterations=3, rng_seed=s, label=group,
                               improver_llm="rule", benchmark_file=table_file(cbm_dir, space), answer_format="code",
                               out=str(tmp_path / f"{group}-{s}"))
            run(cfg, llm=ScriptedLLM(answers), evaluate=evaluators[space].evaluate, progress=False)
    res = run_module("search", "compare", *sorted(tmp_path.glob("*-[0-9]")), "--out", tmp_path / "cmp")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data["benchmark"]["space"] == space and data["benchmark"]["size"] == len(tab)
    assert data["benchmark"]["random_expected_rank"] == pytest.approx(expected_best_rank(len(tab), 3))
    assert max(data["groups"]["strong"]["ranks"]) <= len(good)
    assert data["baseline"] == "random-ish" and data["groups"]["strong"]["p_vs_baseline"] < 0.05
    assert "median best rank" in res.stdout
    # `compare runs/cbm-*` also matches the earlier compare's own folder: skipped with a note
    res = run_module("search", "compare", *sorted(tmp_path.glob("*")), "--out", tmp_path / "cmp2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"note: skipping {tmp_path / 'cmp'}: not a search run (no run.sqlite)" in res.stderr
    # the report names the space and its seed, not the data-set seed the config still holds
    res = run_module("search", "report", tmp_path / "strong-0")
    assert res.returncode == 0, res.stderr[-2000:]
    md = (tmp_path / "strong-0" / "report.md").read_text()
    assert "- space `cbm-mobilenet`: Channel-Bench-Macro table lookups" in md and "seed `cbm-mobilenet`" in md
    assert not re.search(r"\blenet\b", md) and "fashion-mnist" not in md


def test_from_table_materialises_a_corpus(tmp_path, cbm_dir):
    import datasets

    res = run_module("corpus", "from-table", "--space", "cbm-resnet", "--sample", 6, "--out", tmp_path / "c",
                     env={"NASFORGE_CBM_DIR": str(cbm_dir)})
    assert res.returncode == 0, res.stderr[-2000:]
    ds = datasets.load_from_disk(str(tmp_path / "c"))
    tab = load_table(str(table_path("cbm-resnet", table_file(cbm_dir, "cbm-resnet"))))
    assert len(ds) == 6
    assert "cbm-resnet-2222222" in ds["id"]  # a sample always holds the seed's row (its family's reference)
    for r in ds:
        key = r["id"].split("-")[-1]
        assert key_of(r["widths"], "cbm-resnet") == key and r["accuracy"] == pytest.approx(tab[key]["mean"] / 100)
        assert f"WIDTHS = {r['widths']}" in r["code"]
    # ... and finetune can build training pairs from it (tables have no latency: no latency goals)
    res = run_module("finetune", "dataset", "--corpus", tmp_path / "c", "--out", tmp_path / "p", "--eval-fraction", 0.2)
    assert res.returncode == 0, res.stderr[-2000:]
    pairs = datasets.load_from_disk(str(tmp_path / "p"))
    kinds = [json.loads(g)["kind"] for split in pairs.values() for g in split["goal"]]
    assert kinds and "cut_latency" not in kinds and "raise_accuracy" in kinds


def test_profile_looks_a_file_up_in_the_table(tmp_path, cbm_dir):
    from conftest import assert_one_line_error

    space = "cbm-resnet"
    tab = load_table(table_file(cbm_dir, space))
    key = sorted(tab)[1]
    f = tmp_path / "v.py"
    f.write_text(with_widths(space, widths_of(key, space)))
    res = run_module("corpus", "profile", f, "--evaluator", f"table:{space}", "--benchmark-file",
                     table_file(cbm_dir, space))
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["id"] == "v" and row["status"] == "ok" and row["table_key"] == key
    assert row["accuracy"] == pytest.approx(tab[key]["mean"] / 100) and row["params"] == tab[key]["params"]
    f.write_text(with_widths(space, [128, 128, 128, 256, 300, 256, 256]))
    res = run_module("corpus", "profile", f, "--evaluator", f"table:{space}", "--benchmark-file",
                     table_file(cbm_dir, space))
    assert res.returncode == 1 and json.loads(res.stdout.strip().splitlines()[-1])["status"] == "out_of_space"
    assert_one_line_error(run_module("corpus", "profile", f, "--evaluator", "table:nb201"),
                          "unknown benchmark space 'nb201'")
    assert_one_line_error(run_module("corpus", "profile", f), "--dataset is needed to train")


def test_a_configuration_missing_from_a_partial_table_is_out_of_space(tmp_path, tiny_cbm_dir):
    import itertools

    space = "cbm-resnet"
    ev = TableEvaluator(space, table_file(tiny_cbm_dir, space))
    try:
        missing = next(k for k in map("".join, itertools.product("1234", repeat=7)) if k not in ev.table)
        row = ev.evaluate(with_widths(space, widths_of(missing, space)))
        assert row["status"] == "out_of_space" and row["table_key"] == missing
        assert row["error"] == f"configuration {missing} is not in {ev.path}"
    finally:
        ev.close()


def test_a_flops_budget_holds_the_tables_flops(tmp_path, tiny_cbm_dir, monkeypatch):
    """--max-flops in benchmark mode means the table's FLOPs (not the profiler's count at 32x32, 4x
    larger): candidates just under the budget pass, those over it are constraint failures. The table's
    networks are not built for the pre-check (the table has their FLOPs; a build took seconds each)."""
    from corpus.evaluator import Checker
    from search.runner import load_run

    built, check = [], Checker.check
    monkeypatch.setattr(Checker, "check", lambda self, code: built.append(code) or check(self, code))

    space = "cbm-mobilenet"
    tab = load_table(table_file(tiny_cbm_dir, space))
    keys = sorted(tab, key=lambda k: tab[k]["flops"])
    budget = tab[keys[len(keys) // 2]]["flops"]
    picked = [keys[len(keys) // 2], keys[len(keys) // 2 - 1], keys[len(keys) // 2 + 1], keys[-1]]
    answers = [str(widths_of(k, space)) for k in picked]
    out = tmp_path / "budget"
    cfg = SearchConfig(llm="scripted", evaluator=f"table:{space}", iterations=4, improver_llm="rule",
                       benchmark_file=table_file(tiny_cbm_dir, space), answer_format="widths", max_flops=budget,
                       out=str(out))
    run(cfg, llm=ScriptedLLM(answers), progress=False)
    _, iters, _ = load_run(str(out))
    assert [r["status"] for r in iters] == ["ok", "ok", "constraint", "constraint"], [r["error"] for r in iters]
    assert [r["metrics"]["pre_flops"] for r in iters] == [tab[k]["flops"] for k in picked]
    assert iters[0]["metrics"]["flops"] == budget and "flops" in iters[2]["error"].lower()
    assert iters and not [(r["it"], r["metrics"].get("table_key")) for r in iters if r["code"] in built]
