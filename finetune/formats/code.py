"""The `code` answer format: the complete file in a fenced block (`finetune.prompts.extract_code`).
A whole file is never constrained by a grammar.
"""
from __future__ import annotations

from finetune.formats.base import Answer, AnswerFormat, _snippet, register_format
from finetune.prompts import answer_message, build_messages, extract_code


def parse_code(text: str | None) -> Answer:
    code = extract_code(text)
    if code is None:
        return Answer("code", "no_code", f"no Python source found in the answer: {_snippet(text or '')}")
    return Answer("code", "ok", code=code)


class CodeFormat(AnswerFormat):
    name = "code"
    unconstrained_note = "the code format (a whole file) is not constrained"

    def messages(self, source, row, goal, *, context="source", slots=None, summary=None, history=(), notes=""):
        """`prompts.build_messages`: the full source, the whole file back (no notes: the fine-tuning template)."""
        return build_messages(source, row, goal)

    def search_messages(self, parent_code, parent_row, goal, instruction, memory, extra="", info=None,
                        context="source"):
        """The fine-tuning template with notes before the source: `extra`, the suggested change, the memory."""
        msgs = build_messages(parent_code, parent_row, goal)
        notes = (f"{extra}"
                 f"Suggested change: {instruction}\n"
                 f"Recent attempts (most recent last):\n{memory.render()}\n\n")
        user = msgs[1]["content"]
        cut = user.find("```python")
        msgs[1] = {"role": "user", "content": user[:cut] + notes + user[cut:]}
        return msgs

    def target(self, src, tgt, net=None, tried=()):
        return answer_message(tgt["code"]), {}, None

    def parse(self, text, *, slots=None, parent=None):
        return parse_code(text)

    def search_candidate(self, raw, parent, info, realize=None):
        """As before the formats: no code is `no_code`, not a parse error."""
        code = extract_code(raw)
        return {"code": code, "parse_status": "ok" if code else "no_code"}


register_format(CodeFormat())
