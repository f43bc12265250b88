"""Answer formats: what the LLM is asked to write, and turning its answer into a candidate.

    python -c "from finetune.formats import demo; demo()"     # cbm-resnet widths prompt + summary, printed

    from finetune.formats import width_slots, widths_messages, parse_answer, widths_gbnf
    slots = width_slots(analysis.groups, choices=SPACES["cbm-resnet"]["choices"], layers=layers)
    msgs = widths_messages(slots, row, goal, summary=summary_text(layers, slots), history=tried)
    ans = parse_answer("widths", llm_text, slots=slots)     # Answer: ok + widths, or a failure + reason
    ans = parse_answer("diff", llm_text, parent=source)     # ok + the edited source
    ans = parse_answer("code", llm_text)                    # ok + the complete source

A registry of formats (`finetune.formats.base`: `AnswerFormat`, `register_format`, `get_format`), one
module each, one result record (`Answer`, never an exception for bad LLM output):
- `widths`: the answer is a list of integers, one per width slot (the mutator's width groups, in
  source order). The candidate is then built by the mutator (`mutator.calls.realize`), which updates
  every coupled layer. A slot's allowed values are a table space's choices (Channel-Bench-Macro,
  `corpus.table.SPACES`), else the multiples of the group's `multiple` (the divisor, and any group
  count it feeds) from `min_factor` to `max_factor` times its current value, never below the multiple
  (`mutator.generate.GenerateConfig`'s rule).
- `diff`: OpenEvolve-style `<<<<<<< SEARCH` / `=======` / `>>>>>>> REPLACE` blocks against the parent
  source, applied in order. Each SEARCH text must match: exactly first (its first occurrence), else
  line by line ignoring indentation, trailing spaces and blank lines (the replacement is re-indented
  to the matched place). A block that matches nothing fails the whole answer, quoting its SEARCH text.
- `code`: the complete file in a fenced block (`finetune.prompts.extract_code`).

`--context summary` shows, instead of the source, a per-layer table from the width analysis
(`summary_text`): layer, op (kernel, stride, depthwise), in -> out channels, and which slot drives
each side. The layer list comes from `layer_table`, a sandbox handler (it builds untrusted code):
`pool.call("finetune.formats:layer_table", {"source": ..., "spec": ...})`.

Grammars for constrained decoding (GBNF for llama.cpp, a regex for vLLM, a JSON schema for Ollama):
`widths_gbnf(slots)` admits exactly one allowed value per slot, in order, in the right count;
`diff_gbnf()` admits one to `max_blocks` well-formed blocks and nothing else; `diff_gbnf(parent=src)`
also makes every SEARCH line a verbatim line of the parent and bounds the REPLACE part. Which request field
carries them is `search.constrain`'s business.
"""
from __future__ import annotations

from finetune.formats.base import (CONTEXTS, FORMAT_REGISTRY, QUOTE_CHARS, Answer, AnswerFormat, check_format,
                                   format_names, get_format, grammar_logits_processor, parse_quietly, register_format)
from finetune.formats.widths import (WIDTHS_SYSTEM, WidthSlot, WidthsFormat, allowed_text, allowed_values,
                                     layer_table, op_label, parse_widths, slot_line, slots_compact, summary_text,
                                     width_slots, widths_answer, widths_gbnf, widths_messages, widths_regex,
                                     widths_schema, widths_text)
from finetune.formats.diff import (DIFF_FORMAT, DIFF_SYSTEM, DiffFormat, apply_diff, diff_gbnf, diff_messages,
                                   diff_text, parse_diff_blocks)
from finetune.formats.code import CodeFormat, parse_code
from mutator.handlers import register_handler

FORMATS = format_names()  # the built-in ones; the registry may hold more

# the sandbox handler of the widths format's layer table, under this package's name (`finetune.formats:layer_table`)
LAYER_TABLE = register_handler("finetune.formats:layer_table", warm=("mutator.probe",)).name


def parse_answer(fmt: str, text: str | None, *, slots=None, parent: str | None = None) -> Answer:
    """One entry point: `widths` needs `slots`, `diff` needs `parent`."""
    return get_format(fmt).parse(text, slots=slots, parent=parent)


def grammar_for(fmt: str, slots=None, exclude=()) -> str | None:
    """The GBNF grammar of a format (None for `code`: a whole file is not constrained)."""
    return get_format(fmt).grammar(slots, exclude)


def prompt_messages(fmt: str, context: str, source: str, row: dict, goal: dict, *, slots=None,
                    summary: str | None = None, history=(), notes: str = "") -> list[dict]:
    """THE prompt for (source network, goal, answer format, context): system + user message. Pure.

    `code`: `prompts.build_messages` (the full source, the whole file back); `diff`: `diff_messages`
    (the full source, SEARCH/REPLACE blocks back); `widths`: `widths_messages` with the
    network's width slots (`width_slots`) and, for `context="summary"`, the per-layer table
    (`summary_text`) instead of the source. `history` and `notes` are the search loop's
    (tried widths, feedback); training pairs have neither."""
    check_format(fmt, context)
    return get_format(fmt).messages(source, row, goal, context=context, slots=slots, summary=summary,
                                    history=history, notes=notes)


def demo(seed: str = "cbm-resnet") -> None:
    """Print the widths prompt with summary context for a built-in seed (builds it in the sandbox)."""
    from corpus.table import SPACES, SPEC
    from mutator import seeds
    from mutator.calls import analyze
    from mutator.sandbox import WorkerPool

    source = seeds.seed_source(seed)
    with WorkerPool(1, timeout_s=300) as pool:
        a = analyze(pool, source, SPEC)
        lt = pool.call("finetune.formats:layer_table", {"source": source, "spec": SPEC})
    layers = lt.get("layers") or []
    slots = width_slots(a.groups, choices=SPACES.get(seed, {}).get("choices"), layers=layers)
    for m in widths_messages(slots, summary=summary_text(layers, a.groups)):
        print(f"--- {m['role']}\n{m['content']}")
    print(f"--- grammar\n{widths_gbnf(slots)}")
