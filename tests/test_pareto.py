"""Multi-objective search: HV/IGD on hand-computable fronts, the Pareto archive, complexity bins and
their coverage, the knowledge base across rounds and resume, constraints checked before training,
zero-cost screening, report and compare. Scripted LLM, fake evaluator and fake pre-check throughout."""
import json
import re
import sqlite3

import pytest

from conftest import TINY_VGG
from search.compare import compare
from search.llm import ScriptedLLM
from search.screening import vote
from search.loop import SearchConfig
from search.pareto import (ParetoArchive, bin_of, coverage, hypervolume, igd, nondominated, normalise,
                           quantile_edges)
from search.report import report
from search.runner import load_extras, load_run, run
from search.store import RunStore

SEED = "WIDTH = 16\nclass Net:\n    pass\n"
EDGES = (0.2, 0.4, 0.6)  # latency_ms bins: < 0.2 | 0.2-0.4 | 0.4-0.6 | >= 0.6


def code_with(width: int) -> str:
    return f"```python\nWIDTH = {width}\nclass Net:\n    pass\n```"


def width_of(code: str) -> int:
    return int(re.search(r"WIDTH = (\d+)", code).group(1))


class FakeEvaluator:
    """Accuracy grows with WIDTH up to 64, and so does the cost: every width up to 64 is a trade-off."""

    def __init__(self):
        self.trained = []

    def __call__(self, code: str) -> dict:
        if "BROKEN" in code:
            return {"status": "build_error", "error": "NameError: BROKEN"}
        w = width_of(code)
        self.trained.append(w)
        return {"status": "ok", "accuracy": min(w, 64) / 100, "flops": w * 1000, "params": w * 10,
                "latency_ms": w / 100}


def fake_precheck(code: str) -> dict:
    if "BROKEN" in code:
        return {"status": "build_error", "error": "NameError: BROKEN"}
    w = width_of(code)
    return {"status": "ok", "flops": w * 1000, "params": w * 10, "latency_ms": w / 100,
            "latency_device": "fake", "zc_synflow": -abs(w - 48), "zc_naswot": None}


@pytest.fixture
def seed_file(tmp_path):
    (tmp_path / "seed.py").write_text(SEED)


def cfg_for(tmp_path, name="r", **kw):
    return SearchConfig(**{"llm": "scripted", "seed": str(tmp_path / "seed.py"), "out": str(tmp_path / name),
                           "iterations": 8, "improver_llm": "rule", "objective": "pareto", "answer_format": "code",
                           **kw})


def bin_following_llm(jitter=0):
    """Answers a width inside the bin the prompt asks for (an LLM that honours the budget)."""
    calls = {"n": 0}

    def answer(messages):
        calls["n"] += 1
        m = re.search(r"Target complexity bin (\d) of 4", messages[1]["content"])
        b = int(m.group(1)) if m else 1
        return code_with({1: 10, 2: 28, 3: 48, 4: 64}[b] + (calls["n"] % 3) * jitter)
    return ScriptedLLM(answer)


# -- indicators and the archive -------------------------------------------------------------------

def test_hypervolume_and_igd_on_hand_computable_fronts():
    assert hypervolume([[0, 1], [1, 0]], ref=(2, 2)) == pytest.approx(3.0)
    assert hypervolume([[1, 1]]) == pytest.approx(1.0)  # the seed alone against HV_REF = (2, 2)
    assert hypervolume([[0, 1], [1, 0], [1.5, 1.5]], ref=(2, 2)) == pytest.approx(3.0)  # dominated: adds nothing
    assert hypervolume([[3, 0]], ref=(2, 2)) == 0.0 and hypervolume([]) == 0.0  # beyond the reference point
    assert hypervolume([[0.5, 0.5]], ref=(1, 1)) == pytest.approx(0.25)
    front = [[0, 1], [1, 0]]
    assert igd(front, front) == pytest.approx(0.0)
    assert igd([[0, 1]], front) == pytest.approx((0 + 2 ** 0.5) / 2)
    assert igd([[1, 1]], front) == pytest.approx(1.0)
    # normalisation: error and cost relative to the seed (acc 0.8, cost 10) -> seed at (1, 1)
    F = normalise([(0.8, 10.0), (0.9, 5.0)], 0.8, 10.0)
    assert F.ravel().tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5])
    assert nondominated([[1, 1], [0.5, 0.5], [0.2, 2], [0.5, 0.5]]) == [1, 2]


def test_archive_keeps_only_non_dominated_members_and_picks_parents_per_bin():
    a = ParetoArchive()
    assert a.add({"accuracy": 0.80, "cost": 1.0})
    assert a.add({"accuracy": 0.85, "cost": 2.0})  # more accurate, costlier: a trade-off
    assert not a.add({"accuracy": 0.79, "cost": 1.5})  # dominated by (0.80, 1.0)
    assert not a.add({"accuracy": 0.80, "cost": 1.0})  # a duplicate adds nothing
    assert a.add({"accuracy": 0.82, "cost": 0.5})  # dominates (0.80, 1.0)
    assert sorted((e["accuracy"], e["cost"]) for e in a.entries) == [(0.82, 0.5), (0.85, 2.0)]
    assert a.pick(1.5, None, 0)["cost"] == 2.0  # the member inside [1.5, inf)
    assert a.pick(0.1, 0.3, 0)["cost"] == 0.5  # none inside: the nearest in log cost
    assert [a.pick(None, None, t)["cost"] for t in range(3)] == [0.5, 2.0, 0.5]  # round-robin by cost
    b = ParetoArchive()  # bins on another metric than the objective's cost (e.g. FLOPs bins, latency objective)
    b.add({"accuracy": 0.8, "cost": 1.0, "pcost": 100.0})
    b.add({"accuracy": 0.9, "cost": 2.0, "pcost": 10.0})
    assert b.pick(50.0, None, 0, key="pcost")["pcost"] == 100.0 and b.pick(50.0, None, 0)["cost"] == 2.0
    assert quantile_edges([1, 2, 3, 4, 5, 6, 7, 8], 4) == pytest.approx([2.75, 4.5, 6.25])
    assert [bin_of(v, [0.2, 0.4]) for v in (0.1, 0.2, 0.39, 0.5, None)] == [0, 1, 1, 2, None]


# -- the loop -------------------------------------------------------------------------------------

def test_partitioning_states_each_bin_in_turn_and_covers_all_bins(tmp_path, seed_file):
    llm = bin_following_llm(jitter=2)
    res = run(cfg_for(tmp_path, bins=4, bin_edges=EDGES), llm=llm, evaluate=FakeEvaluator(),
              precheck=fake_precheck, progress=False)
    assert res["iterations"] == 8
    targets = [int(re.search(r"Target complexity bin (\d) of 4", c[1]["content"]).group(1)) for c in llm.calls]
    assert targets == [1, 2, 3, 4, 1, 2, 3, 4]
    assert "batch-1 latency from 0.2 ms to 0.4 ms" in llm.calls[1][1]["content"]
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert all(r["extra"]["in_bin"] for r in iters)
    cov = coverage(iters, "latency_ms", load_extras(str(tmp_path / "r"))["bin_edges"])
    assert [c["targeted"] for c in cov] == [2, 2, 2, 2] and [c["landed"] for c in cov] == [2, 2, 2, 2]
    # the parent of a bin-3 proposal is the archive member inside bin 3 once one exists
    assert "WIDTH = 48" in llm.calls[6][1]["content"] or "WIDTH = 50" in llm.calls[6][1]["content"]
    assert iters[6]["extra"]["parent_it"] == 2
    report(str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Coverage per complexity bin" in md and "| 4 | batch-1 latency of 0.6 ms or more | 2 | 2 |" in md
    assert "HV reference point (2.0, 2.0)" in md and (tmp_path / "r" / "pareto.png").stat().st_size > 5000


def test_knowledge_base_is_versioned_per_round_and_continues_on_resume(tmp_path, seed_file):
    def improver(messages):
        if "design heuristics" in messages[0]["content"]:
            n = len(re.findall(r"^bin \d: ", messages[1]["content"], re.M))
            return f"Sure:\n- Narrow the classifier in bin 1 ({n} results).\n- Widen early convs in bin 2."
        return "PROBLEM: too small\nMODIFICATION: widen it"

    cfg = dict(bins=2, bin_edges=(0.3,), knowledge_base=True, improver_llm=None)  # a round = 2 iterations
    llm = bin_following_llm()
    run(cfg_for(tmp_path, iterations=3, **cfg), llm=llm, improver_llm=ScriptedLLM(improver),
        evaluate=FakeEvaluator(), precheck=fake_precheck, progress=False)
    store = RunStore(tmp_path / "r", create=False)
    kb = store.kb_versions()
    assert [(v["version"], v["after_it"], v["source"]) for v in kb] == [(0, -1, "initial"), (1, 1, "llm")]
    store.close()
    assert "knowledge base v0" in llm.calls[0][1]["content"] and "knowledge base v1" in llm.calls[2][1]["content"]
    assert "Narrow the classifier in bin 1 (2 results)" in llm.calls[2][1]["content"]
    llm2 = bin_following_llm()
    run(cfg_for(tmp_path, iterations=6, **cfg), resume=True, llm=llm2, improver_llm=ScriptedLLM(improver),
        evaluate=FakeEvaluator(), precheck=fake_precheck, progress=False)
    store = RunStore(tmp_path / "r", create=False)
    kb = store.kb_versions()
    store.close()
    assert [(v["version"], v["after_it"]) for v in kb] == [(0, -1), (1, 1), (2, 3), (3, 5)]
    # the round interrupted by the stop (iterations 2 and 3) is summarised whole after the resume
    assert kb[2]["summary"].count("\n") == 1 and "(2 results)" in kb[2]["items"][0]
    assert "knowledge base v1" in llm2.calls[0][1]["content"] and "knowledge base v2" in llm2.calls[1][1]["content"]
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["extra"]["kb_version"] for r in iters] == [0, 0, 1, 1, 2, 2]
    report(str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "- v3 (after iteration 5, llm):" in md


def test_rule_knowledge_base_without_an_llm(tmp_path, seed_file):
    run(cfg_for(tmp_path, bins=2, bin_edges=(0.3,), knowledge_base=True, iterations=4), llm=bin_following_llm(),
        evaluate=FakeEvaluator(), precheck=fake_precheck, progress=False)
    store = RunStore(tmp_path / "r", create=False)
    kb = store.kb_versions()
    store.close()
    assert len(kb) == 3 and kb[1]["source"] == "rule"
    assert any(h.startswith("In bin 1: narrowed networks") or h.startswith("In bin 2: widened networks")
               for h in kb[1]["items"])
    assert re.search(r"^bin [12]: (narrowed|widened) -> accuracy [+-]\d", kb[1]["summary"], re.M)


def test_constraint_is_checked_before_training_and_is_a_failure_triple(tmp_path, seed_file):
    ev = FakeEvaluator()
    llm = ScriptedLLM([code_with(20), code_with(40), code_with(24)])
    run(cfg_for(tmp_path, objective="accuracy", iterations=3, max_latency_ms=0.3), llm=llm, evaluate=ev,
        precheck=fake_precheck, progress=False)
    assert ev.trained == [16, 20, 24]  # the seed, then never the 40-wide candidate
    _, iters, _ = load_run(str(tmp_path / "r"))
    r = iters[1]
    assert r["status"] == "constraint" and r["error"] == "0.4 ms latency > limit 0.3"
    assert r["metrics"]["pre_latency_ms"] == 0.4 and r["metrics"]["accuracy"] is None
    assert r["outcome"].startswith("FAILED constraint: 0.4 ms latency > limit 0.3")
    assert "FAILED constraint: 0.4 ms latency" in llm.calls[2][1]["content"]  # the triple reaches the prompt


def test_zero_cost_screening_trains_one_of_m_proposals(tmp_path, seed_file):
    ev = FakeEvaluator()
    widths = iter([20, 44, 64, "BROKEN", 30, 52, 36, 24])
    llm = ScriptedLLM(lambda m: "```python\nWIDTH = 8\nBROKEN\n```" if (w := next(widths)) == "BROKEN" else code_with(w))
    run(cfg_for(tmp_path, iterations=2, screen="zero-cost", screen_keep=0.25), llm=llm, evaluate=ev,
        precheck=fake_precheck, progress=False)
    assert len(llm.calls) == 8 and ev.trained == [16, 44, 52]  # the best zero-cost score of each 4 (closest to 48)
    store = RunStore(tmp_path / "r", create=False)
    sc = store.screened()
    store.close()
    assert [(s["it"], s["status"]) for s in sc] == [(0, "screened"), (0, "screened"), (0, "build_error"),
                                                     (1, "screened"), (1, "screened"), (1, "screened")]
    assert sc[0]["metrics"]["zc_synflow"] == -28 and sc[0]["metrics"]["zc_score"] == 0.0  # ranked last of 3
    assert vote([{"zc_synflow": 1.0, "zc_snip": 5.0}, {"zc_synflow": 2.0, "zc_snip": 5.0}, None]) == [0.25, 0.75, None]


def test_old_store_without_the_new_tables_is_readable(tmp_path):
    db = sqlite3.connect(tmp_path / "run.sqlite")
    db.executescript("""CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE iterations (it INTEGER PRIMARY KEY, started REAL, prompt TEXT, raw_answer TEXT, code TEXT,
        status TEXT, error TEXT, metrics TEXT, problem TEXT, modification TEXT, outcome TEXT, instruction TEXT,
        improver_raw TEXT, improver_source TEXT, llm_seconds REAL, profile_seconds REAL, best_accuracy REAL,
        is_best INTEGER, next_problem TEXT);
        INSERT INTO iterations (it, status, metrics) VALUES (0, 'ok', '{"accuracy": 0.5}');""")
    db.commit()
    db.close()
    store = RunStore(tmp_path, create=False)
    assert store.iterations()[0]["extra"] is None and store.iterations()[0]["metrics"] == {"accuracy": 0.5}
    assert store.kb_versions() == [] and store.screened() == []


def test_compare_reports_hv_igd_budgets_and_reduction_vs_baseline(tmp_path, seed_file):
    import numpy as np

    for s in range(3):
        rng = np.random.default_rng(s)
        run(cfg_for(tmp_path, name=f"pareto-{s}", bins=4, bin_edges=EDGES, iterations=8, rng_seed=s, label="pareto"),
            llm=bin_following_llm(jitter=int(rng.integers(1, 3))), evaluate=FakeEvaluator(), precheck=fake_precheck,
            progress=False)
        ws = [int(w) for w in rng.integers(15, 19, size=8)]  # clusters next to the seed
        run(cfg_for(tmp_path, name=f"acc-{s}", objective="accuracy", iterations=8, rng_seed=s, label="acc"),
            llm=ScriptedLLM([code_with(w) for w in ws]), evaluate=FakeEvaluator(), progress=False)
    dirs = [str(tmp_path / f"{g}-{s}") for g in ("pareto", "acc") for s in range(3)]
    text = compare(dirs, str(tmp_path / "cmp"), baseline="acc")
    assert "| configuration | runs | HV | IGD |" in text and "p HV vs acc" in text and "p IGD vs acc" in text
    assert "HV reference point (2.0, 2.0)" in text and "latency_ms bins covered" in text
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    pt = data["pareto"]
    assert pt["metric"] == "latency_ms" and pt["seed_cost"] == pytest.approx(0.16)
    g = pt["groups"]
    assert min(g["pareto"]["hv"]) > max(g["acc"]["hv"]) and g["pareto"]["p_hv_acc"] <= 0.1  # 3 vs 3 seeds, all HV higher
    assert max(g["pareto"]["igd"]) < min(g["acc"]["igd"])
    assert g["pareto"]["bins"] == [4, 4, 4] and max(g["acc"]["bins"]) <= 1
    # acc runs reach at most 18% (0.18): the pareto runs reach >= 17% at a lower latency (12-wide is 12%)
    assert all(r is not None for r in g["pareto"]["reduction_acc"])
    # one hand-checked HV: an acc run's points (error/0.84, latency/0.16) against (2, 2)
    run0 = next(r for r in pt["runs"] if r["dir"].endswith("acc-0"))
    F = normalise(run0["pts"], 0.16, 0.16)
    assert g["acc"]["hv"][0] == pytest.approx(hypervolume(F))
    assert (tmp_path / "cmp" / "compare_pareto.png").stat().st_size > 5000


def test_precheck_handler_measures_a_real_network():
    from corpus.pipeline import evaluate

    def precheck(payload):  # the pipeline without training, as corpus.evaluator.Checker calls it
        return evaluate({"train": False, "latency": "batch1", "zero_cost_data": "random",
                         "zero_cost": "on" if payload.pop("zero_cost", False) else "off", **payload})

    row = precheck({"source": TINY_VGG, "spec": {"in_shape": [1, 1, 28, 28], "classes": 10}, "device": "cpu",
                    "latency_runs": 5})
    assert row["status"] == "ok" and row["params"] > 0 and row["flops"] > 0 and row["latency_ms"] > 0
    assert row["latency_device"].startswith("cpu")
    bad = precheck({"source": TINY_VGG.replace("nn.Linear(32,", "nn.Linear(31,"),
                    "spec": {"in_shape": [1, 1, 28, 28], "classes": 10}})
    assert bad["status"] == "shape_error" and bad["latency_ms"] is None
    zc = precheck({"source": TINY_VGG, "spec": {"in_shape": [1, 1, 28, 28], "classes": 10}, "zero_cost": True,
                   "latency_runs": 5, "zero_cost_batch": 16})
    assert zc["status"] == "ok" and all(zc[k] is not None for k in ("zc_synflow", "zc_naswot", "zc_snip"))
