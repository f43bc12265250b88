"""The roles of one search iteration: feedback memory, Code Generator, Prompt Improver, proposers.

    memory = FeedbackMemory(k=5)                   # last k (problem, modification, outcome) triples
    gen = CodeGenerator(llm)                        # parent source + telemetry + instruction + memory -> code
    imp = PromptImprover(llm)                       # outcome -> (problem, modification) = next instruction

The Code Generator's prompt is `finetune.prompts.build_messages` (the template adapters are
trained on) with the improver's instruction and the memory as notes; a tuned model sees at
inference the prompt it was trained on, plus the notes.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass

from finetune.prompts import outcome_text, telemetry_text


@dataclass(frozen=True)
class Triple:
    problem: str
    modification: str
    outcome: str
    widths: tuple | None = None  # the widths tried (widths answers), for the GENIUS-style history

    def to_dict(self) -> dict:
        return asdict(self)


class FeedbackMemory:
    """Sliding window of the last k improvement attempts, failures included (constant prompt size)."""

    def __init__(self, k: int = 5):
        self.items: deque[Triple] = deque(maxlen=max(1, k))

    def add(self, t: Triple) -> None:
        self.items.append(t)

    def render(self) -> str:
        if not self.items:
            return "(no attempts yet)"
        return "\n".join(f"{i}. problem: {t.problem} | tried: {t.modification} | outcome: {t.outcome}"
                         for i, t in enumerate(self.items, 1))


def generator_messages(parent_code: str, parent_row: dict, goal: dict, instruction: str, memory: FeedbackMemory,
                       extra: str = ""):
    """The finetune template with notes before the source: `extra` (the bin's budget, the knowledge
    base), the improver's suggested change and the memory (the code format's search prompt)."""
    from finetune.formats import get_format

    return get_format("code").search_messages(parent_code, parent_row, goal, instruction, memory, extra)


class CodeGenerator:
    """The LLM proposer in one answer format (`finetune.formats`' registry: the format's prompt,
    parser, candidate and grammar arguments). The built-in ones:

    - `code`: the whole file back (`generator_messages`, notes before the source);
    - `diff`: SEARCH/REPLACE blocks applied to the parent source (`prompt_messages`, the memory as notes);
    - `widths`: one allowed value per width slot of the parent (its analysis cached per parent; the
      allowed values are the table space's `width_choices`, else the mutator's factor range), the
      tried widths and their outcomes as a GENIUS-style history; the candidate is realised by the
      mutator (`mutator.calls.realize`), so every coupled layer follows.

    `constrain`: a `search.constrain.ConstrainedRequests` whose fields go to `llm.generate(extra=...)`
    (None: parsing only). An answer that does not parse is a failure with status `parse_error`, its
    `parse_status` (`wrong_count`, `not_allowed`, `unmatched`, ...) and one-line reason."""

    def __init__(self, llm, temperature: float = 0.7, max_new_tokens: int = 1536, fmt: str = "code",
                 context: str = "source", pool=None, spec: dict | None = None, width_choices=None, constrain=None,
                 on_realize=None):
        from finetune.formats import check_format, get_format

        check_format(fmt, context)
        self.format = get_format(fmt)
        if self.format.needs_network and (pool is None or spec is None):
            raise ValueError(f"the {fmt} format needs a sandbox pool and the input spec")
        self.llm, self.temperature, self.max_new_tokens = llm, temperature, max_new_tokens
        self.fmt, self.context, self.pool, self.spec = fmt, context, pool, spec
        self.width_choices, self.constrain = width_choices, constrain
        self.on_realize = on_realize  # (source, widths, params) of each realised widths answer: a table's lookup
        self._parents: dict[str, dict] = {}

    def parent_info(self, parent_code: str) -> dict:
        """{"analysis", "slots", "summary"} of a parent (sandboxed, once per parent), or {"error"}."""
        import hashlib

        from finetune.formats import summary_text, width_slots
        from mutator.calls import analyze

        key = hashlib.sha256(parent_code.encode()).hexdigest()
        if key in self._parents:
            return self._parents[key]
        a = analyze(self.pool, parent_code, self.spec)
        if not a.ok or not a.groups:
            info = {"error": f"the parent's widths cannot be analysed: {a.error or 'no width literals'}"}
        elif self.width_choices and len(self.width_choices) != len(a.groups):
            info = {"error": f"{len(a.groups)} widths, the benchmark space has {len(self.width_choices)}"}
        else:
            lt = self.pool.call("finetune.formats:layer_table", {"source": parent_code, "spec": self.spec})
            layers = lt.get("layers") or []
            info = {"analysis": a, "slots": width_slots(a.groups, choices=self.width_choices, layers=layers),
                    "summary": summary_text(layers, a.groups) if layers else None}
        self._parents[key] = info
        return info

    def messages(self, parent_code, parent_row, goal, instruction, memory, extra: str = "", info=None):
        return self.format.search_messages(parent_code, parent_row, goal, instruction, memory, extra, info,
                                           self.context)

    def propose(self, parent_code, parent_row, goal, instruction, memory, seed, extra: str = "",
                exclude=None) -> dict:
        """One answer. `exclude`: the width lists tried, left out of a widths grammar together with the
        parent's (None: the plain grammar)."""
        from finetune.llm import LLMServerError

        info = self.parent_info(parent_code) if self.format.needs_network else {}
        if "error" in info:
            return {"prompt": None, "raw": None, "code": None, "status": "parse_error", "format": self.fmt,
                    "parse_status": "no_slots", "error": info["error"]}
        msgs = self.messages(parent_code, parent_row, goal, instruction, memory, extra, info)
        fields = {} if self.constrain is None else \
            self.constrain.fields(self.fmt, **self.format.constraint_args(parent_code, info, exclude))
        try:
            raw = self.llm.generate(msgs, temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=seed,
                                    **({"extra": fields} if fields else {}))
        except LLMServerError as exc:  # an outcome of this iteration, not the end of the run
            return {"prompt": msgs, "raw": None, "code": None, "status": "llm_error", "error": str(exc),
                    "format": self.fmt}
        out = {"prompt": msgs, "raw": raw, "format": self.fmt, "constrained": bool(fields)}

        def realize(widths: list[int]):
            from mutator.calls import realize

            v = realize(self.pool, parent_code, self.spec, info["analysis"], [widths])[0]
            if v.ok and self.on_realize is not None:
                self.on_realize(v.source, widths, v.params)
            return v

        return {**out, **self.format.search_candidate(raw, parent_code, info, realize)}


IMPROVER_SYSTEM = ("You review experiments of a neural-architecture search. Given the network a candidate "
                   "started from, the candidate's outcome and recent attempts, name the problem and one "
                   "concrete change to the network's source to try next. Reply with exactly two lines:\n"
                   "PROBLEM: <one sentence>\nMODIFICATION: <one sentence>")

_LINE = re.compile(r"^\W*(problem|issue|diagnosis|modification|change|suggestion|next)\W*[:\-]\s*(.+)$", re.I | re.M)


def parse_diagnosis(text: str) -> tuple[str, str] | None:
    """(problem, modification) from an improver answer, tolerant of markdown and synonyms."""
    found = {}
    for m in _LINE.finditer(text or ""):
        key = "problem" if m.group(1).lower() in ("problem", "issue", "diagnosis") else "modification"
        found.setdefault(key, m.group(2).strip().strip("*").strip()[:300])
    if "problem" in found and "modification" in found and found["modification"]:
        return found["problem"], found["modification"]
    return None


def rule_diagnosis(row: dict, parent: dict | None) -> tuple[str, str]:
    """A deterministic diagnosis (the no-LLM baseline, and the fallback for unparseable answers)."""
    status = row.get("status")
    if status == "no_code":
        return ("the answer contained no Python code", "answer with the complete source in one ```python block")
    if status == "parse_error":
        return (f"the answer was not in the asked format: {(row.get('error') or '')[:120]}",
                "answer exactly in the asked format")
    if status in ("build_error", "shape_error", "invalid"):
        return (f"the network does not build or has inconsistent shapes: {(row.get('error') or '')[:120]}",
                "change only width literals and keep every layer's input channels equal to the previous layer's output")
    if status == "duplicate":
        return (f"the candidate repeats a network already tried: {(row.get('error') or '')[:120]}",
                "change the widths of different layers than before, or by a different amount")
    if status == "constraint":
        return (f"the candidate breaks a constraint: {row.get('error')}", "narrow the widest layers to cut cost")
    if status != "ok":
        return (f"the candidate failed ({status}): {(row.get('error') or '')[:120]}",
                "make a smaller, more conservative width change")
    if parent is None or parent.get("accuracy") is None:
        return ("no baseline yet", "widen the narrowest layers moderately")
    gain = row["accuracy"] - parent["accuracy"]
    bigger = (row.get("params") or 0) > (parent.get("params") or 0)
    if gain > 0:
        return (f"none: accuracy improved by {100 * gain:.2f} points",
                f"continue in the same direction ({'widen' if bigger else 'narrow'} further)")
    return (f"accuracy fell by {100 * -gain:.2f} points {'despite more' if bigger else 'with fewer'} parameters",
            "narrow the layers that were widened" if bigger else "widen the layers that were narrowed")


# One worked exchange shown before the real question (`--improver-example`): small models copy a
# format they have seen far more reliably than one they are told about, but SmolLM2-135M also copies
# the example's content, so it is off by default (measured: benchmarks/improver_format.py).
IMPROVER_SHOT = (
    "The network the candidate started from: accuracy 61.2%, 0.28 MFLOPs, 44,426 params, latency 0.35 ms.\n"
    "Latest candidate: FAILED shape_error: RuntimeError (line 30): Given groups=1, weight of size "
    "[16, 8, 5, 5], expected input[1, 6, 12, 12] to have 8 channels, but got 6 channels instead.\n"
    "Recent attempts:\n1. problem: accuracy fell by 0.8 points with fewer parameters | tried: widen conv1 "
    "| outcome: FAILED shape_error\n",
    "PROBLEM: conv1 was widened to 8 channels but conv2 still expects 6 input channels.\n"
    "MODIFICATION: set conv2's in_channels to conv1's out_channels (8) and keep the other widths.")


def improver_messages(user: str, shot: bool = False) -> list[dict]:
    msgs = [{"role": "system", "content": IMPROVER_SYSTEM}]
    if shot:
        msgs += [{"role": "user", "content": IMPROVER_SHOT[0]}, {"role": "assistant", "content": IMPROVER_SHOT[1]}]
    return msgs + [{"role": "user", "content": user}]


class PromptImprover:
    def __init__(self, llm=None, temperature: float = 0.3, max_new_tokens: int = 160, shot: bool = False):
        self.llm, self.temperature, self.max_new_tokens, self.shot = llm, temperature, max_new_tokens, shot

    def diagnose_messages(self, row: dict, parent: dict | None, memory: FeedbackMemory) -> list[dict]:
        parent_txt = telemetry_text(parent) if parent else "none yet"
        user = (f"The network the candidate started from: {parent_txt}.\n"
                f"Latest candidate: {outcome_text(row, parent)}.\n"
                f"Recent attempts:\n{memory.render()}\n")
        return improver_messages(user, self.shot)

    def diagnose(self, row: dict, parent: dict | None, memory: FeedbackMemory, seed: int) -> dict:
        if self.llm is None:
            p, m = rule_diagnosis(row, parent)
            return {"problem": p, "modification": m, "raw": None, "source": "rule"}
        from finetune.llm import LLMServerError

        try:
            raw = self.llm.generate(self.diagnose_messages(row, parent, memory),
                                    temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=seed)
        except LLMServerError as exc:  # no diagnosis this time: the rule's, recorded as such
            p, m = rule_diagnosis(row, parent)
            return {"problem": p, "modification": m, "raw": None, "source": "llm_error", "error": str(exc)}
        parsed = parse_diagnosis(raw)
        if parsed is None:
            p, m = rule_diagnosis(row, parent)
            return {"problem": p, "modification": m, "raw": raw, "source": "rule-fallback"}
        return {"problem": parsed[0], "modification": parsed[1], "raw": raw, "source": "llm"}

    def rewrite_knowledge(self, items: list[str], records: list[dict], seed: int) -> dict:
        """The next knowledge-base version from the round's records (see search.knowledge)."""
        from search.knowledge import MAX_ITEMS, parse, round_summary, rule_rewrite

        summary = round_summary(records)
        if self.llm is None:
            return {"items": rule_rewrite(items, records), "raw": None, "source": "rule", "summary": summary}
        current = "\n".join(f"- {h}" for h in items) or "- (none yet)"
        user = (f"Current design heuristics:\n{current}\n\nThis round's candidates (change vs their parent):\n"
                f"{summary}\n\nRewrite the heuristics: keep what the results support, drop or correct what they "
                f"contradict, add what they show per complexity bin. At most {MAX_ITEMS} lines, each starting with '- '.")
        from finetune.llm import LLMServerError

        try:
            raw = self.llm.generate([{"role": "system", "content": KB_SYSTEM}, {"role": "user", "content": user}],
                                    temperature=self.temperature, max_new_tokens=2 * self.max_new_tokens, seed=seed)
        except LLMServerError as exc:
            return {"items": rule_rewrite(items, records), "raw": None, "source": "llm_error", "summary": summary,
                    "error": str(exc)}
        parsed = parse(raw)
        if parsed is None:
            return {"items": rule_rewrite(items, records), "raw": raw, "source": "rule-fallback", "summary": summary}
        return {"items": parsed, "raw": raw, "source": "llm", "summary": summary}


KB_SYSTEM = ("You maintain a short list of design heuristics for a neural-architecture search that trades "
             "accuracy against hardware cost. Each heuristic is one sentence about which width changes help "
             "or hurt, and where (which complexity bin). Reply only with the list.")


class RandomProposer:
    """The no-LLM baseline: a random mutator variant of the current parent, same loop and profiler.

    It reads no prompt: a bin's budget and the knowledge base do not steer it (in Pareto mode only
    the parent it mutates, and screening, depend on the bin)."""

    def __init__(self, spec: dict, pool, rng_seed: int = 0, width_choices=None):
        self.spec, self.pool, self.rng_seed, self.width_choices = spec, pool, rng_seed, width_choices
        self._analysis: dict[str, dict] = {}

    def propose(self, parent_code, parent_row, goal, instruction, memory, seed, extra: str = "",
                exclude=None) -> dict:
        import hashlib
        import random

        from mutator.calls import analyze, realize
        from mutator.generate import GenerateConfig, sample_widths

        key = hashlib.sha256(parent_code.encode()).hexdigest()
        if key not in self._analysis:
            self._analysis[key] = analyze(self.pool, parent_code, self.spec)
        a = self._analysis[key]
        if not a.ok or not a.groups:
            return {"prompt": None, "raw": None, "code": None, "error": a.error or "no widths"}
        rng = random.Random(seed)
        cfg = GenerateConfig(min_factor=0.5, max_factor=1.5,
                             width_choices=tuple(map(tuple, self.width_choices)) if self.width_choices else None)
        if cfg.width_choices and len(cfg.width_choices) != len(a.groups):
            return {"prompt": None, "raw": None, "code": None,
                    "error": f"{len(a.groups)} widths, the benchmark space has {len(cfg.width_choices)}"}
        for _ in range(20):
            widths = sample_widths(rng, a.groups, cfg)
            if widths == a.seed_widths:
                continue
            r = realize(self.pool, parent_code, self.spec, a, [widths])[0]
            if r.ok:
                return {"prompt": None, "raw": f"widths {widths}", "code": r.source}
        return {"prompt": None, "raw": None, "code": None, "error": "no valid random variant in 20 draws"}
