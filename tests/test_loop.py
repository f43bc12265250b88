"""search.loop / state / plan / screening: the loop's pieces with scripted roles and fake evaluators.
The state rebuilt from the store equals the state the loop ended with; one evaluation per evaluated
candidate; failures never reach the evaluator."""
import dataclasses
import hashlib
import re

import pytest

from search.llm import ScriptedLLM
from search.loop import SearchConfig, assess, run_loop
from search.plan import Plan
from search.proposal import Proposal
from search.roles import CodeGenerator, PromptImprover
from search.screening import failure, vote
from search.state import SearchState, fingerprint
from search.store import RunStore

SEED = "WIDTH = 16\nclass Net:\n    pass\n"


def code_with(w: int) -> str:
    return f"```python\nWIDTH = {w}\nclass Net:\n    pass\n```"


class Evaluator:
    """Accuracy grows with WIDTH up to 64; FLOPs = WIDTH * 1000; counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, code: str) -> dict:
        w = int(re.search(r"WIDTH = (\d+)", code).group(1))
        self.calls.append(w)
        return {"status": "ok", "accuracy": min(w, 64) / 100, "flops": w * 1000, "params": w * 10, "latency_ms": 0.1}


def loop(tmp_path, answers, evaluate, name="r", precheck=None, **kw):
    cfg = SearchConfig(**{"llm": "scripted", "out": str(tmp_path / name), "iterations": len(answers), "memory": 3,
                          "improver_llm": "rule", **kw})
    store = RunStore(cfg.out)
    res = run_loop(cfg, SEED, CodeGenerator(ScriptedLLM(answers)), PromptImprover(None), evaluate, store,
                   progress=False, precheck=precheck)
    return cfg, store, res


def test_one_evaluation_per_evaluated_candidate_and_none_for_failures(tmp_path):
    ev = Evaluator()
    answers = [code_with(24), "no code here", code_with(24), code_with(16), code_with(40)]
    cfg, store, res = loop(tmp_path, answers, ev)
    assert ev.calls == [16, 24, 40]  # the seed, then only the new networks
    assert [r["status"] for r in store.iterations()] == ["ok", "no_code", "duplicate", "duplicate", "ok"]
    assert res["best"]["accuracy"] == 0.40


def test_state_rebuilt_from_the_store_is_the_state_the_loop_ended_with(tmp_path):
    cfg, store, _ = loop(tmp_path, [code_with(w) for w in (20, 12, 28, 8)], Evaluator(), objective="pareto",
                         hw_metric="flops")
    final = SearchState.restore(cfg, store, SEED, store.meta("seed_row"))
    assert final.done == 4 and final.best_row["accuracy"] == 0.28
    assert sorted(final.seen.values()) == sorted(["the seed network"] + [f"iteration {i}" for i in range(4)])
    assert [t.outcome for t in final.memory.items] == [r["outcome"] for r in store.iterations()[-3:]]
    assert final.pending == (store.iterations()[-1]["next_problem"], store.iterations()[-1]["modification"])
    # the archive: every network is on the front (each wider one is more accurate and costlier)
    assert sorted(e["cost"] for e in final.archive.entries) == [8000, 12000, 16000, 20000, 28000]


def test_plan_cycles_bins_and_picks_parents_from_the_archive(tmp_path):
    cfg, store, _ = loop(tmp_path, [code_with(w) for w in (8, 24, 40)], Evaluator(), objective="pareto",
                         hw_metric="flops")
    state = SearchState.restore(cfg, store, SEED, store.meta("seed_row"))
    plan = Plan(cfg, [12_000, 30_000])
    assert [plan.bin(i) for i in range(4)] == [0, 1, 2, 0] and plan.round_size == 3
    assert [plan.parent(state, i, plan.bin(i))["row"]["flops"] for i in range(3)] == [8000, 24000, 40000]
    assert "Target complexity bin 2 of 3" in plan.notes(1, {"flops": 24000}, state)
    assert plan.in_bin({"flops": 50_000}, 2) and not plan.in_bin({"flops": 50_000}, 0)


def test_failures_are_rows_without_evaluation():
    cfg = SearchConfig(max_flops=1000)
    boom = lambda code: pytest.fail("never evaluated")  # noqa: E731
    assert assess(cfg, Proposal(error="no list"), boom)[1]["status"] == "no_code"
    assert assess(cfg, Proposal(code="x", dup="iteration 3"), boom)[1]["error"].startswith("the same network as iteration 3")
    _, row, seconds = assess(cfg, Proposal(code="x", pre={"status": "ok", "flops": 5000}), boom)
    assert row["status"] == "constraint" and row["error"] == "5,000 FLOPs > limit 1,000" and seconds == 0
    _, row, _ = assess(cfg, Proposal(code="x"), lambda c: {"status": "ok", "accuracy": 0.5, "flops": 2000})
    assert row["status"] == "constraint"  # an evaluator that does not check limits: the loop does
    assert failure(Proposal(code="x", pre={"status": "shape_error", "error": "3 != 4"}), cfg)["status"] == "shape_error"


def test_a_proposal_is_frozen_from_the_answer_and_each_change_is_a_new_record():
    answer = {"code": "x = 1\n", "widths": [8, 16], "format": "widths", "raw": "[8, 16]", "edits": 2,
              "strategy_seconds": 0.01}
    prop = Proposal.of(answer)
    assert prop.widths == (8, 16) and prop.detail == {"edits": 2} and prop.format == "widths"
    with pytest.raises(dataclasses.FrozenInstanceError):
        prop.code = "y"
    answer["widths"].append(32)  # the proposer's answer changing later does not change the record
    assert prop.widths == (8, 16)
    screened = dataclasses.replace(prop, pre={"status": "ok", "zc_snip": 1.0}).with_pre_score(0.5)
    assert screened.pre == {"status": "ok", "zc_snip": 1.0, "zc_score": 0.5} and prop.pre is None
    with pytest.raises(TypeError):
        screened.pre["zc_score"] = 1.0  # read-only, not a dict changed in place
    cand = prop.candidate("tpe", iteration=3, parent=1)
    assert (cand.code, cand.widths, cand.answer_format, cand.proposer, cand.iteration, cand.parent) == \
        ("x = 1\n", (8, 16), "widths", "tpe", 3, 1)
    assert cand.fingerprint == hashlib.sha256(b"x = 1\n").hexdigest()


def test_a_repaired_candidate_is_a_new_record_with_the_proposers_code_kept():
    from types import SimpleNamespace

    cfg = SearchConfig(strategy="mutation")
    seen = []

    def evaluate(code):
        seen.append(code)
        return {"status": "shape_error", "error": "size mismatch"} if code == "bad" else {"status": "ok", "accuracy": .7}

    fix = lambda code, parent: SimpleNamespace(status="repaired", changes=[], reason=None, source="good")  # noqa: E731
    before = Proposal(code="bad")
    after, row, _ = assess(cfg, before, evaluate, fix, "parent", tried=lambda c: None)
    assert seen == ["bad", "good"] and row["status"] == "ok"
    assert (after.code, after.llm_code, after.repair["status"]) == ("good", "bad", "repaired")
    assert before.code == "bad" and before.repair is None


def test_fingerprint_ignores_formatting_and_comments_and_vote_ranks():
    assert fingerprint("x = 1  # one\n") == fingerprint("x=1\n") != fingerprint("x = 2\n")
    assert vote([{"zc_snip": 1.0}, {"zc_snip": 3.0}, None]) == [0.0, 1.0, None]
