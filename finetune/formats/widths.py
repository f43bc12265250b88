"""The `widths` answer format: one allowed value per width slot; the mutator realises the candidate.

    from finetune.formats.widths import width_slots, widths_messages, parse_widths, widths_gbnf
    slots = width_slots(analysis.groups, choices=SPACES["cbm-resnet"]["choices"], layers=layers)
    msgs = widths_messages(slots, row, goal, summary=summary_text(layers, slots), history=tried)
    ans = parse_widths(llm_text, slots)     # Answer: ok + widths, or a failure + reason

The slots are the mutator's width groups, in source order. The candidate is built by the mutator
(`mutator.calls.realize`), which updates every coupled layer. A slot's allowed values are a table
space's choices (Channel-Bench-Macro, `corpus.table.SPACES`), else the multiples of the group's
`multiple` (the divisor, and any group count it feeds) from `min_factor` to `max_factor` times its
current value, never below the multiple (`mutator.generate.GenerateConfig`'s rule).

`--context summary` shows, instead of the source, a per-layer table from the width analysis
(`summary_text`). The layer list comes from `layer_table`, a sandbox handler (it builds untrusted
code): `pool.call("finetune.formats:layer_table", {"source": ..., "spec": ...})`.

Grammars: `widths_gbnf(slots)` (llama.cpp, xgrammar) admits exactly one allowed value per slot, in
order, in the right count; `widths_regex` (vLLM) and `widths_schema` (Ollama) the same language.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from finetune.formats.base import (_CHAT_TOKENS, Answer, AnswerFormat, _gbnf_str, _head, _snippet,
                                   register_format)


@dataclass(frozen=True)
class WidthSlot:
    """One searchable width: a mutator width group. `drives`: the layers whose output channels it
    sets (module names), `ops`: their op labels (`conv3x3`, ...) where a layer table was given."""
    name: str
    value: int
    allowed: tuple[int, ...]
    drives: tuple[str, ...] = ()
    ops: tuple[str, ...] = field(default=(), compare=False)


# -- width slots ------------------------------------------------------------------------------------

def allowed_values(value: int, multiple: int, min_factor: float = 0.25, max_factor: float = 2.0) -> tuple[int, ...]:
    """What `mutator.generate.sample_widths` can draw: value x a factor in [min_factor, max_factor],
    rounded to a multiple of `multiple`, never below it."""
    m = max(1, int(multiple))
    lo, hi = max(1, round(value * min_factor / m)), max(1, round(value * max_factor / m))
    return tuple(k * m for k in range(lo, hi + 1))


def _producers(group: dict) -> list[str]:
    return [l.rsplit(".", 1)[0] for l in group.get("layers", ())
            if l.endswith((".out_channels", ".out_features"))]


def width_slots(groups: list[dict], choices=None, min_factor: float = 0.25, max_factor: float = 2.0,
                layers: list[dict] | None = None, values=None) -> tuple[WidthSlot, ...]:
    """Slots `w0..wN-1` from an analysis's groups. `choices`: allowed values per slot (a table space);
    `values`: the current widths when they differ from the analysed source's; `layers`: a
    `layer_table` result, for op labels."""
    if choices is not None and len(choices) != len(groups):
        raise ValueError(f"{len(choices)} choice lists for {len(groups)} width groups")
    ops = {l["name"]: op_label(l) for l in layers or ()}
    order = {name: i for i, name in enumerate(ops)}
    out = []
    for i, g in enumerate(groups):
        v = int(values[i]) if values is not None else int(g["value"])
        allowed = tuple(int(c) for c in choices[i]) if choices is not None else \
            allowed_values(int(g["value"]), int(g.get("multiple", 8)), min_factor, max_factor)
        if choices is None and int(g["value"]) not in allowed:  # a current width off the grid (LeNet's 84) stays allowed
            allowed = tuple(sorted({*allowed, int(g["value"])}))
        drives = tuple(sorted(_producers(g), key=lambda n: (order.get(n, len(order)), n)))
        out.append(WidthSlot(f"w{i}", v, allowed, drives, tuple(ops.get(d, "") for d in drives)))
    return tuple(out)


def op_label(layer: dict) -> str:
    """`conv3x3`, `dwconv3x3`, `conv1x1`, `linear`, ... (stride separately)."""
    t = layer.get("type", "")
    if t == "Linear":
        return "linear"
    k = layer.get("kernel") or []
    base = "conv" if t.startswith("Conv") else t.lower()
    dw = layer.get("groups", 1) > 1 and layer.get("groups") == layer.get("in")
    return ("dw" if dw else "") + base + "x".join(map(str, k))


def _compress(names: list[str]) -> str:
    """`blocks.2.conv2, blocks.3.conv2, blocks.4.conv2` -> `blocks.2-4.conv2`."""
    if len(names) == 1:
        return names[0]
    parts = [n.split(".") for n in names]
    if len({len(p) for p in parts}) == 1:
        diff = [j for j in range(len(parts[0])) if len({p[j] for p in parts}) > 1]
        if len(diff) == 1 and all(p[diff[0]].isdigit() for p in parts):
            j = diff[0]
            nums = sorted(int(p[j]) for p in parts)
            span = f"{nums[0]}-{nums[-1]}" if nums == list(range(nums[0], nums[-1] + 1)) else "/".join(map(str, nums))
            return ".".join(parts[0][:j] + [span] + parts[0][j + 1:])
    return ", ".join(names[:4]) + (f", ... ({len(names)} layers)" if len(names) > 4 else "")


def allowed_text(allowed: tuple[int, ...]) -> str:
    if len(allowed) <= 8:
        return "/".join(map(str, allowed))
    step = allowed[1] - allowed[0]
    if all(b - a == step for a, b in zip(allowed, allowed[1:])):
        return f"multiples of {step} from {allowed[0]} to {allowed[-1]}"
    return "/".join(map(str, allowed))


def slot_line(slot: WidthSlot) -> str:
    """`w4: blocks.2-4.conv2 conv3x3 x3 out channels, now 256; allowed 128/256/384/512`."""
    what = _compress(list(slot.drives)) if slot.drives else "(no layer output)"
    ops = sorted(set(o for o in slot.ops if o))
    if ops:
        what += " " + "/".join(ops)
    if len(slot.drives) > 1:
        what += f" x{len(slot.drives)}"
    return f"{slot.name}: {what} out channels, now {slot.value}; allowed {allowed_text(slot.allowed)}"


def slots_compact(slots) -> str:
    """Current widths and allowed values in two lines, consecutive slots with the same choices
    merged (`w0-w2 64/128/192/256; w3-w6 128/256/384/512`): the summary table already says what
    each slot drives."""
    runs: list[list[WidthSlot]] = []
    for s in slots:
        if runs and runs[-1][-1].allowed == s.allowed:
            runs[-1].append(s)
        else:
            runs.append([s])
    allowed = "; ".join((r[0].name if len(r) == 1 else f"{r[0].name}-{r[-1].name}") + " " + allowed_text(r[0].allowed)
                        for r in runs)
    return f"now {widths_text(s.value for s in slots)}\nallowed: {allowed}"


# -- layer table and summary context ------------------------------------------------------------------

def layer_table(payload: dict) -> dict:
    """Sandbox handler: the conv and linear layers of `payload["source"]` built at `payload["spec"]`,
    in module order: name, type, kernel, stride, groups, in, out. Meta device first, CPU if the
    model does not build there."""
    from mutator.probe import trial

    t = None
    for device in ("meta", "cpu"):
        t = trial(payload["source"], payload["spec"], device)
        if t["table"] is not None:
            break
    if t["table"] is None:
        return {"status": "error", "error": t["error"] or f"does not build ({t['stage']})"}
    rows = []
    for name, row in t["table"].items():
        if "out_channels" in row:
            rows.append({"name": name, "type": row["type"], "kernel": row.get("kernel_size") or [],
                         "stride": row.get("stride") or [], "groups": row.get("groups", 1),
                         "in": row.get("in_channels"), "out": row["out_channels"]})
        elif "out_features" in row:
            rows.append({"name": name, "type": row["type"], "kernel": [], "stride": [], "groups": 1,
                         "in": row.get("in_features"), "out": row["out_features"]})
    return {"status": "ok", "error": None, "layers": rows}


def _slot_of(groups: list[dict]) -> dict[tuple[str, str], str]:
    """(module, "in"|"out") -> slot name, from the groups' driven attributes."""
    where = {}
    for i, g in enumerate(groups):
        for l in g.get("layers", ()):
            m, a = l.rsplit(".", 1)
            if a in ("out_channels", "out_features"):
                where[(m, "out")] = f"w{i}"
            elif a in ("in_channels", "in_features"):
                where.setdefault((m, "in"), f"w{i}")
    return where


def summary_text(layers: list[dict], groups: list[dict]) -> str:
    """The compact context: the conv/linear layers in module order, one line per chain of layers under
    one parent module whose channels follow on (`blocks.2 conv3x3 x2 s2: w0->w3->w4` is blocks.2's two
    3x3 convs, the first with stride 2, taking slot w0's channels to w3, then w3 to w4). A channel
    count that no slot sets is shown as its number (the 3 input channels, the 10 classes)."""
    where = _slot_of(groups)

    def side(l, s):
        return where.get((l["name"], s), str(l[s]))

    chains: list[list[dict]] = []
    for l in layers:
        last = chains[-1][-1] if chains else None
        if last is not None and last["name"].rsplit(".", 1)[0] == l["name"].rsplit(".", 1)[0] \
                and side(last, "out") == side(l, "in"):
            chains[-1].append(l)
        else:
            chains.append([l])
    lines = ["layers, channels in->out (wN: width slot):"]
    for c in chains:
        ops = []
        for l in c:
            s = [x for x in l.get("stride") or [] if x != 1]
            ops.append(op_label(l) + (f" s{s[0]}" if s else ""))
        label = f"{ops[0]} x{len(ops)}" if len(set(ops)) == 1 and len(ops) > 1 else " ".join(ops)
        name = c[0]["name"].rsplit(".", 1)[0] if len(c) > 1 else c[0]["name"]
        lines.append(f"{name} {label}: " + "->".join([side(c[0], "in")] + [side(l, "out") for l in c]))
    return "\n".join(lines)

WIDTHS_SYSTEM = ("You are an expert in neural architecture search. You choose a network's channel "
                 "widths to meet a goal. Answer only with the list of widths.")


def widths_text(widths) -> str:
    return "[" + ", ".join(str(int(w)) for w in widths) + "]"


def widths_messages(slots, row: dict | None = None, goal: dict | None = None, *, source: str | None = None,
                    summary: str | None = None, history=(), notes: str = "",
                    system: str = WIDTHS_SYSTEM) -> list[dict]:
    """System + user message asking for one width per slot (GENIUS-style: the allowed values per
    slot and the configurations tried so far). `history`: (widths, outcome text) pairs, oldest
    first; `source` or `summary` is the context shown (summary wins when both are given)."""
    user = _head(row, goal)
    if summary:
        user += f"{summary}\n"
    elif source:
        user += f"```python\n{source.rstrip()}\n```\n"
    if summary:
        user += slots_compact(slots) + "\n"
    else:
        user += "Width slots:\n" + "\n".join(slot_line(s) for s in slots) + "\n"
    if history:
        user += "Tried:\n" + "\n".join(f"{widths_text(w)} {o}".rstrip() for w, o in history) + "\n"
    user += notes
    user += (f"Answer with {len(slots)} integers [w0, ..., w{len(slots) - 1}], each one of its allowed values"
             + (", not a tried list." if history else "."))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def widths_answer(widths) -> dict:
    return {"role": "assistant", "content": widths_text(widths)}


# -- parsing: widths --------------------------------------------------------------------------------------


_SLOT_PREFIX = re.compile(r"\b(?:w|channels?)\s*\[?\s*\d+\s*\]?\s*[:=]\s*", re.I)
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
_INT_LIST = re.compile(r"^\s*-?\d+(?:\s*(?:[,;]|\s)\s*-?\d+)*\s*,?\s*$")
_RUN = re.compile(r"(?<![\w.])-?\d+(?:[ \t]*(?:[,;][ \t]*|\n[ \t]*)-?\d+)+(?![\w.])")


def _lists(text: str) -> list[list[int]]:
    """Integer lists in order of appearance: bracketed ones, else comma/semicolon/newline runs."""
    text = _SLOT_PREFIX.sub("", text)
    found = [[int(x) for x in re.findall(r"-?\d+", m.group(1))]
             for m in _BRACKETED.finditer(text) if _INT_LIST.match(m.group(1))]
    if not found:
        found = [[int(x) for x in re.findall(r"-?\d+", m.group(0))] for m in _RUN.finditer(text)]
    return [l for l in found if l]


def parse_widths(text: str | None, slots) -> Answer:
    """The widths in an answer: the last list with one allowed value per slot; failures say why
    (no list, wrong count, or which slot has a value outside its allowed set)."""
    text = _CHAT_TOKENS.sub("", text or "")
    lists = _lists(text)
    n = len(slots)
    if not lists:
        return Answer("widths", "no_list", f"no list of integers found in the answer: {_snippet(text)}")
    right = [l for l in lists if len(l) == n]
    valid = [l for l in right if all(w in s.allowed for w, s in zip(l, slots))]
    if valid:
        return Answer("widths", "ok", widths=tuple(valid[-1]))
    if not right:
        l = lists[-1]
        return Answer("widths", "wrong_count", f"{len(l)} widths {widths_text(l)} given, the network has {n} "
                                               f"slots (w0..w{n - 1})")
    l = right[-1]
    bad = [(s, w) for w, s in zip(l, slots) if w not in s.allowed]
    s, w = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return Answer("widths", "not_allowed", f"{s.name} = {w} is not allowed ({allowed_text(s.allowed)}){more}",
                  widths=tuple(l))


# -- grammars ------------------------------------------------------------------------------------------------------


def _excluded(slots, exclude) -> set[tuple[str, ...]]:
    """The tuples of `exclude` that the slots' language contains (others cannot be generated anyway)."""
    vals = [{str(v) for v in s.allowed} for s in slots]
    out = set()
    for t in exclude or ():
        t = tuple(str(int(x)) for x in t)
        if len(t) == len(slots) and all(x in vals[i] for i, x in enumerate(t)):
            out.add(t)
    return out


def _trie(slots, excl: set, free, value, seq, alt, named):
    """The language of width lists minus `excl`, built over the trie of the excluded tuples: at a
    prefix shared with some excluded tuple each value either continues that prefix (a sub-rule) or
    leaves it (the free rest of the list); a complete excluded tuple is left out. Size O(|excl| x
    slots x values). `free(d)`: slots d.. unconstrained; `value`, `seq`, `alt`: the notation's
    literal, concatenation and alternation; `named(body)`: a reference to `body` (a rule or a group).
    None when every completion of the prefix is excluded."""
    n = len(slots)

    def node(prefix: tuple, d: int):
        alts, leave = [], []
        for v in (str(x) for x in slots[d].allowed):
            p2 = prefix + (v,)
            if not any(t[:d + 1] == p2 for t in excl):
                leave.append(v)
            elif d + 1 < n:
                child = node(p2, d + 1)
                if child is not None:
                    alts.append(seq([value(v, d), child]))
        if leave:
            alts.append(seq([alt([value(v, d) for v in leave])] + ([free(d + 1)] if d + 1 < n else [])))
        return named(alt(alts)) if alts else None

    return node((), 0)


def widths_gbnf(slots, exclude=()) -> str:
    """GBNF (llama.cpp, xgrammar): `[v0, v1, ...]` with exactly one allowed value per slot; with
    `exclude` (width lists already tried), every list but those: the model cannot repeat itself. When
    `exclude` covers the whole space, the plain grammar."""
    rules = ["root ::= \"[\" " + " \", \" ".join(s.name for s in slots) + " \"]\""]
    for s in slots:
        rules.append(f"{s.name} ::= " + " | ".join(_gbnf_str(str(v)) for v in s.allowed))
    excl = _excluded(slots, exclude)
    if not excl:
        return "\n".join(rules) + "\n"
    extra: list[str] = []

    def named(body: str) -> str:
        extra.append(f"t{len(extra)} ::= {body}")
        return f"t{len(extra) - 1}"

    def value(v: str, d: int) -> str:
        return _gbnf_str(v if d == 0 else f", {v}")

    def free(d: int) -> str:
        return " ".join(f"\", \" {s.name}" for s in slots[d:])

    top = _trie(slots, excl, free, value, lambda xs: " ".join(xs),
                lambda xs: xs[0] if len(xs) == 1 else "(" + " | ".join(xs) + ")", named)
    if top is None:
        return "\n".join(rules) + "\n"
    rules[0] = f"root ::= \"[\" {top} \"]\""
    return "\n".join(rules + extra) + "\n"


def widths_regex(slots, exclude=()) -> str:
    """The same language as a regular expression (vLLM `structured_outputs.regex`), `exclude` too."""
    import re

    def any_of(d: int) -> str:
        return "(" + "|".join(str(v) for v in slots[d].allowed) + ")"

    plain = r"\[" + ", ".join(any_of(d) for d in range(len(slots))) + r"\]"
    excl = _excluded(slots, exclude)
    if not excl:
        return plain
    top = _trie(slots, excl, lambda d: "".join(", " + any_of(i) for i in range(d, len(slots))),
                lambda v, d: re.escape(v if d == 0 else f", {v}"), "".join,
                lambda xs: xs[0] if len(xs) == 1 else "(" + "|".join(xs) + ")", lambda body: body)
    return plain if top is None else r"\[" + top + r"\]"


def widths_schema(slots) -> dict:
    """The same as a JSON schema (Ollama `format` / `response_format`): a fixed-length array."""
    return {"type": "array", "prefixItems": [{"enum": list(s.allowed)} for s in slots], "items": False,
            "minItems": len(slots), "maxItems": len(slots)}


class WidthsFormat(AnswerFormat):
    name = "widths"
    contexts = ("source", "summary")
    needs_network = True
    shows_history = True
    repairable = False  # the mutator realises the candidate: its channels already agree
    constrainable = True
    gives_widths = True

    def messages(self, source, row, goal, *, context="source", slots=None, summary=None, history=(), notes=""):
        """`widths_messages` with the network's width slots and, for `context="summary"`, the per-layer
        table (`summary_text`) instead of the source."""
        if slots is None:
            raise ValueError("the widths format needs the network's width slots")
        if context == "summary" and summary is None:
            raise ValueError("--context summary needs the network's summary table")
        return widths_messages(slots, row, goal, source=None if context == "summary" else source,
                               summary=summary if context == "summary" else None, history=history, notes=notes)

    def search_messages(self, parent_code, parent_row, goal, instruction, memory, extra="", info=None,
                        context="source"):
        """The tried widths and their outcomes as a GENIUS-style history; the summary where asked and built."""
        history = [(t.widths, t.outcome) for t in memory.items if t.widths]
        context = context if info.get("summary") else "source"
        return self.messages(parent_code, parent_row, goal, context=context, slots=info["slots"],
                             summary=info.get("summary"), history=history,
                             notes=f"{extra}Suggested change: {instruction}\n")

    def target(self, src, tgt, net=None, tried=()):
        from finetune.prompts import outcome_text

        if net is None or not net.ok:
            return None, {}, f"source {net.status if net else 'not analysed'}"
        slots = net.slots
        want = [int(w) for w in tgt.get("widths") or ()]
        if len(want) != len(slots):
            return None, {}, "target widths do not match the source's slots"
        if any(w not in s.allowed for w, s in zip(want, slots)):
            return None, {}, "target width not allowed"
        if any(len(r.get("widths") or ()) != len(slots) for r in tried):
            return None, {}, "tried widths do not match the source's slots"
        history = [(tuple(int(w) for w in r["widths"]), outcome_text(r, src)) for r in tried]
        return widths_answer(want), {"slots": slots, "summary": net.summary, "history": history}, None

    def parse(self, text, *, slots=None, parent=None):
        if slots is None:
            raise ValueError("the widths format needs slots")
        return parse_widths(text, slots)

    def eval_candidate(self, text, parent, net=None, realize=None):
        if net is None or not net.ok:
            return None, "no_slots", f"the source network has no width slots ({net.status if net else 'not analysed'})"
        ans = self.parse(text, slots=net.slots)
        if not ans.ok:
            return None, ans.status, ans.error
        v = realize(list(ans.widths))
        return (v.source, "ok", None) if v.ok else (None, f"realize_{v.status}", v.error)

    def search_candidate(self, raw, parent, info, realize=None):
        ans = self.parse(raw, slots=info.get("slots"))
        if not ans.ok:
            return {"code": None, "status": "parse_error", "parse_status": ans.status, "error": f"{ans.status}: {ans.error}"}
        widths = list(ans.widths)
        v = realize(widths)
        if not v.ok:
            return {"code": None, "status": v.status, "parse_status": "ok", "widths": widths,
                    "error": f"widths {widths} do not build: {v.error}"}
        return {"code": v.source, "parse_status": "ok", "widths": widths}

    def check_grammar_args(self, slots=None, parent=None):
        if slots is None:
            raise ValueError("the widths grammar needs the width slots")

    def constraint_args(self, parent, info, exclude=None):
        """The tried width lists and the parent's own, left out (None: the plain grammar)."""
        tried = () if exclude is None else set(exclude) | {tuple(s.value for s in info["slots"])}
        return {"slots": info["slots"], "exclude": tried}

    def grammar(self, slots=None, exclude=(), parent=None, max_blocks=4):
        return widths_gbnf(slots, exclude)

    def regex(self, slots=None, exclude=()):
        return widths_regex(slots, exclude)

    def json_schema(self, slots=None):
        return widths_schema(slots)

    def token_budget(self, prompt_tokens, slots=0):
        """8 tokens a slot + 16: a list of numbers."""
        return 8 * slots + 16


register_format(WidthsFormat())
