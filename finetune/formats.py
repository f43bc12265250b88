"""Answer formats: what the LLM is asked to write, and turning its answer into a candidate.

    python -c "from finetune.formats import demo; demo()"     # cbm-resnet widths prompt + summary, printed

    from finetune.formats import width_slots, widths_messages, parse_answer, widths_gbnf
    slots = width_slots(analysis.groups, choices=SPACES["cbm-resnet"]["choices"], layers=layers)
    msgs = widths_messages(slots, row, goal, summary=summary_text(layers, slots), history=tried)
    ans = parse_answer("widths", llm_text, slots=slots)     # Answer: ok + widths, or a failure + reason
    ans = parse_answer("diff", llm_text, parent=source)     # ok + the edited source
    ans = parse_answer("code", llm_text)                    # ok + the complete source

Three formats, one result record (`Answer`, never an exception for bad LLM output):
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

import ast
import json
import re
from dataclasses import dataclass, field

from finetune.prompts import build_messages, extract_code, goal_text, telemetry_text

FORMATS = ("widths", "diff", "code")
QUOTE_CHARS = 160  # how much of an unmatched SEARCH text a failure quotes


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


# -- prompts --------------------------------------------------------------------------------------------

WIDTHS_SYSTEM = ("You are an expert in neural architecture search. You choose a network's channel "
                 "widths to meet a goal. Answer only with the list of widths.")

DIFF_SYSTEM = ("You are an expert in neural architecture design. You edit the source code of PyTorch "
               "networks so that they meet a goal. Answer only with SEARCH/REPLACE blocks.")

DIFF_FORMAT = ("Answer with one or more blocks in this exact format; each SEARCH part must copy lines of "
               "the current source exactly:\n"
               "<<<<<<< SEARCH\n        self.conv1 = nn.Conv2d(3, 16, 3)\n=======\n"
               "        self.conv1 = nn.Conv2d(3, 24, 3)\n>>>>>>> REPLACE")


def _head(row: dict | None, goal: dict | None) -> str:
    out = ""
    if row:
        where = f" on {row['dataset']}" if row.get("dataset") else ""
        out += f"Network, measured{where}: {telemetry_text(row)}.\n"
    if goal:
        out += f"Goal: {goal_text(goal)}\n"
    return out


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


def diff_messages(source: str, row: dict | None = None, goal: dict | None = None, notes: str = "",
                  system: str = DIFF_SYSTEM) -> list[dict]:
    """System + user message asking for SEARCH/REPLACE blocks against `source`."""
    user = (_head(row, goal) + f"\n```python\n{source.rstrip()}\n```\n\n{notes}{DIFF_FORMAT}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def diff_text(blocks) -> str:
    """Blocks [(search, replace), ...] in the answer format (for training answers and tests)."""
    return "\n".join(f"<<<<<<< SEARCH\n{s.rstrip(chr(10))}\n=======\n{r.rstrip(chr(10))}\n>>>>>>> REPLACE"
                     for s, r in blocks)


# -- parsing: widths --------------------------------------------------------------------------------------

_CHAT_TOKENS = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end|assistant)\|>|</s>")
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


def _snippet(text: str, n: int = 80) -> str:
    t = " ".join((text or "").split())
    return repr(t[:n] + ("..." if len(t) > n else ""))


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


# -- parsing: diff --------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[^\n]*\n(.*?)^[ \t]*={5,9}[ \t]*\n(.*?)^[ \t]*>{5,9}[ \t]*REPLACE[^\n]*$",
                    re.M | re.S)
_SEARCH_MARK = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH", re.M)
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})[\w+#.-]*[ \t]*$")


def _strip_fences(part: str) -> str:
    lines = part.split("\n")
    while lines and _FENCE_LINE.match(lines[0]):
        lines.pop(0)
    while lines and (not lines[-1].strip() or _FENCE_LINE.match(lines[-1])):
        lines.pop()
    return "\n".join(lines)


def parse_diff_blocks(text: str | None) -> tuple[list[tuple[str, str]], int]:
    """[(search, replace), ...] in order, and the number of SEARCH markers seen (more markers than
    blocks means a block was never closed). Fence lines just inside a block are dropped."""
    text = _CHAT_TOKENS.sub("", (text or "").replace("\r\n", "\n"))
    blocks = [(_strip_fences(m.group(1)), _strip_fences(m.group(2))) for m in _BLOCK.finditer(text)]
    return blocks, len(_SEARCH_MARK.findall(text))


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _find_exact(lines: list[str], search: list[str]) -> int | None:
    n = len(search)
    for i in range(len(lines) - n + 1):
        if lines[i:i + n] == search:
            return i
    return None


def _find_loose(lines: list[str], search: list[str]) -> tuple[int, int] | None:
    """(start, end) of the first run of `lines` whose non-blank lines equal the non-blank `search`
    lines, each compared without leading/trailing white space."""
    want = [l.strip() for l in search if l.strip()]
    have = [(i, l.strip()) for i, l in enumerate(lines) if l.strip()]
    n = len(want)
    if not n:
        return None
    for j in range(len(have) - n + 1):
        if all(have[j + k][1] == want[k] for k in range(n)):
            return have[j][0], have[j + n - 1][0] + 1
    return None


def _reindent(replace: list[str], search: list[str], matched: list[str]) -> list[str]:
    first_s = next((l for l in search if l.strip()), "")
    first_m = next((l for l in matched if l.strip()), "")
    s_ind, m_ind = _indent(first_s), _indent(first_m)
    if s_ind == m_ind:
        return replace
    out = []
    for l in replace:
        if not l.strip():
            out.append("")
        elif l.startswith(s_ind):
            out.append(m_ind + l[len(s_ind):])
        else:
            out.append(m_ind + l.lstrip())
    return out


def apply_diff(parent: str, text: str | None) -> Answer:
    """Apply every SEARCH/REPLACE block of `text` to `parent`, in order (each against the result of
    the previous ones). A block whose SEARCH text matches nothing fails the answer, quoted."""
    blocks, marks = parse_diff_blocks(text)
    if marks > len(blocks):
        return Answer("diff", "unclosed", f"{marks} SEARCH marker(s) but {len(blocks)} complete block(s): a "
                                          "block lacks its '=======' or '>>>>>>> REPLACE' line")
    if not blocks:
        hint = " (the answer holds a full source instead)" if extract_code(text) else ""
        return Answer("diff", "no_blocks", "no <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block found" + hint)
    trailing_nl = parent.endswith("\n")
    lines = parent.rstrip("\n").split("\n")
    fuzzy = 0
    for k, (search, replace) in enumerate(blocks, 1):
        s_lines, r_lines = search.split("\n"), replace.split("\n") if replace else []
        if not search.strip():
            return Answer("diff", "empty_search", f"block {k} of {len(blocks)} has an empty SEARCH part")
        i = _find_exact(lines, s_lines)
        if i is not None:
            lines[i:i + len(s_lines)] = r_lines
            continue
        span = _find_loose(lines, s_lines)
        if span is None:
            quoted = search if len(search) <= QUOTE_CHARS else search[:QUOTE_CHARS] + "..."
            return Answer("diff", "unmatched", f"block {k} of {len(blocks)}: SEARCH text not found in the "
                                               f"parent: {quoted!r}", edits=k - 1, fuzzy=fuzzy)
        a, b = span
        lines[a:b] = _reindent(r_lines, s_lines, lines[a:b])
        fuzzy += 1
    code = "\n".join(lines) + ("\n" if trailing_nl else "")
    if code == parent:
        return Answer("diff", "no_change", "the blocks change nothing (every REPLACE equals its SEARCH)",
                      edits=len(blocks), fuzzy=fuzzy)
    try:
        parse_quietly(code)
    except (SyntaxError, ValueError) as exc:
        where = f"line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
        return Answer("diff", "syntax_error", f"the edited source does not parse: {where}{exc.msg if hasattr(exc, 'msg') else exc}",
                      code=code, edits=len(blocks), fuzzy=fuzzy)
    return Answer("diff", "ok", code=code, edits=len(blocks), fuzzy=fuzzy)


# -- parsing: code and dispatch ---------------------------------------------------------------------------------

def parse_code(text: str | None) -> Answer:
    code = extract_code(text)
    if code is None:
        return Answer("code", "no_code", f"no Python source found in the answer: {_snippet(text or '')}")
    return Answer("code", "ok", code=code)


def parse_answer(fmt: str, text: str | None, *, slots=None, parent: str | None = None) -> Answer:
    """One entry point: `widths` needs `slots`, `diff` needs `parent`."""
    if fmt == "widths":
        if slots is None:
            raise ValueError("the widths format needs slots")
        return parse_widths(text, slots)
    if fmt == "diff":
        if parent is None:
            raise ValueError("the diff format needs the parent source")
        return apply_diff(parent, text)
    if fmt == "code":
        return parse_code(text)
    raise ValueError(f"unknown answer format {fmt!r} (known: {', '.join(FORMATS)})")


# -- grammars ------------------------------------------------------------------------------------------------------

def _gbnf_str(s: str) -> str:
    return json.dumps(s)


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


def parse_quietly(code: str):
    """ast.parse without the SyntaxWarnings an LLM's text triggers (`invalid decimal literal`) on stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(code)


def _statement_lines(source: str) -> set[int] | None:
    """0-based indices of the lines that hold one whole simple statement (`self.fc = nn.Linear(84, 10)`,
    `WIDTHS = [...]`, `return x`): the lines a one-line SEARCH part can replace without cutting a
    bracket, a string or a block header in two. None when the source does not parse."""
    try:
        tree = parse_quietly(source)
    except (SyntaxError, ValueError, RecursionError):
        return None
    return {n.lineno - 1 for n in ast.walk(tree) if isinstance(n, ast.stmt) and n.lineno == n.end_lineno
            and not hasattr(n, "body")}


def diff_gbnf(max_blocks: int = 4, parent: str | None = None, max_replace_lines: int = 4,
              max_line_chars: int = 120) -> str:
    """GBNF for the diff envelope: 1..max_blocks SEARCH/REPLACE blocks, nothing before or after. A
    SEARCH part has at least one line; no line of a part may start with '<', '=' or '>' (the
    markers), which Python source never does at column 0.

    With `parent` (the source the blocks apply to), a SEARCH part is exactly one line of the parent,
    verbatim, that occurs there once (so it always matches, in one place) and holds one whole simple
    statement (never half a bracket, a docstring line or a block header), and a REPLACE
    part is empty or has at most `max_replace_lines` lines of at most `max_line_chars` characters,
    the first at the SEARCH line's indentation and the others no less indented: a small model can no
    longer misquote the text it replaces, break the indentation or ramble until the token limit. One-line SEARCH
    parts lose nothing: a longer edit is several blocks, an insertion replaces its anchor line by
    the anchor and the new lines. (Several lines of the parent in one SEARCH part were tried first:
    SmolLM2-135M then chained lines that are not contiguous, which never match.)"""
    more = " ".join(["(\"\\n\" block)?"] * (max(1, max_blocks) - 1))
    root = f"root ::= block {more}\n".replace("  ", " ")
    if parent is None:
        return (root + "block ::= \"<<<<<<< SEARCH\\n\" line+ \"=======\\n\" line* \">>>>>>> REPLACE\"\n"
                "line ::= [^<=>\\n] [^\\n]* \"\\n\" | \"\\n\"\n")
    lines = parent.splitlines()
    anchors = _statement_lines(parent)
    by_indent: dict[str, list[str]] = {}
    for i, ln in enumerate(lines):
        if ln.strip() and ln[0] not in "<=>" and lines.count(ln) == 1 and (anchors is None or i in anchors):
            by_indent.setdefault(ln[:len(ln) - len(ln.lstrip())], []).append(_gbnf_str(ln + "\n"))
    if not by_indent:
        return diff_gbnf(max_blocks)
    n = max_line_chars
    alts, rules = [], []
    for k, (ind, olds) in enumerate(sorted(by_indent.items())):
        # the first REPLACE line starts at the anchor's indentation, later ones at least there: a
        # replacement cannot change the block structure around it by accident (`unexpected indent`)
        first = f"{_gbnf_str(ind)} [^ \\t\\n<=>] [^\\n]{{0,{n}}} \"\\n\"" if ind else \
            f"[^ \\t\\n<=>] [^\\n]{{0,{n}}} \"\\n\""
        more = f"{_gbnf_str(ind)} [^\\n]{{0,{n}}} \"\\n\"" if ind else f"[^<=>\\n] [^\\n]{{0,{n}}} \"\\n\""
        rules.append(f"old{k} ::= {' | '.join(olds)}")
        rules.append(f"new{k} ::= {first} ({more} | \"\\n\"){{0,{max(0, max_replace_lines - 1)}}}")
        alts.append(f"old{k} \"=======\\n\" new{k}?")
    return (root + "block ::= \"<<<<<<< SEARCH\\n\" (" + " | ".join(alts) + ") \">>>>>>> REPLACE\"\n"
            + "\n".join(rules) + "\n")


def grammar_for(fmt: str, slots=None, exclude=()) -> str | None:
    """The GBNF grammar of a format (None for `code`: a whole file is not constrained)."""
    if fmt == "widths":
        return widths_gbnf(slots, exclude)
    if fmt == "diff":
        return diff_gbnf()
    return None


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


# -- one prompt per (format, context) ----------------------------------------------------------------

CONTEXTS = ("source", "summary")


def check_format(fmt: str, context: str) -> None:
    """ValueError for an unknown format or context, or `summary` with a format that edits the source."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r} (known: {', '.join(FORMATS)})")
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r} (known: {', '.join(CONTEXTS)})")
    if context == "summary" and fmt != "widths":
        raise ValueError(f"--context summary needs --answer-format widths (a {fmt} answer edits the source, "
                         "so the prompt must show it)")


def prompt_messages(fmt: str, context: str, source: str, row: dict, goal: dict, *, slots=None,
                    summary: str | None = None, history=(), notes: str = "") -> list[dict]:
    """THE prompt for (source network, goal, answer format, context): system + user message. Pure.

    `code`: `prompts.build_messages` (the full source, the whole file back); `diff`: `diff_messages`
    (the full source, SEARCH/REPLACE blocks back); `widths`: `widths_messages` with the
    network's width slots (`width_slots`) and, for `context="summary"`, the per-layer table
    (`summary_text`) instead of the source. `history` and `notes` are the search loop's
    (tried widths, feedback); training pairs have neither."""
    check_format(fmt, context)
    if fmt == "code":
        return build_messages(source, row, goal)
    if fmt == "diff":
        return diff_messages(source, row, goal, notes=notes)
    if slots is None:
        raise ValueError("the widths format needs the network's width slots")
    if context == "summary" and summary is None:
        raise ValueError("--context summary needs the network's summary table")
    return widths_messages(slots, row, goal, source=None if context == "summary" else source,
                           summary=summary if context == "summary" else None, history=history, notes=notes)
