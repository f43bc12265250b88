"""Broken and hostile model files in the sandbox, in both modes (bubblewrap and the fallback): each
becomes a failed result and the pool goes on; start-up, orphans and stale scratch folders.
(The attack suite against the world outside is tests/test_hostile.py.)"""
import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from mutator.sandbox import WorkerPool, namespaces_available

SPEC = {"in_shape": [1, 3, 8, 8], "classes": 10, "class_name": None}


def model(init_body: str) -> str:
    body = textwrap.indent(textwrap.dedent(init_body).strip(), " " * 8)
    return f"""
import os, sys, signal, time, socket
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
{body}
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
"""


MODES = [pytest.param("namespaces", marks=pytest.mark.skipif(not namespaces_available(),
                                                             reason="needs bubblewrap")), "none"]


@pytest.fixture(scope="module", params=MODES)
def pool(request):
    p = WorkerPool(1, timeout_s=15, memory_mb=3072, isolate=request.param)
    yield p
    p.close()


def validate(pool, source, timeout_s=None):
    return pool.call("mutator.analysis:validate", {"source": source, "spec": SPEC}, timeout_s)


def test_good_model_passes(pool):
    assert validate(pool, model("pass"))["status"] == "ok"


@pytest.mark.parametrize("body, status, text", [
    ("while True: pass", "timeout", "no answer"),
    ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass", "timeout", "no answer"),
    ("os._exit(3)", "crash", "exit 3"),
    ("import ctypes; ctypes.string_at(0)", "crash", "SIGSEGV"),
    ("sys.exit(0)", "invalid", "SystemExit"),
    ("raise KeyboardInterrupt", "invalid", "KeyboardInterrupt"),
    ("x = bytearray(64 << 30)", "invalid", "MemoryError"),
    ("blocks = []\nwhile True: blocks.append(bytearray(1 << 28))", "invalid", "MemoryError"),
    ("for _ in range(10**6): print('flood' * 1000)", "ok", ""),
])
def test_hostile_models_fail_cleanly(pool, body, status, text):
    res = validate(pool, model(body), timeout_s=4 if status == "timeout" else 60)
    assert res["status"] == status, res
    assert text in (res.get("error") or "")
    assert validate(pool, model("pass"))["status"] == "ok"  # the pool recovered


def test_children_are_gone_after_the_request(pool, tmp_path):
    marker = tmp_path / "alive"
    body = f"""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(3)
            open({str(marker)!r}, 'w').write('still here')
        os._exit(0)
    """
    validate(pool, model(body))
    time.sleep(4.5)
    assert not marker.exists()


def test_no_writes_outside_scratch_and_no_network(pool, tmp_path):
    name = f"/tmp/nasforge-escape-{uuid.uuid4().hex}"
    res = validate(pool, model(f"open({name!r}, 'w').write('x')"))
    assert res["status"] == "invalid" and ("Permission denied" in res["error"] or "Read-only" in res["error"])
    assert not os.path.exists(name)
    assert validate(pool, model("open('inside.txt', 'w').write('x')"))["status"] == "ok"  # its scratch folder
    outside = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".escape-{uuid.uuid4().hex}")
    res = validate(pool, model(f"open({outside!r}, 'w').write('x')"))
    assert res["status"] == "invalid" and not os.path.exists(outside)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(server.accept()), daemon=True)
    t.start()
    res = validate(pool, model(f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"))
    server.close()
    assert res["status"] == "invalid" and ("refused" in res["error"] or "Permission denied" in res["error"])
    assert not got


def test_each_request_gets_a_fresh_interpreter(pool):
    """A candidate that patches torch (or leaves a module behind) cannot touch the next one."""
    patch = "import torch; torch.Tensor.__eq__ = lambda a, b: 1 / 0; sys.modules['json'] = None"
    validate(pool, model(patch))
    res = validate(pool, model("import torch, json; assert bool((torch.ones(2, device='cpu') == torch.ones(2, device='cpu')).all())"))
    assert res["status"] == "ok", res


def test_a_forged_answer_is_a_crash_of_its_own_candidate_only(pool):
    forge = ("import json\nfor fd in range(3, 64):\n    try: os.write(fd, json.dumps({'id': 2, 'result': "
             "{'status': 'ok', 'forged': True}}).encode())\n    except OSError: pass")
    res = validate(pool, model(forge))
    assert res["status"] == "crash" and "malformed" in res["error"]
    assert validate(pool, model("pass")) == {"status": "ok"} or validate(pool, model("pass"))["status"] == "ok"


def test_the_whole_process_tree_shares_the_memory_limit(pool):
    body = """
    for _ in range(3):
        if os.fork() == 0:
            b = bytearray(1200 << 20)
            for i in range(0, len(b), 4096): b[i] = 1
            time.sleep(20)
            os._exit(0)
    time.sleep(20)
    """
    res = validate(pool, model(body), timeout_s=30)
    assert res["status"] == "oom" and "together" in res["error"], res


def test_containment_is_reported(pool):
    c = pool.containment
    assert set(c["contained"]) == {"files", "network", "signals", "processes", "shared_state"}
    assert c["not_contained"] == [k for k, v in c["contained"].items() if not v]
    assert len(c["gaps"]) == len(c["not_contained"])  # one plain sentence per thing not contained
    assert (c["mode"] == "bubblewrap") == pool.isolated
    assert c["mode"] in ("bubblewrap", "unshare+landlock", "landlock", "none")
    if c["mode"] != "none":
        assert c["contained"]["files"] and c["landlock_abi"] >= (0 if pool.isolated else 1)


def test_search_refuses_a_machine_that_contains_nothing(monkeypatch):
    from mutator import sandbox

    monkeypatch.setenv("NASFORGE_NO_NAMESPACES", "1")
    monkeypatch.setenv("NASFORGE_NO_LANDLOCK", "1")
    monkeypatch.setattr(sandbox, "REQUIRE_CONTAINMENT", True)
    with pytest.raises(sandbox.SandboxError, match="--unsafe-no-sandbox"):
        WorkerPool(1)
    monkeypatch.setattr(sandbox, "REQUIRE_CONTAINMENT", False)
    with pytest.warns(RuntimeWarning, match="does not contain: files, network, signals, processes"):
        sandbox._LAUNCH.pop("warned", None)
        p = WorkerPool(1)
    assert p.containment["mode"] == "none" and validate(p, model("pass"))["status"] == "ok"
    p.close()


def test_long_error_text_is_cut(pool):
    res = validate(pool, model("raise RuntimeError('x' * 100000)"))
    assert res["status"] == "invalid" and len(res["error"]) <= 500


def test_worker_of_a_venv_under_tmp_starts(tmp_path):
    """bubblewrap's private /tmp used to hide a venv (or checkout) under /tmp: every command failed."""
    import subprocess
    import sys
    import venv

    env_dir = Path(tempfile.mkdtemp(prefix="nasforge-venv-", dir="/tmp"))
    try:
        venv.create(env_dir, system_site_packages=True, with_pip=False)
        # the packages of the interpreter running the tests: system_site_packages reaches only the base
        # interpreter's, which lack torch when the tests run from a venv (a new user's, under /tmp too)
        import site
        site_dir = next((env_dir / "lib").glob("python*/site-packages"))
        (site_dir / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        script = ("import sys; sys.path.insert(0, %r)\nfrom mutator.sandbox import WorkerPool\n"
                  "p = WorkerPool(1, timeout_s=30)\nprint(p.containment['mode'])\n"
                  "print(p.call('mutator.analysis:validate', {'source': %r, 'spec': %r})['status'])\np.close()"
                  % (str(ROOT), model("pass"), SPEC))
        res = subprocess.run([str(env_dir / "bin" / "python"), "-c", script], capture_output=True, text=True,
                             timeout=300, cwd=env_dir)
        assert res.returncode == 0, res.stderr[-2000:]
        mode, status = res.stdout.split()
        assert status == "ok" and mode == ("bubblewrap" if namespaces_available() else mode)
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)


def test_a_script_in_tmp_keeps_bubblewrap(tmp_path):
    """`python /tmp/x.py` puts /tmp on sys.path: binding it read-only hid bubblewrap's scratch folder."""
    import subprocess
    import sys

    script = Path(tempfile.gettempdir()) / f"nasforge-script-{uuid.uuid4().hex}.py"
    script.write_text("import sys; sys.path.insert(1, %r)\nfrom mutator.sandbox import WorkerPool\n"
                      "p = WorkerPool(1, timeout_s=30)\nprint(p.containment['mode'])\n"
                      "print(p.call('mutator.analysis:validate', {'source': %r, 'spec': %r})['status'])\np.close()"
                      % (str(ROOT), model("pass"), SPEC))
    try:
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    finally:
        script.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    mode, status = res.stdout.split()
    assert status == "ok" and (mode == "bubblewrap" or not namespaces_available()), res.stderr[-500:]


def test_a_worker_that_cannot_start_says_why(monkeypatch):
    from mutator import sandbox

    if not namespaces_available():
        pytest.skip("needs bubblewrap")
    monkeypatch.setattr(sandbox, "_bwrap_args", lambda *a, **k: ["--no-such-bwrap-option"])
    with pytest.raises(sandbox.SandboxError, match="no-such-bwrap-option"):
        WorkerPool(1, isolate="namespaces")
    sandbox._LAUNCH.pop("bwrap_failed", None)


def running(proc) -> str | None:
    """proc's command line while it still runs; None once it has exited (gone, or a zombie not yet reaped)."""
    import psutil

    try:
        return None if proc.status() == psutil.STATUS_ZOMBIE else " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return None


def test_killing_the_parent_leaves_no_worker_and_no_scratch(tmp_path):
    """kill -9 of the search: workers die with it (PDEATHSIG, PID namespaces), scratch is cleaned later."""
    import subprocess
    import sys

    import psutil

    stale = Path(tempfile.gettempdir()) / "nasforge-worker-999999999-stale"
    stale.mkdir(exist_ok=True)
    script = ("import sys, os; sys.path.insert(0, %r)\nfrom mutator.sandbox import WorkerPool\n"
              "p = WorkerPool(2, timeout_s=120)\nprint(os.getpid(), flush=True)\n"
              "p.map('mutator.analysis:validate', [{'source': %r, 'spec': %r}] * 2)"
              % (str(ROOT), model("while True: pass"), SPEC))
    for no_ns in ("0", "1"):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "NASFORGE_NO_NAMESPACES": no_ns})
        proc.stdout.readline()
        for _ in range(240):  # both workers started and both candidates spinning (slow on a busy machine)
            family = psutil.Process(proc.pid).children(recursive=True)
            if len(family) >= 4:
                break
            time.sleep(0.5)
        assert len(family) >= 4  # two workers, two candidates
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(family, timeout=10)
        still = [cmd for cmd in map(running, alive) if cmd]  # a zombie has exited (its parent is reaping it)
        assert not still, still
    assert not stale.exists()  # removed by the next pool's start-up (its pid is gone)
    WorkerPool(1).close()
    assert not list(Path(tempfile.gettempdir()).glob(f"nasforge-worker-{proc.pid}-*"))


def test_search_run_needs_unsafe_no_sandbox_where_nothing_contains(tmp_path, tiny_cbm_dir):
    """LLM-written code on a machine with no bubblewrap, namespaces or Landlock: refused, unless asked."""
    from conftest import assert_one_line_error, run_module

    env = {"NASFORGE_NO_NAMESPACES": "1", "NASFORGE_NO_LANDLOCK": "1", "NASFORGE_CBM_DIR": str(tiny_cbm_dir)}
    args = ["run", "--strategy", "random", "--evaluator", "table:cbm-resnet", "--iterations", 1]
    res = run_module("search", *args, "--out", tmp_path / "refused", env=env)
    assert_one_line_error(res, "--unsafe-no-sandbox")
    assert not (tmp_path / "refused").exists()
    res = run_module("search", *args, "--out", tmp_path / "accepted", "--unsafe-no-sandbox", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "does not contain: files, network, signals, processes" in res.stderr


def test_a_worker_that_ended_is_killed_by_group_only_before_it_is_reaped(monkeypatch):
    """A worker that exits on its own (killed here; recycled after --max-tasks elsewhere) stays a zombie until
    `kill` reaps it, so its pid -- the group id `kill` signals -- cannot have been given to another process
    (pids wrap around at 32,768 on many machines). Once reaped, its group is never signalled again."""
    import signal as sig

    from mutator import sandbox

    p = WorkerPool(1, timeout_s=15, memory_mb=1024, isolate="none")
    try:
        w = p._all[0]
        os.kill(w.proc.pid, sig.SIGKILL)
        deadline = time.monotonic() + 10
        while w.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not w.alive() and w.proc.returncode is None  # ended, not reaped: the pid is still its own
        calls = []
        real = sandbox.os.killpg
        monkeypatch.setattr(sandbox.os, "killpg", lambda pid, s: calls.append(pid) or real(pid, s))
        w.kill()
        assert calls == [w.proc.pid] and w.proc.returncode == -sig.SIGKILL
        w.kill()  # reaped: no signal to a number that may be someone else's now
        assert calls == [w.proc.pid]
        assert validate(p, model("self.c = nn.Conv2d(3, 3, 1)"))["status"] == "ok"  # the pool replaces it
    finally:
        p.close()
