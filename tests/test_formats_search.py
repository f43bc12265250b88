"""`search run` in each answer format (widths / diff / code) with scripted LLMs and an in-process
forward-pass evaluator: parse failures as failure rows, widths realised by the mutator, repeats
resampled, shape-broken diff/code answers repaired, and the grammar fields sent to the server."""
import json
import re

import pytest

from finetune.formats import diff_text, widths_gbnf, width_slots
from search.llm import ScriptedLLM
from search.loop import SearchConfig
from search.runner import load_run, run
from mutator import seeds

LENET = seeds.seed_source("lenet")
CONV2 = "        self.conv2 = nn.Conv2d(6, 16, 5)"


def forward_evaluate(code: str) -> dict:
    """Builds the network in process and runs it at fashion-mnist's shape: build_error / shape_error
    with the exception text, else 'accuracy' grows with the parameter count (test code only)."""
    import torch

    scope = {}
    try:
        exec(compile(code, "<candidate>", "exec"), scope)
        net = scope["Net"]((1, 1, 28, 28), (10,), {}, "cpu")
    except Exception as exc:
        return {"status": "build_error", "error": f"{type(exc).__name__}: {exc}"}
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, 1, 28, 28))
    except Exception as exc:
        return {"status": "shape_error", "error": f"{type(exc).__name__}: {exc}"}
    if tuple(out.shape) != (2, 10):  # a view that folds channels into the batch runs, but wrongly
        return {"status": "shape_error", "error": f"output shape {tuple(out.shape)}, expected (2, 10)"}
    params = sum(p.numel() for p in net.parameters())
    return {"status": "ok", "accuracy": min(params / 1e5, 0.99), "flops": params * 10, "params": params,
            "latency_ms": 0.1}


def cfg_for(tmp_path, name, fmt, n, **kw):
    return SearchConfig(**{"llm": "scripted", "seed": "lenet", "dataset": "fashion-mnist", "out": str(tmp_path / name),
                           "iterations": n, "improver_llm": "rule", "answer_format": fmt, **kw})


def test_widths_answers_realised_with_failures_and_repeats_resampled(tmp_path):
    answers = ["[24, 120, 84]",        # valid: conv2 -> 24, fc1's input and the view follow (mutator)
               "[24, 120]",            # wrong count
               "[20, 120, 84]",        # 20 is not an allowed value
               "[24, 120, 84]",        # a repeat of iteration 0: asked again (--samples 2) ...
               "[32, 96, 84]"]         # ... and this new one is kept
    llm = ScriptedLLM(answers)
    run(cfg_for(tmp_path, "w", "widths", 4, samples=2, server_kind="llama.cpp", exclude_tried=False), llm=llm,
        evaluate=forward_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "w"))
    st = [(r["status"], r["extra"]["parse_status"]) for r in iters]
    assert st == [("ok", "ok"), ("parse_error", "wrong_count"), ("parse_error", "not_allowed"), ("ok", "ok")]
    assert "nn.Linear(24 * 4 * 4, 120)" in iters[0]["code"] and "view(-1, 24 * 4 * 4)" in iters[0]["code"]
    assert "2 widths for 3 slots" in iters[1]["error"] or "wrong_count" in iters[1]["error"]
    assert iters[3]["extra"]["repeats"] == 1 and iters[3]["extra"]["samples"] == 2
    assert iters[3]["extra"]["answer_widths"] == [32, 96, 84]
    assert all(r["extra"]["answer_format"] == "widths" for r in iters)
    # the grammar went with every request (the seed's slots first: the best, conv2 at 24, is the later parent); the re-ask names the repeat; the history shows tried widths
    slots = width_slots([{"value": 16, "multiple": 8, "layers": []}, {"value": 120, "multiple": 8, "layers": []},
                         {"value": 84, "multiple": 8, "layers": []}])
    assert llm.extras[0] == {"grammar": widths_gbnf(slots)}  # the seed's slots; later parents are wider
    assert all(set(e) == {"grammar"} for e in llm.extras) and len(llm.extras) == 5
    assert "Not [24, 120, 84]: already tried (iteration 0)" in llm.calls[4][1]["content"]
    assert "Tried:\n[24, 120, 84]" in llm.calls[1][1]["content"]


def test_widths_grammar_leaves_out_the_parent_and_every_tried_list(tmp_path):
    answers = ["[24, 120, 84]", "[20, 120, 84]", "[32, 96, 84]"]  # ok, not allowed (still excluded), ok
    llm = ScriptedLLM(answers)
    run(cfg_for(tmp_path, "x", "widths", 3, server_kind="llama.cpp"), llm=llm, evaluate=forward_evaluate,
        progress=False)
    _, iters, _ = load_run(str(tmp_path / "x"))
    assert [r["status"] for r in iters] == ["ok", "parse_error", "ok"]
    slots = width_slots([{"value": 16, "multiple": 8, "layers": []}, {"value": 120, "multiple": 8, "layers": []},
                         {"value": 84, "multiple": 8, "layers": []}])
    assert llm.extras[0] == {"grammar": widths_gbnf(slots, [(16, 120, 84)])}  # the seed, the first parent
    # later grammars (parent [24, 120, 84], the best) leave out the seed's list's siblings tried so far
    from test_formats import _gbnf_regex

    last = _gbnf_regex(llm.extras[2]["grammar"])
    assert not re.fullmatch(last, "[24, 120, 84]")  # the parent, tried in iteration 0
    assert re.fullmatch(last, "[32, 96, 84]") and re.fullmatch(last, "[24, 112, 84]")
    # resumed, the tried lists come back from the store
    llm2 = ScriptedLLM(["[8, 96, 84]"])
    run(cfg_for(tmp_path, "x", "widths", 4, server_kind="llama.cpp"), resume=True, llm=llm2,
        evaluate=forward_evaluate, progress=False)
    g = _gbnf_regex(llm2.extras[0]["grammar"])
    assert not re.fullmatch(g, "[24, 120, 84]") and not re.fullmatch(g, "[32, 96, 84]")
    assert re.fullmatch(g, "[8, 96, 84]")
    # --exclude-tried off: the plain grammar of the parent's slots
    llm3 = ScriptedLLM(["[24, 120, 84]"])
    run(cfg_for(tmp_path, "y", "widths", 1, server_kind="llama.cpp", exclude_tried=False), llm=llm3,
        evaluate=forward_evaluate, progress=False)
    assert llm3.extras[0] == {"grammar": widths_gbnf(slots)}


def test_diff_grammar_quotes_the_parent_source(tmp_path):
    from finetune.formats import diff_gbnf

    llm = ScriptedLLM([diff_text([(CONV2, CONV2.replace("16, 5", "24, 5"))])])
    run(cfg_for(tmp_path, "g", "diff", 1, server_kind="llama.cpp"), llm=llm, evaluate=forward_evaluate, progress=False)
    assert llm.extras[0] == {"grammar": diff_gbnf(parent=seeds.seed_source("lenet"))}
    assert json.dumps(CONV2 + "\n") in llm.extras[0]["grammar"]  # the line it may quote, verbatim


def test_diff_answers_unmatched_and_shape_repair_with_outcome(tmp_path):
    broken = diff_text([(CONV2, CONV2.replace("16, 5", "24, 5"))])  # fc1 and the view still expect 16
    answers = [broken,
               diff_text([("        self.conv9 = nn.Conv2d(6, 16, 5)", CONV2)]),  # SEARCH text not in the source
               diff_text([("        self.fc2 = nn.Linear(120, 84)\n        self.fc3 = nn.Linear(84, num_classes)",
                           "        self.fc2 = nn.Linear(120, 64)\n        self.fc3 = nn.Linear(64, num_classes)")])]
    run(cfg_for(tmp_path, "d", "diff", 3), llm=ScriptedLLM(answers), evaluate=forward_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "d"))
    r0, r1, r2 = iters
    assert r0["status"] == "ok" and r0["extra"]["repaired"] is True
    assert "nn.Conv2d(6, 24, 5)" in r0["extra"]["llm_code"] and "nn.Linear(16 * 4 * 4, 120)" in r0["extra"]["llm_code"]
    assert "nn.Linear(24 * 4 * 4, 120)" in r0["code"] and "view(-1, 24 * 4 * 4)" in r0["code"]
    assert r0["outcome"].startswith("your change broke ") and "repaired by setting" in r0["outcome"]
    assert any("16 -> 24" in c for c in r0["extra"]["repair"]["changes"])
    assert (r1["status"], r1["extra"]["parse_status"]) == ("parse_error", "unmatched")
    assert "self.conv9" in r1["error"] and r1["outcome"].startswith("FAILED parse_error")
    assert r2["status"] == "ok" and r2["extra"]["repaired"] is False and "nn.Linear(120, 64)" in r2["code"]
    # --repair off: the same answer is the shape failure it is
    run(cfg_for(tmp_path, "d-off", "diff", 1, repair=False), llm=ScriptedLLM([broken]), evaluate=forward_evaluate,
        progress=False)
    off = load_run(str(tmp_path / "d-off"))[1][0]
    assert off["status"] == "shape_error" and off["extra"]["repaired"] is False and "repair" not in off["extra"]


def test_code_answers_repaired_and_no_code(tmp_path):
    wider = LENET.replace("nn.Conv2d(in_shape[1], 6, 5)", "nn.Conv2d(in_shape[1], 8, 5)")  # conv2 still takes 6
    run(cfg_for(tmp_path, "c", "code", 2), llm=ScriptedLLM([f"```python\n{wider}```", "I cannot do that."]),
        evaluate=forward_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "c"))
    assert iters[0]["status"] == "ok" and iters[0]["extra"]["repaired"] is True
    assert "nn.Conv2d(8, 16, 5)" in iters[0]["code"] and "nn.Conv2d(6, 16, 5)" in iters[0]["extra"]["llm_code"]
    assert re.search(r"your change broke conv2\.in_channels", iters[0]["outcome"])
    assert (iters[1]["status"], iters[1]["extra"]["parse_status"]) == ("no_code", "no_code")


def test_grammar_field_sent_to_a_detected_llama_cpp_server(tmp_path):
    from test_constrain import IDENTITY, Scripted

    srv = Scripted(IDENTITY["llama.cpp"], answer="[8, 96, 64]")
    try:
        run(cfg_for(tmp_path, "s", "widths", 1, llm_url=srv.url, context="summary"), evaluate=forward_evaluate,
            progress=False)
    finally:
        srv.close()
    it = load_run(str(tmp_path / "s"))[1][0]
    assert it["status"] == "ok" and it["extra"]["constrained"] is True
    body = srv.bodies[0]
    from test_formats import _gbnf_regex

    assert body["grammar"].startswith('root ::= "["') and "w2 ::= " in body["grammar"]
    assert re.fullmatch(_gbnf_regex(body["grammar"]), "[8, 96, 64]")
    assert not re.fullmatch(_gbnf_regex(body["grammar"]), "[16, 120, 84]")  # the seed: tried
    assert "layers, channels in->out" in body["messages"][1]["content"] and "```python" not in \
        body["messages"][1]["content"]


def test_config_checks():
    from search.loop import SearchError, check_config

    for bad in ({"answer_format": "json"}, {"context": "summary", "answer_format": "diff"}, {"samples": 0},
                {"constrain": "on", "answer_format": "code"}, {"server_kind": "tgi"}):
        with pytest.raises(SearchError):
            check_config(SearchConfig(**bad))
