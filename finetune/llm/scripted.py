"""The scripted test double: replays answers (a list, cycled, or a function of the prompt).

    from finetune.llm import make_llm
    llm = make_llm("scripted", backend="scripted")    # always answers "" unless given answers
    llm = ScriptedLLM(["[16, 32]", "[24, 32]"])       # records each call's messages and extra fields
"""
from __future__ import annotations

from finetune.llm.base import register_backend


class ScriptedLLM:
    def __init__(self, answers, name: str = "scripted"):
        self.answers = answers
        self.name = name
        self.calls: list[list[dict]] = []
        self.extras: list[dict] = []  # the constrained-decoding fields of each call

    def generate(self, messages, *, temperature=0.7, max_new_tokens=1024, seed=0, extra=None) -> str:
        self.calls.append(messages)
        self.extras.append(dict(extra or {}))
        if callable(self.answers):
            return self.answers(messages)
        return self.answers[(len(self.calls) - 1) % len(self.answers)]

    def with_adapter(self, adapter: str):
        return ScriptedLLM(self.answers, f"{self.name}+{adapter}")


register_backend("scripted", lambda model, adapter=None, **_: ScriptedLLM([""], model + (f"+{adapter}" if adapter else "")))
