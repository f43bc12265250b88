"""The search loop with scripted test doubles (LLM, evaluator), its store, report and compare,
and the CLI against a real HTTP server process on loopback."""
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_VGG, assert_one_line_error, free_port, run_module
from search.llm import ScriptedLLM
from search.loop import SearchConfig
from search.roles import FeedbackMemory, Triple, parse_diagnosis
from search.runner import load_run, run
from search.store import RunStore

SEED = "WIDTH = 16\nclass Net:\n    pass\n"


def code_with(width: int) -> str:
    return f"```python\nWIDTH = {width}\nclass Net:\n    pass\n```"


def fake_evaluate(code: str) -> dict:
    """Accuracy grows with WIDTH up to 64; 'BROKEN' does not build; FLOPs = WIDTH * 1000."""
    if "BROKEN" in code:
        return {"status": "build_error", "error": "NameError: BROKEN"}
    w = int(re.search(r"WIDTH = (\d+)", code).group(1))
    return {"status": "ok", "accuracy": min(w, 64) / 100, "flops": w * 1000, "params": w * 10, "latency_ms": w / 100}


def cfg_for(tmp_path, name="r", **kw):
    return SearchConfig(**{"llm": "scripted", "seed": str(tmp_path / "seed.py"), "out": str(tmp_path / name),
                           "iterations": 7, "memory": 5, "improver_llm": "rule", **kw})


@pytest.fixture
def seed_file(tmp_path):
    (tmp_path / "seed.py").write_text(SEED)


def test_memory_window_and_failure_triples(tmp_path, seed_file):
    answers = [code_with(24), "I think we should make it wider!", "```python\nWIDTH = 8\nBROKEN\n```",
               code_with(12), code_with(32), code_with(40), code_with(20)]
    llm = ScriptedLLM(answers)
    res = run(cfg_for(tmp_path), llm=llm, evaluate=fake_evaluate, progress=False)
    assert res["iterations"] == 7 and res["best"]["accuracy"] == 0.40
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "no_code", "build_error", "ok", "ok", "ok", "ok"]
    assert iters[1]["outcome"].startswith("FAILED no_code") and "BROKEN" in iters[2]["outcome"]
    # the 7th prompt shows exactly the last 5 triples (iterations 2..6), failures included
    last_prompt = llm.calls[-1][1]["content"]
    assert "no attempts yet" in llm.calls[0][1]["content"]
    shown = re.findall(r"^(\d)\. problem: ", last_prompt, re.M)
    assert shown == ["1", "2", "3", "4", "5"]
    assert "FAILED no_code" in last_prompt and "FAILED build_error" in last_prompt
    assert iters[0]["outcome"] not in last_prompt  # iteration 0 slid out of the window
    # the improver's modification becomes the next instruction
    assert iters[3]["instruction"] == iters[2]["modification"]
    # the prompt is the finetune template: telemetry, goal, the best source
    assert "Goal: Raise the accuracy." in last_prompt and "WIDTH = 40" in last_prompt


def test_resume_continues_where_the_run_stopped(tmp_path, seed_file):
    llm = ScriptedLLM([code_with(w) for w in (20, 24, 28, 32, 36, 40)])
    run(cfg_for(tmp_path, iterations=3), llm=llm, evaluate=fake_evaluate, progress=False)
    llm2 = ScriptedLLM([code_with(w) for w in (32, 36, 40)])
    res = run(cfg_for(tmp_path, iterations=6), resume=True, llm=llm2, evaluate=fake_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["it"] for r in iters] == list(range(6)) and res["best"]["accuracy"] == 0.40
    # the first resumed prompt starts from the stored best (28) and shows the 3 stored triples
    first = llm2.calls[0][1]["content"]
    assert "WIDTH = 28" in first and len(re.findall(r"^\d\. problem: ", first, re.M)) == 3
    with pytest.raises(Exception, match="already holds a run"):
        run(cfg_for(tmp_path, iterations=6), llm=llm2, evaluate=fake_evaluate, progress=False)


def test_repeated_network_is_a_duplicate_not_retrained(tmp_path, seed_file):
    calls = []

    def counting_evaluate(code):
        calls.append(code)
        return fake_evaluate(code)

    # 24, the same 24 reformatted with a comment, the seed itself, then 32
    answers = [code_with(24), "```python\n# wider\nWIDTH   =   24\nclass Net:\n    pass\n```",
               code_with(16), code_with(32)]
    res = run(cfg_for(tmp_path, iterations=4), llm=ScriptedLLM(answers), evaluate=counting_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "duplicate", "duplicate", "ok"]
    assert "iteration 0" in iters[1]["error"] and "seed" in iters[2]["error"]
    assert len(calls) == 3 and res["best"]["accuracy"] == 0.32  # the seed, 24 and 32: nothing trained twice
    assert "repeats a network" in iters[1]["next_problem"] and "FAILED duplicate" in iters[1]["outcome"]
    # resume knows what was tried before the kill
    run(cfg_for(tmp_path, iterations=5), resume=True, llm=ScriptedLLM([code_with(32)]), evaluate=counting_evaluate,
        progress=False)
    assert load_run(str(tmp_path / "r"))[1][4]["error"] == "the same network as iteration 3 (not trained again)"


def test_improver_example_is_shown_only_when_asked(tmp_path, seed_file):
    from search.roles import IMPROVER_SHOT

    for flag in (False, True):
        gen = ScriptedLLM([code_with(24), code_with(32)])
        imp = ScriptedLLM(["PROBLEM: too narrow\nMODIFICATION: widen WIDTH"] * 2)
        cfg = cfg_for(tmp_path, f"ex{flag}", iterations=2, improver_llm=None, improver_example=flag)
        run(cfg, llm=gen, improver_llm=imp, evaluate=fake_evaluate, progress=False)
        roles = [m["role"] for m in imp.calls[0]]
        assert roles == (["system", "user", "assistant", "user"] if flag else ["system", "user"])
        if flag:
            assert imp.calls[0][2]["content"] == IMPROVER_SHOT[1]
        assert "WIDTH = 24" not in imp.calls[0][-1]["content"] and "accuracy 24.00%" in imp.calls[0][-1]["content"]
        assert load_run(str(tmp_path / f"ex{flag}"))[1][1]["instruction"] == "widen WIDTH"


def test_parse_diagnosis_from_messy_answers():
    assert parse_diagnosis("PROBLEM: too narrow\nMODIFICATION: widen conv2") == ("too narrow", "widen conv2")
    assert parse_diagnosis("**Problem**: overfits\n- **Suggestion** - narrow fc1 to 64") == ("overfits", "narrow fc1 to 64")
    assert parse_diagnosis("Sure! Here's my analysis.") is None


def test_memory_renders_a_constant_size_window():
    m = FeedbackMemory(2)
    for i in range(4):
        m.add(Triple(f"p{i}", f"m{i}", f"o{i}"))
    assert m.render() == "1. problem: p2 | tried: m2 | outcome: o2\n2. problem: p3 | tried: m3 | outcome: o3"


def test_report_and_compare_with_significance(tmp_path, seed_file):
    import numpy as np

    for group, widths in (("good", (40, 48, 56, 64)), ("weak", (12, 16, 20, 24))):
        for s in range(4):
            rng = np.random.default_rng(s)
            ans = [code_with(int(w + rng.integers(0, 4))) for w in widths]
            run(cfg_for(tmp_path, name=f"{group}-{s}", iterations=4, rng_seed=s, label=group),
                llm=ScriptedLLM(ans), evaluate=fake_evaluate, progress=False)
    res = run_module("search", "report", tmp_path / "good-0")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "good-0" / "report.png").stat().st_size > 5000
    assert "| 0 | ok |" in (tmp_path / "good-0" / "report.md").read_text()
    res = run_module("search", "compare", *[tmp_path / f"{g}-{s}" for g in ("good", "weak") for s in range(4)],
                     "--out", tmp_path / "cmp")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data["baseline"] == "good" and data["groups"]["weak"]["p_vs_baseline"] < 0.05
    assert (tmp_path / "cmp" / "compare_curves.png").exists()
    res = run_module("search", "export", tmp_path / "good-0")
    assert res.returncode == 0
    import datasets
    assert len(datasets.load_from_disk(str(tmp_path / "good-0" / "dataset"))) == 4


FAKE_SERVER = textwrap.dedent('''
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    ANSWER = open(sys.argv[2]).read()
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def do_GET(self):
            self._send({"data": [{"id": "scripted"}]})
        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert req["messages"][0]["role"] == "system"
            self._send({"choices": [{"message": {"role": "assistant", "content": ANSWER}}]})
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_cli_run_over_http_server_with_real_profiler(tmp_path):
    seed = tmp_path / "seed.py"
    seed.write_text(TINY_VGG)
    (tmp_path / "answer.txt").write_text("Here you go:\n```python\n" + TINY_VGG.replace("32", "48") + "```\n")
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    (tmp_path / "diagnosis.txt").write_text("Problem: conv2 is the bottleneck\nModification: widen conv2 to 64\n")
    port, port2 = free_port(), free_port()
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port), str(tmp_path / "answer.txt")])
    # the Prompt Improver on its own server (--improver-url), as a frozen model beside a tuned generator
    server2 = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port2),
                                str(tmp_path / "diagnosis.txt")])
    try:
        time.sleep(1.0)
        out = tmp_path / "run"
        res = run_module("search", "run", "--llm-url", f"http://127.0.0.1:{port}", "--llm", "scripted",
                         "--improver-url", f"http://127.0.0.1:{port2}", "--seed", seed, "--iterations", 2,
                         "--train-limit", 256, "--out", out)
        assert res.returncode == 0, res.stderr[-3000:]
        store = RunStore(out, create=False)
        iters = store.iterations()
        # the scripted server answers the same network twice: the second is a duplicate, not trained again
        assert [r["status"] for r in iters] == ["ok", "duplicate"] and iters[1]["profile_seconds"] == 0
        assert iters[0]["metrics"]["flops"] > 0 and iters[0]["llm_seconds"] >= 0
        assert store.meta("seed_row")["status"] == "ok"
        assert [r["improver_source"] for r in iters] == ["llm", "llm"]
        assert iters[1]["problem"] == "conv2 is the bottleneck" and "```" in iters[1]["raw_answer"]
    finally:
        server.kill()
        server2.kill()
    # unreachable server, resume of a non-run, unknown model, seed that does not build
    assert_one_line_error(run_module("search", "run", "--llm-url", f"http://127.0.0.1:{port}", "--out", tmp_path / "x"),
                          "cannot reach")
    assert_one_line_error(run_module("search", "run", "--out", tmp_path, "--resume"), "not a search run")
    assert_one_line_error(run_module("search", "run", "--llm", "no/such-model-anywhere", "--seed", seed,
                                     "--out", tmp_path / "y", "--train-limit", 256, env={"HF_HUB_OFFLINE": "1"}),
                          "no/such-model-anywhere")
    broken = tmp_path / "broken.py"
    broken.write_text(TINY_VGG.replace("nn.Linear(32,", "nn.Linear(31,"))
    assert_one_line_error(run_module("search", "run", "--llm", "random", "--seed", broken, "--out", tmp_path / "z",
                                     "--train-limit", 256), "seed network does not profile")
