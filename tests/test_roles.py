"""search.roles: the feedback memory, outcome text, diagnoses (rule and LLM, messy answers) and the
prompts the roles build, with scripted LLMs."""
from search.llm import LLMServerError, ScriptedLLM
from search.roles import (CodeGenerator, FeedbackMemory, PromptImprover, Triple, outcome_text, parse_diagnosis,
                          rule_diagnosis)

PARENT = {"status": "ok", "accuracy": 0.60, "flops": 280_000, "params": 44_000, "latency_ms": 0.3}


def test_memory_keeps_the_last_k_triples_in_order():
    m = FeedbackMemory(2)
    assert m.render() == "(no attempts yet)"
    for i in range(3):
        m.add(Triple(f"p{i}", f"m{i}", f"o{i}"))
    assert m.render() == "1. problem: p1 | tried: m1 | outcome: o1\n2. problem: p2 | tried: m2 | outcome: o2"


def test_outcome_is_relative_to_the_parent_and_failures_keep_their_first_line():
    better = dict(PARENT, accuracy=0.6125)
    assert outcome_text(better, PARENT).endswith("+1.25 points vs the network it started from")
    assert outcome_text({"status": "shape_error", "error": "RuntimeError: 3 != 4\nTraceback..."}, PARENT) == \
        "FAILED shape_error: RuntimeError: 3 != 4"


def test_rule_diagnosis_follows_the_outcome():
    assert "narrow" in rule_diagnosis(dict(PARENT, accuracy=0.59, params=50_000), PARENT)[1]
    assert "continue" in rule_diagnosis(dict(PARENT, accuracy=0.61, params=50_000), PARENT)[1]
    assert "repeats" in rule_diagnosis({"status": "duplicate", "error": "the same network as iteration 2"}, PARENT)[0]


def test_parse_diagnosis_tolerates_chatter_and_rejects_a_missing_line():
    assert parse_diagnosis("Sure!\n**Problem:** too narrow\n- Modification - widen conv2\nThanks") == \
        ("too narrow", "widen conv2")
    assert parse_diagnosis("PROBLEM: too narrow") is None


def test_improver_says_which_network_the_candidate_started_from():
    llm = ScriptedLLM(["PROBLEM: conv2 is a bottleneck\nMODIFICATION: widen conv2 to 64"])
    imp = PromptImprover(llm)
    m = FeedbackMemory(5)
    d = imp.diagnose(dict(PARENT, accuracy=0.58), PARENT, m, seed=0)
    assert d == {"problem": "conv2 is a bottleneck", "modification": "widen conv2 to 64", "raw": llm.answers[0],
                 "source": "llm"}
    user = llm.calls[0][-1]["content"]
    assert "The network the candidate started from: " in user and "Best network" not in user
    bad = PromptImprover(ScriptedLLM(["no idea"])).diagnose(PARENT, PARENT, m, seed=0)
    assert bad["source"] == "rule-fallback" and bad["problem"]


def test_improver_server_failure_falls_back_to_the_rule():
    class Down:
        def generate(self, *a, **k):
            raise LLMServerError("connection refused")

    d = PromptImprover(Down()).diagnose({"status": "no_code"}, PARENT, FeedbackMemory(5), seed=0)
    assert d["source"] == "llm_error" and "connection refused" in d["error"] and "no Python code" in d["problem"]


def test_code_generator_prompt_has_the_parent_source_instruction_and_memory():
    llm = ScriptedLLM(["```python\nW = 2\n```"])
    m = FeedbackMemory(5)
    m.add(Triple("p", "widen", "FAILED build_error: x"))
    prop = CodeGenerator(llm).propose("W = 1\n", PARENT, {"kind": "raise_accuracy"}, "narrow conv1", m, seed=0)
    user = llm.calls[0][-1]["content"]
    assert "W = 1" in user and "narrow conv1" in user and "FAILED build_error: x" in user
    assert prop["code"].strip() == "W = 2"
