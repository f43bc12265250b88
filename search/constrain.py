"""Constrained decoding through an OpenAI-compatible server: which request field carries the grammar.

    python -c "from search.constrain import detect_server; print(detect_server('http://127.0.0.1:8092'))"

    kind = detect_server(url)                            # ServerKind("llama.cpp", "b4600", ...)
    c = request_fields(kind.kind, "widths", slots)      # Constraint: fields to merge into the body
    body = {"model": ..., "messages": ..., **c.fields}

    req = ConstrainedRequests(url, mode="auto")          # --constrain auto|on|off, --server-kind
    extra = req.fields("widths", slots)                  # {} and one warning line where unsupported

What each server takes (the grammars are `finetune.formats`'):
- llama.cpp's `llama-server` (C++; answers `GET /props`): `grammar` (GBNF) in the chat request.
- `python -m llama_cpp.server` (llama-cpp-python; its `GET /openapi.json` is titled "llama.cpp Python
  API"): `grammar` (GBNF) in the chat request, checked against version 0.3.36 by
  `tests/test_constrain.py`'s slow test (the request schema lists `grammar` for
  `/v1/chat/completions` and `/v1/completions`).
- vLLM >= 0.10.2 (answers `GET /version`): `structured_outputs` = {"regex": ...} for widths,
  {"grammar": ...} (GBNF, xgrammar backend) for diff; older vLLM took `guided_regex` /
  `guided_grammar`, removed in 0.12 (kind `vllm-legacy`, picked from the version).
- Ollama (answers `GET /api/version`): a JSON schema only (`response_format` on its OpenAI-compatible
  endpoint; `format` on the native `/api/chat`): widths as a fixed-length JSON array; no diff grammar.
- anything else: nothing is sent; the answer is parsed as usual (said once).
The `code` format (a whole file) is never constrained.

Detection costs at most four GET requests with a short time-out; `--server-kind` skips it.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from finetune.formats import get_format
from finetune.llm.servers import SERVER_KINDS, server_fields

KINDS = (*SERVER_KINDS, "unknown")  # the registered server kinds, and one that takes no grammar
MODES = ("auto", "on", "off")
VLLM_STRUCTURED = (0, 10, 2)  # first vLLM with `structured_outputs`


class ConstrainError(Exception):
    """--constrain on where the server cannot constrain: one-line error, exit 2."""


@dataclass(frozen=True)
class ServerKind:
    kind: str
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Constraint:
    """The request fields for one format on one server kind; `note` says why nothing is constrained."""
    kind: str
    format: str
    fields: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.fields)


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def _get_json(url: str, timeout_s: float):
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def detect_server(url: str, timeout_s: float = 3.0) -> ServerKind:
    """Which server answers at `url` (with or without /v1), from endpoints only one kind has."""
    base = _base(url)
    props = _get_json(f"{base}/props", timeout_s)
    if isinstance(props, dict) and ("default_generation_settings" in props or "total_slots" in props):
        build = props.get("build_info") or props.get("version")
        return ServerKind("llama.cpp", str(build) if build else None, "GET /props")
    ver = _get_json(f"{base}/version", timeout_s)
    if isinstance(ver, dict) and isinstance(ver.get("version"), str):
        v = ver["version"]
        kind = "vllm" if _version_tuple(v) >= VLLM_STRUCTURED else "vllm-legacy"
        return ServerKind(kind, v, "GET /version")
    ollama = _get_json(f"{base}/api/version", timeout_s)
    if isinstance(ollama, dict) and isinstance(ollama.get("version"), str):
        return ServerKind("ollama", ollama["version"], "GET /api/version")
    api = _get_json(f"{base}/openapi.json", timeout_s)
    if isinstance(api, dict) and "llama.cpp" in str((api.get("info") or {}).get("title", "")):
        return ServerKind("llama-cpp-python", (api.get("info") or {}).get("version"), "GET /openapi.json")
    return ServerKind("unknown", None, "no /props, /version, /api/version or llama.cpp /openapi.json")


def request_fields(kind: str, fmt: str, slots=None, max_blocks: int = 4, exclude=(), parent: str | None = None
                   ) -> Constraint:
    """Extra chat-request fields that make `kind` generate only well-formed `fmt` answers
    (`finetune.llm.servers`' table, the format's grammars); for widths, none of the width lists in
    `exclude` (the tried ones) where the grammar can say so (not Ollama's JSON schema); for diff,
    SEARCH lines quoted verbatim from `parent` where it is given."""
    from finetune.formats import get_format

    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r} (known: {', '.join(KINDS)})")
    f = get_format(fmt)
    f.check_grammar_args(slots, parent)
    if not f.constrainable:
        return Constraint(kind, fmt, note=f.unconstrained_note)
    if kind not in SERVER_KINDS:
        return Constraint(kind, fmt, note="unknown server kind: answers are parsed unconstrained "
                                          "(name it with --server-kind to constrain)")
    fields, note = server_fields(kind, f, slots, exclude, parent, max_blocks)
    return Constraint(kind, fmt, fields, note)


class ConstrainedRequests:
    """The request fields for a run: `mode` on/off/auto (auto: constrain where the server can, else
    fall back to parsing, said once per format on `warn`); `kind` given or detected once."""

    def __init__(self, url: str | None, mode: str = "auto", kind: str | None = None, warn=None,
                 timeout_s: float = 3.0):
        if mode not in MODES:
            raise ValueError(f"--constrain must be one of {', '.join(MODES)}, not {mode!r}")
        if kind is not None and kind not in KINDS:
            raise ConstrainError(f"--server-kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.mode = mode
        self.warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
        self._said: set[str] = set()
        if mode == "off":
            self.server = ServerKind(kind or "unknown", None, "constraints off")
        elif kind is not None:
            self.server = ServerKind(kind, None, "--server-kind")
        elif url is None:
            self.server = ServerKind("unknown", None, "no server URL (an in-process model)")
        else:
            self.server = detect_server(url, timeout_s)

    def constraint(self, fmt: str, slots=None, exclude=(), parent: str | None = None) -> Constraint:
        if self.mode == "off":
            return Constraint(self.server.kind, fmt, note="--constrain off")
        c = request_fields(self.server.kind, fmt, slots, exclude=exclude, parent=parent)
        if not c.active and get_format(fmt).constrainable:
            if self.mode == "on":
                raise ConstrainError(f"--constrain on, but {c.note} ({self.server.detail})")
            if fmt not in self._said:
                self._said.add(fmt)
                self.warn(f"{c.note} ({self.server.detail})")
        return c

    def fields(self, fmt: str, slots=None, exclude=(), parent: str | None = None) -> dict:
        return dict(self.constraint(fmt, slots, exclude, parent).fields)
