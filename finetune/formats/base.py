"""The answer-format protocol and its registry: what the LLM is asked to write, and how its answer
becomes a candidate.

    from finetune.formats import get_format, register_format, format_names
    f = get_format("widths")                 # ValueError naming the known formats otherwise
    msgs = f.messages(source, row, goal, context="summary", slots=slots, summary=text)
    ans = f.parse(llm_text, slots=slots)     # Answer: ok + widths, or a failure + reason
    f.grammar(slots), f.regex(slots), f.json_schema(slots)   # constrained decoding; None: not expressible
    f.token_budget(prompt_tokens, slots=len(slots))          # new tokens an answer may need

One module per format (`widths`, `diff`, `code`), each a subclass of `AnswerFormat` registered by name
(`register_format(WidthsFormat())`); adding one is one file and one registry line. Callers never ask
which format they hold: they call its methods and read its flags (`needs_network`, `contexts`,
`shows_history`, `repairable`, `constrainable`).
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from finetune.prompts import goal_text, telemetry_text

QUOTE_CHARS = 160  # how much of an unmatched SEARCH text a failure quotes
CONTEXTS = ("source", "summary")  # what a prompt shows of the source network


@dataclass(frozen=True)
class Answer:
    """One parsed LLM answer. `status` "ok", else why not: no_list, wrong_count, not_allowed (widths),
    no_blocks, unclosed, empty_search, unmatched, no_change, syntax_error (diff), no_code (code)."""
    format: str
    status: str
    error: str | None = None
    widths: tuple[int, ...] | None = None
    code: str | None = None
    edits: int = 0  # diff: blocks applied
    fuzzy: int = 0  # diff: blocks that matched only ignoring indentation/trailing spaces/blank lines

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _head(row: dict | None, goal: dict | None) -> str:
    out = ""
    if row:
        where = f" on {row['dataset']}" if row.get("dataset") else ""
        out += f"Network, measured{where}: {telemetry_text(row)}.\n"
    if goal:
        out += f"Goal: {goal_text(goal)}\n"
    return out


_CHAT_TOKENS = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end|assistant)\|>|</s>")


def _snippet(text: str, n: int = 80) -> str:
    t = " ".join((text or "").split())
    return repr(t[:n] + ("..." if len(t) > n else ""))


def _gbnf_str(s: str) -> str:
    return json.dumps(s)


def parse_quietly(code: str):
    """ast.parse without the SyntaxWarnings an LLM's text triggers (`invalid decimal literal`) on stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(code)


def grammar_logits_processor(tokenizer, grammar: str, vocab_size: int | None = None):
    """A transformers logits processor that admits only `grammar` (GBNF), for an in-process model
    (`model.generate(..., logits_processor=[p])`; one processor per generate call, it keeps the
    parse state). Backed by xgrammar, which runs on CPU (`pip install --no-deps xgrammar
    apache-tvm-ffi`: its triton requirement is for CUDA kernels only). `vocab_size`: the model's
    (`model.config.vocab_size`), which may exceed the tokenizer's. ImportError without xgrammar."""
    try:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor
    except ImportError as exc:
        raise ImportError(f"constrained decoding in process needs xgrammar ({exc})") from None
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return LogitsProcessor(xgr.GrammarCompiler(info).compile_grammar(grammar))


# -- the protocol and its registry --------------------------------------------------------------------------------

class AnswerFormat:
    """One answer format. Subclasses set `name` and override what differs from these defaults (a
    whole source back, shown the source, no grammar).

    Flags: `contexts`: what its prompt may show of the source (`source`, `summary`); `needs_network`:
    its prompt and candidate need the source's width analysis (`slots`, `summary`, the `analysis`
    that `realize` takes); `shows_history`: its prompt lists tried configurations (`history`);
    `repairable`: its candidates are edited sources that shape repair may fix (`mutator.repair`);
    `constrainable`: it has a grammar for constrained decoding; `gives_widths`: its parsed answer is a width
    list (`Answer.widths`), which a scored pool can take as a member (`search run --scorer-generate`)."""
    name: str = ""
    contexts: tuple[str, ...] = ("source",)
    needs_network: bool = False
    shows_history: bool = False
    repairable: bool = True
    constrainable: bool = False
    gives_widths: bool = False

    # prompts ---------------------------------------------------------------------------------------------
    def messages(self, source: str, row: dict, goal: dict, *, context: str = "source", slots=None,
                 summary: str | None = None, history=(), notes: str = "") -> list[dict]:
        """System + user message for (source network, goal); `history`/`notes` are the search loop's."""
        raise NotImplementedError

    def search_messages(self, parent_code: str, parent_row: dict, goal: dict, instruction: str, memory,
                        extra: str = "", info: dict | None = None, context: str = "source") -> list[dict]:
        """The search's prompt: `extra` (a bin's budget, the knowledge base), the improver's suggested
        change and the feedback memory (`memory.render()`, `memory.items`) as notes."""
        notes = (f"{extra}Suggested change: {instruction}\n"
                 f"Recent attempts (most recent last):\n{memory.render()}\n\n")
        return self.messages(parent_code, parent_row, goal, context="source", notes=notes)

    def context_for(self, context: str) -> str:
        """The context a prompt in this format shows when `context` is asked for all formats (the
        source where this format cannot show `context`; an unknown context stays, for check_format)."""
        return context if context in self.contexts or context not in CONTEXTS else "source"

    # training targets -------------------------------------------------------------------------------
    def target(self, src: dict, tgt: dict, net=None, tried=()) -> tuple[dict | None, dict, str | None]:
        """(the true answer message, extra prompt arguments, None), or (None, {}, why the pair has no true
        answer in this format). `net`: the source's `finetune.pairs.Network`; `tried`: rows shown as tried."""
        raise NotImplementedError

    # answers ---------------------------------------------------------------------------------------------
    def parse(self, text: str | None, *, slots=None, parent: str | None = None) -> Answer:
        raise NotImplementedError

    def eval_candidate(self, text: str, parent: str, net=None, realize=None) -> tuple[str | None, str, str | None]:
        """(source code, status, error) of one answer (`finetune eval`). `realize(widths)`: the mutator's
        variant of the parent with those widths."""
        ans = self.parse(text, parent=parent)
        return (ans.code, "ok", None) if ans.ok else (None, ans.status, ans.error)

    def search_candidate(self, raw: str, parent: str, info: dict, realize=None) -> dict:
        """The proposal fields of one answer (`search.roles.CodeGenerator`): `code` (None: no candidate),
        `parse_status`, and on failure `status` and `error`."""
        ans = self.parse(raw, slots=info.get("slots"), parent=parent)
        if not ans.ok:
            return {"code": None, "status": "parse_error", "parse_status": ans.status, "error": f"{ans.status}: {ans.error}"}
        return {"code": ans.code, "parse_status": "ok"}

    # constrained decoding --------------------------------------------------------------------------
    unconstrained_note = "the answers are not constrained"

    def check_grammar_args(self, slots=None, parent: str | None = None) -> None:
        """ValueError where the grammar cannot be built from these arguments."""

    def constraint_args(self, parent: str, info: dict, exclude=None) -> dict:
        """The keyword arguments of `grammar`/`regex`/`json_schema` for one search proposal."""
        return {}

    def grammar(self, slots=None, exclude=(), parent: str | None = None, max_blocks: int = 4) -> str | None:
        """GBNF (llama.cpp, xgrammar, vLLM's grammar field); None: no grammar."""
        return None

    def regex(self, slots=None, exclude=()) -> str | None:
        """The same language as a regular expression, where one is simpler (vLLM prefers it); None: none."""
        return None

    def json_schema(self, slots=None) -> dict | None:
        """The same language as a JSON schema (Ollama's only kind); None: not expressible."""
        return None

    # token budget -------------------------------------------------------------------------------------
    def token_budget(self, prompt_tokens: int, slots: int = 0) -> int:
        """New tokens an answer may need: about as long as the source in the prompt."""
        return min(2048, int(1.5 * prompt_tokens) + 64)


FORMAT_REGISTRY: dict[str, AnswerFormat] = {}  # filled by `finetune.formats` (import that, not this module)


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    FORMAT_REGISTRY[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    return tuple(FORMAT_REGISTRY)


def get_format(fmt) -> AnswerFormat:
    """The registered format called `fmt` (a format object is returned as is); ValueError otherwise."""
    if isinstance(fmt, AnswerFormat):
        return fmt
    names = format_names()
    if fmt not in FORMAT_REGISTRY:
        raise ValueError(f"unknown answer format {fmt!r} (known: {', '.join(names)})")
    return FORMAT_REGISTRY[fmt]


def check_format(fmt: str, context: str) -> None:
    """ValueError for an unknown format or context, or a context the format cannot show."""
    f = get_format(fmt)
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r} (known: {', '.join(CONTEXTS)})")
    if context not in f.contexts:
        able = [n for n, g in FORMAT_REGISTRY.items() if context in g.contexts]
        raise ValueError(f"--context {context} needs --answer-format {' or '.join(able)} (a {fmt} answer edits "
                         "the source, so the prompt must show it)")
