"""LLM backends behind one interface (`base.LLM`), for `finetune eval` and `search run` alike.

One module per backend, each registering itself: `transformers` (in process, + peft adapter),
`openai` (OpenAI-compatible servers), `scripted` (the test double). Which request field carries a
grammar on which server kind is `servers`' registry.
"""
from finetune.llm.base import (BACKENDS, LLM, Backend, LLMError, LLMServerError, backend_names, check_backend,
                               count_tokens, generate_many, get_backend, make_llm, register_backend, sample_many)
from finetune.llm.openai import OpenAILLM
from finetune.llm.scripted import ScriptedLLM
from finetune.llm.transformers import TransformersLLM

__all__ = ["BACKENDS", "LLM", "Backend", "LLMError", "LLMServerError", "OpenAILLM", "ScriptedLLM", "TransformersLLM",
           "backend_names", "check_backend", "count_tokens", "generate_many", "get_backend", "make_llm",
           "register_backend", "sample_many"]
