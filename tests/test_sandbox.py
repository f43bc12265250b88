"""Hostile model files in the sandbox: each becomes a failed result, and the pool goes on."""
import os
import socket
import textwrap
import threading
import uuid

import pytest

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


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(1, timeout_s=15, memory_mb=3072)
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
    import time
    time.sleep(4.5)
    assert not marker.exists()


@pytest.mark.skipif(not namespaces_available(), reason="needs Linux namespaces (bubblewrap)")
def test_no_writes_outside_scratch_and_no_network(pool, tmp_path):
    name = f"/tmp/nasforge-escape-{uuid.uuid4().hex}"
    assert validate(pool, model(f"open({name!r}, 'w').write('x')"))["status"] == "ok"
    assert not os.path.exists(name)  # the child's /tmp is private
    outside = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".escape-{uuid.uuid4().hex}")
    res = validate(pool, model(f"open({outside!r}, 'w').write('x')"))
    assert res["status"] == "invalid" and "Read-only file system" in res["error"]
    assert not os.path.exists(outside)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(server.accept()), daemon=True)
    t.start()
    res = validate(pool, model(f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"))
    server.close()
    assert res["status"] == "invalid" and "Connection refused" in res["error"]
    assert not got
