"""Where a sweep's runs execute: local processes, or Ray tasks on a cluster."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from search.sweep.runs import process_identity, run_task, start_run
from search.sweep.spec import SweepError

# ---------------------------------------------------------------- executors

class LocalExecutor:
    """Processes started from this (main) thread: PR_SET_PDEATHSIG follows the thread that forked."""

    def __init__(self, parallel: int):
        self.parallel = parallel or os.cpu_count() or 1
        self.procs: dict[str, tuple[subprocess.Popen, object]] = {}

    def submit(self, name: str, argv: list[str], log: str, env: dict) -> int:
        p, f = start_run(argv, log, env)
        self.procs[name] = (p, f)
        return p.pid

    def poll(self) -> list[tuple[str, int]]:
        done = []
        for name, (p, f) in list(self.procs.items()):
            if p.poll() is not None:
                f.close()
                del self.procs[name]
                done.append((name, p.returncode))
        return done

    def close(self) -> None:
        """Ctrl-C or an error: ask the runs to stop (SIGINT: they store what is finished), then kill."""
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + 10
        for p, f in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            f.close()
        self.procs.clear()


class RayExecutor:
    """Each run is a Ray task (1 CPU, no retries) running the same command on its node."""

    def __init__(self, parallel: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise SweepError("--executor ray needs Ray: pip install 'ray[default]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self.parallel = parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.refs: dict = {}

    def submit(self, name: str, argv: list[str], log: str, env: dict) -> None:
        self.refs[self.task.remote(argv, log, env, os.getcwd(), process_identity(os.getpid()))] = name

    def poll(self) -> list[tuple[str, int]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        done = []
        for ref in ready:
            name = self.refs.pop(ref)
            try:
                rc = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001  (the task itself died: node lost, worker killed)
                print(f"warning: ray task of {name} failed: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                rc = -1
            done.append((name, rc))
        return done

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            self.ray.shutdown()
