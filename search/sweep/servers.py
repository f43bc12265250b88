"""Models a sweep serves itself: llama.cpp's server for each `gguf` configuration, on loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from search.sweep.runs import _die_with_parent
from search.sweep.spec import SweepError

# ---------------------------------------------------------------- served models

class LlamaServers:
    """llama.cpp servers for the gguf configurations: loopback, free ports, stopped on exit."""

    def __init__(self, logs: Path, timeout_s: float):
        self.logs, self.timeout_s = logs, timeout_s
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def start(self, name: str, server: dict) -> str:
        import urllib.request

        with closing(socket.socket()) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        log = self.logs / f"server-{name}.log"
        f = open(log, "ab")
        p = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", server["gguf"],
                              "--host", "127.0.0.1", "--port", str(port), "--model_alias", server["alias"],
                              *server["args"]],
                             stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.procs.append((p, f))
        deadline = time.time() + self.timeout_s
        while True:
            if p.poll() is not None:
                tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
                raise SweepError(f"the llama.cpp server of {name} exited with {p.returncode}: "
                                 f"{tail[0][:200] if tail else 'no output'} (log: {log})")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                    json.loads(r.read())
                return url
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise SweepError(f"the llama.cpp server of {name} did not answer /v1/models in "
                                     f"{self.timeout_s:.0f} s (log: {log})") from None
                time.sleep(0.5)

    def close(self) -> None:
        for p, f in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            f.close()
        self.procs.clear()
