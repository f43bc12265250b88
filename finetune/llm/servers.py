"""Which chat-request fields carry an answer format's grammar, per OpenAI-compatible server kind.

    from finetune.llm.servers import server_fields
    fields, note = server_fields("vllm", get_format("widths"), slots=slots)   # {"structured_outputs": ...}

One function per kind, `(fmt, slots, exclude, parent, max_blocks) -> (fields, note)` (fields {} and
a note where the kind cannot constrain that format), registered with `register_server_kind`:
- llama.cpp's `llama-server` and `python -m llama_cpp.server` (llama-cpp-python): `grammar` (GBNF);
- vLLM >= 0.10.2: `structured_outputs` = {"regex": ...} where the format has a regex, else
  {"grammar": ...}; older vLLM (`vllm-legacy`): `guided_regex` / `guided_grammar`;
- Ollama: a JSON schema only (`response_format`), where the format has one.
"""
from __future__ import annotations

from typing import Callable

SERVER_KINDS: dict[str, Callable] = {}


def register_server_kind(name: str, fields: Callable) -> None:
    SERVER_KINDS[name] = fields


def server_fields(kind: str, fmt, slots=None, exclude=(), parent: str | None = None, max_blocks: int = 4):
    """(request fields, note) for `fmt` (an `AnswerFormat`) on a registered server kind."""
    return SERVER_KINDS[kind](fmt, slots, exclude, parent, max_blocks)


def _gbnf(fmt, slots, exclude, parent, max_blocks):
    return {"grammar": fmt.grammar(slots, exclude, parent, max_blocks)}, None


def _vllm(fmt, slots, exclude, parent, max_blocks):
    regex = fmt.regex(slots, exclude)
    return {"structured_outputs": {"regex": regex} if regex is not None else
            {"grammar": fmt.grammar(slots, exclude, parent, max_blocks)}}, None


def _vllm_legacy(fmt, slots, exclude, parent, max_blocks):
    regex = fmt.regex(slots, exclude)
    return ({"guided_regex": regex} if regex is not None else
            {"guided_grammar": fmt.grammar(slots, exclude, parent, max_blocks)}), None


def _ollama(fmt, slots, exclude, parent, max_blocks):
    schema = fmt.json_schema(slots)
    if schema is None:
        return {}, f"Ollama constrains only to a JSON schema: {fmt.name} answers are parsed unconstrained"
    return {"response_format": {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": schema}}}, None


register_server_kind("llama.cpp", _gbnf)
register_server_kind("llama-cpp-python", _gbnf)
register_server_kind("vllm", _vllm)
register_server_kind("vllm-legacy", _vllm_legacy)
register_server_kind("ollama", _ollama)
