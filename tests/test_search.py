"""The search loop with scripted test doubles (LLM, evaluator), its store, report and compare,
and the CLI against a real HTTP server process on loopback."""
import dataclasses
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
                           "iterations": 7, "memory": 5, "improver_llm": "rule", "answer_format": "code", **kw})


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
    ds = datasets.load_from_disk(str(tmp_path / "good-0" / "dataset"))
    assert len(ds) == 4
    # provenance in every row: who proposed it, from which network, which network (the sha256 of its code)
    import hashlib
    assert set(ds["proposer"]) == {"scripted"} and ds["parent_it"][0] is None  # the run's --llm
    assert ds["fingerprint"] == [hashlib.sha256(c.encode()).hexdigest() if c else None for c in ds["code"]]


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


@pytest.mark.slow  # ~30 s; tests/test_search_llm.py's default pass runs the CLI over a real server and profiler
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
                         "--train-limit", 256, "--answer-format", "code", "--out", out)
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


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_cli_bad_starts_are_one_line_errors(tmp_path):
    """Unreachable server, resume of a non-run, unknown model, seed that does not build."""
    seed = tmp_path / "seed.py"
    seed.write_text(TINY_VGG)
    assert_one_line_error(run_module("search", "run", "--llm-url", f"http://127.0.0.1:{free_port()}",
                                     "--out", tmp_path / "x"), "cannot reach")
    assert_one_line_error(run_module("search", "run", "--out", tmp_path, "--resume"), "not a search run")
    assert_one_line_error(run_module("search", "run", "--llm", "no/such-model-anywhere", "--seed", seed,
                                     "--out", tmp_path / "y", "--train-limit", 256, env={"HF_HUB_OFFLINE": "1"}),
                          "no/such-model-anywhere")
    broken = tmp_path / "broken.py"
    broken.write_text(TINY_VGG.replace("nn.Linear(32,", "nn.Linear(31,"))
    assert_one_line_error(run_module("search", "run", "--strategy", "mutation", "--seed", broken, "--out", tmp_path / "z",
                                     "--train-limit", 256), "seed network does not profile")


# -- a failed start leaves nothing behind; --resume applies or refuses changed flags --------------

def test_failed_start_leaves_no_folder_and_the_fixed_command_runs(tmp_path, seed_file):
    from mutator.generate import UserError
    from search.loop import SearchError

    out = tmp_path / "r"
    with pytest.raises(UserError, match="no such file or built-in seed"):  # a typo'd seed
        run(cfg_for(tmp_path, seed=str(tmp_path / "sed.py")), llm=ScriptedLLM([code_with(24)]),
            evaluate=fake_evaluate, progress=False)
    assert not out.exists()
    with pytest.raises(SearchError, match="no Channel-Bench-Macro table"):  # a missing benchmark table
        run(cfg_for(tmp_path, evaluator="table:cbm-resnet", benchmark_file=str(tmp_path / "none.json")),
            llm=ScriptedLLM([code_with(24)]), progress=False)
    assert not out.exists()
    (tmp_path / "bad.py").write_text(SEED.replace("WIDTH", "BROKEN"))
    with pytest.raises(SearchError, match="seed network does not profile"):  # found only after the store exists
        run(cfg_for(tmp_path, seed=str(tmp_path / "bad.py")), llm=ScriptedLLM([code_with(24)]),
            evaluate=fake_evaluate, progress=False)
    assert not out.exists()
    out.mkdir()  # a folder the user made keeps existing, without a store
    with pytest.raises(SearchError, match="seed network does not profile"):
        run(cfg_for(tmp_path, seed=str(tmp_path / "bad.py")), llm=ScriptedLLM([code_with(24)]),
            evaluate=fake_evaluate, progress=False)
    assert out.is_dir() and not (out / "run.sqlite").exists()
    res = run(cfg_for(tmp_path, iterations=2), llm=ScriptedLLM([code_with(24), code_with(32)]),
              evaluate=fake_evaluate, progress=False)
    assert res["iterations"] == 2 and load_run(str(out))[0].seed == str(tmp_path / "seed.py")


def test_store_of_a_start_that_failed_earlier_is_replaced_or_resumed_with_the_new_flags(tmp_path, seed_file):
    from search.loop import config_dict

    out = tmp_path / "r"  # what a failed start of an older version left: a config, nothing profiled
    store = RunStore(out)
    store.set_meta("config", config_dict(cfg_for(tmp_path, seed="lenett", iterations=5)))
    store.close()
    # --resume applies every changed flag: nothing depends on the stored values yet
    run(cfg_for(tmp_path, iterations=1), resume=True, given={"seed", "iterations"},
        llm=ScriptedLLM([code_with(24)]), evaluate=fake_evaluate, progress=False)
    cfg, iters, seed = load_run(str(out))
    assert cfg.seed == str(tmp_path / "seed.py") and len(iters) == 1 and seed["accuracy"] == 0.16
    # and a never-started store is replaced by a new run without --resume
    out2 = tmp_path / "r2"
    store = RunStore(out2)
    store.set_meta("config", config_dict(cfg_for(tmp_path, "r2", seed="lenett")))
    store.close()
    run(cfg_for(tmp_path, "r2", iterations=1), llm=ScriptedLLM([code_with(24)]), evaluate=fake_evaluate,
        progress=False)
    assert load_run(str(out2))[0].seed == str(tmp_path / "seed.py")


def test_resume_applies_budget_and_paths_and_refuses_other_changes(tmp_path, seed_file):
    from search.loop import SearchError

    run(cfg_for(tmp_path, iterations=2), llm=ScriptedLLM([code_with(20), code_with(24)]), evaluate=fake_evaluate,
        progress=False)
    with pytest.raises(SearchError, match=r"^--memory 3 differs from the stored run's 5: a resumed run keeps it"):
        run(cfg_for(tmp_path, iterations=4, memory=3), resume=True, llm=ScriptedLLM([code_with(28)]),
            evaluate=fake_evaluate, progress=False)
    # the CLI passes only the flags written on the command line: SearchConfig defaults elsewhere (llm,
    # seed, memory 5...) are not changes; --iterations 4 and --time-budget-s are applied and stored
    cli = SearchConfig(out=str(tmp_path / "r"), iterations=4, time_budget_s=3600.0)
    run(cli, resume=True, given={"out", "iterations", "time_budget_s"}, llm=ScriptedLLM([code_with(28)]),
        evaluate=fake_evaluate, progress=False)
    cfg, iters, _ = load_run(str(tmp_path / "r"))
    assert len(iters) == 4 and cfg.iterations == 4 and cfg.time_budget_s == 3600.0 and cfg.llm == "scripted"


def test_a_new_run_stores_what_fast_cpu_auto_resolved_to(tmp_path, seed_file, monkeypatch):
    import corpus.evaluator

    for has, name in ((True, "a"), (False, "b")):
        monkeypatch.setattr(corpus.evaluator, "cpu_has_bf16", lambda has=has: has)
        run(cfg_for(tmp_path, name, iterations=1, fast_cpu="auto"), llm=ScriptedLLM([code_with(20)]), evaluate=fake_evaluate,
            progress=False)
        assert load_run(str(tmp_path / name))[0].fast_cpu == ("on" if has else "off")
    # resumed on a CPU that answers otherwise: the stored answer stands, and auto is no change to refuse
    run(cfg_for(tmp_path, "a", iterations=2, fast_cpu="auto"), resume=True, llm=ScriptedLLM([code_with(24)]), evaluate=fake_evaluate,
        progress=False)
    assert load_run(str(tmp_path / "a"))[0].fast_cpu == "on"


def test_cli_resume_names_the_refused_flag_and_counts_only_written_flags(tmp_path, seed_file):
    from search.cli import given_flags

    # --iterations 10 is argparse's default, but written: it counts; unwritten flags never do
    assert given_flags(["run", "--out", "x", "--resume", "--iterations", "10"]) & {"iterations", "seed", "llm"} \
        == {"iterations"}
    run(cfg_for(tmp_path, iterations=1), llm=ScriptedLLM([code_with(20)]), evaluate=fake_evaluate, progress=False)
    assert_one_line_error(run_module("search", "run", "--out", tmp_path / "r", "--resume", "--seed", "lenet"),
                          f"--seed lenet differs from the stored run's {tmp_path / 'seed.py'}")
    assert_one_line_error(run_module("search", "run", "--out", tmp_path / "r", "--strategy", "mutation"),
                          "already holds a run")


def test_cli_out_file_and_corrupt_stores_are_one_line_errors(tmp_path):
    import sqlite3

    (tmp_path / "afile").write_text("not a folder")
    assert_one_line_error(run_module("search", "run", "--out", tmp_path / "afile"), "is a file, not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.sqlite").write_bytes(b"")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "run.sqlite")
    db.execute("CREATE TABLE meta (key TEXT)")
    db.commit()
    db.close()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "run.sqlite").write_bytes(b"garbage " * 200)
    for folder, needle in ((empty, "empty (0 bytes)"), (foreign, "not a run store"), (garbage, "not a")):
        before = (folder / "run.sqlite").read_bytes()
        assert_one_line_error(run_module("search", "run", "--out", folder, "--resume"), needle)
        res = run_module("search", "run", "--out", folder)
        assert_one_line_error(res, "corrupt run store")
        assert "already holds a run" not in res.stderr
        assert (folder / "run.sqlite").read_bytes() == before  # left as it was
    assert_one_line_error(run_module("search", "report", empty), "empty (0 bytes)")


def test_search_cli_silences_library_noise_but_never_runtime_warnings(tmp_path):
    code = textwrap.dedent("""
        import sys, warnings
        import search.__main__ as m
        def fake_run(args, argv=None):
            warnings.warn_explicit("sandbox: bubblewrap unavailable; fallback does not contain: x", RuntimeWarning,
                                   "sandbox.py", 1, module="mutator.sandbox")
            warnings.warn_explicit("old API", FutureWarning, "modeling.py", 1, module="transformers.modeling_utils")
            return 0
        m.cmd_run = m.COMMANDS["run"] = fake_run
        sys.exit(m.main(["run", "--out", sys.argv[1]]))
    """)
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "warning: sandbox: bubblewrap unavailable" in res.stderr and "old API" not in res.stderr


# -- LLM outages: an iteration outcome, retried with back-off; the run goes on ---------------------

class ScriptedServer:
    """An OpenAI-compatible server on loopback, in a thread. Each chat request takes the next entry of
    `script` (the last one repeats): '500' answers HTTP 500, 'close' drops the connection, 'hang'
    answers nothing until the server closes, anything else is the answer's content."""

    def __init__(self, script):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script, self.times, self.stop = list(script), [], threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"data": [{"id": "scripted"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.times.append(time.monotonic())
                step = server.script[min(len(server.times), len(server.script)) - 1]
                if step == "500":
                    self._send(500, {"error": "internal"})
                elif step == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                elif step == "hang":
                    server.stop.wait(30)
                else:
                    self._send(200, {"choices": [{"message": {"role": "assistant", "content": step}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made = []
    yield lambda script: made.append(ScriptedServer(script)) or made[-1]
    for s in made:
        s.close()


FAST = {"llm_timeout_s": 0.5, "llm_retries": 1, "llm_backoff_s": 0.05}


def test_failed_requests_are_retried_with_exponential_back_off(tmp_path, seed_file, servers):
    srv = servers(["500", "close", code_with(24), code_with(32)])
    cfg = cfg_for(tmp_path, iterations=2, llm_url=srv.url, llm_timeout_s=2.0, llm_retries=2, llm_backoff_s=0.1)
    run(cfg, evaluate=fake_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "ok"] and len(srv.times) == 4
    assert srv.times[1] - srv.times[0] >= 0.1 and srv.times[2] - srv.times[1] >= 0.2  # doubled


@pytest.mark.parametrize("failure", ["500", "close", "hang"])
def test_lost_llm_server_is_an_iteration_outcome_and_resume_continues(tmp_path, seed_file, servers, failure):
    from search.loop import SearchError

    dead = servers([code_with(24), failure])
    cfg = cfg_for(tmp_path, iterations=5, llm_url=dead.url, max_llm_errors=2, **FAST)
    with pytest.raises(SearchError, match=r"the LLM failed 2 iterations in a row .*3 iterations are stored"):
        run(cfg, evaluate=fake_evaluate, progress=False)
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "llm_error", "llm_error"] and seed["status"] == "ok"
    assert "failed after 2 tries" in iters[1]["error"] and iters[1]["prompt"] is not None
    assert len(dead.times) == 1 + 2 * 2  # one answer, then 2 iterations of 1 try + 1 retry
    # the instruction and the memory are kept for the next real attempt; the new server is applied on resume
    assert iters[2]["instruction"] == iters[1]["instruction"] == iters[0]["modification"]
    alive = servers([code_with(w) for w in (32, 40)])
    gen = ScriptedLLM([code_with(w) for w in (32, 40)])
    run(dataclasses.replace(cfg, llm_url=alive.url), resume=True, given={"llm_url"}, llm=gen,
        evaluate=fake_evaluate, progress=False)
    stored, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "llm_error", "llm_error", "ok", "ok"] and stored.llm_url == alive.url
    shown = gen.calls[0][1]["content"]
    assert len(re.findall(r"^\d\. problem: ", shown, re.M)) == 1 and "llm_error" not in shown


def test_lost_improver_server_records_a_missing_diagnosis(tmp_path, seed_file, servers):
    gen, imp = servers([code_with(24), code_with(32)]), servers(["500"])
    cfg = cfg_for(tmp_path, iterations=2, llm_url=gen.url, improver_url=imp.url, improver_llm=None, **FAST)
    res = run(cfg, evaluate=fake_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert res["iterations"] == 2 and [r["status"] for r in iters] == ["ok", "ok"]
    assert [r["improver_source"] for r in iters] == ["llm_error", "llm_error"]
    assert "HTTP 500" in iters[0]["extra"]["improver_error"] and iters[0]["improver_raw"] is None
    assert iters[1]["instruction"] == iters[0]["modification"]  # the rule's diagnosis went on
