"""The LLM backends of the search: `finetune.llm`'s (kept importable here).

    from search.llm import make_llm, ScriptedLLM, LLMServerError
"""
from finetune.llm import (LLMError, LLMServerError, OpenAILLM, ScriptedLLM, TransformersLLM, check_backend,  # noqa: F401
                          make_llm, register_backend)
