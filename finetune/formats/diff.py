"""The `diff` answer format: OpenEvolve-style SEARCH/REPLACE blocks against the parent source.

    from finetune.formats.diff import diff_messages, apply_diff, diff_gbnf
    ans = apply_diff(parent, llm_text)       # Answer: ok + the edited source, or a failure + reason

`<<<<<<< SEARCH` / `=======` / `>>>>>>> REPLACE` blocks, applied in order. Each SEARCH text must
match: exactly first (its first occurrence), else line by line ignoring indentation, trailing
spaces and blank lines (the replacement is re-indented to the matched place). A block that matches
nothing fails the whole answer, quoting its SEARCH text.

`diff_gbnf()` admits one to `max_blocks` well-formed blocks and nothing else; `diff_gbnf(parent=src)`
also makes every SEARCH line a verbatim line of the parent and bounds the REPLACE part.
"""
from __future__ import annotations

import ast
import difflib
import re

from finetune.formats.base import (_CHAT_TOKENS, QUOTE_CHARS, Answer, AnswerFormat, _gbnf_str, _head,
                                   parse_quietly, register_format)
from finetune.prompts import extract_code

DIFF_SYSTEM = ("You are an expert in neural architecture design. You edit the source code of PyTorch "
               "networks so that they meet a goal. Answer only with SEARCH/REPLACE blocks.")

DIFF_FORMAT = ("Answer with one or more blocks in this exact format; each SEARCH part must copy lines of "
               "the current source exactly:\n"
               "<<<<<<< SEARCH\n        self.conv1 = nn.Conv2d(3, 16, 3)\n=======\n"
               "        self.conv1 = nn.Conv2d(3, 24, 3)\n>>>>>>> REPLACE")


def diff_messages(source: str, row: dict | None = None, goal: dict | None = None, notes: str = "",
                  system: str = DIFF_SYSTEM) -> list[dict]:
    """System + user message asking for SEARCH/REPLACE blocks against `source`."""
    user = (_head(row, goal) + f"\n```python\n{source.rstrip()}\n```\n\n{notes}{DIFF_FORMAT}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def diff_text(blocks) -> str:
    """Blocks [(search, replace), ...] in the answer format (for training answers and tests)."""
    return "\n".join(f"<<<<<<< SEARCH\n{s.rstrip(chr(10))}\n=======\n{r.rstrip(chr(10))}\n>>>>>>> REPLACE"
                     for s, r in blocks)

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


def diff_blocks(source: str, target: str) -> list[tuple[str, str]]:
    """Minimal SEARCH/REPLACE blocks turning `source` into `target`, in order: each changed run of
    lines, plus the fewest neighbouring lines (below first, then above) that make its SEARCH text
    occur exactly once in the text it is applied to (earlier blocks already applied) and keep it
    from starting or ending on a blank line (trailing blank lines of a part do not survive
    `formats.diff_text` and parsing); a run whose context would reach the next change is merged
    with it."""
    a, b = source.rstrip("\n").split("\n"), target.rstrip("\n").split("\n")
    hunks = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in
             difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if tag != "equal"]
    blocks, cur, shift, k = [], list(a), 0, 0  # cur: `a` with the blocks so far applied

    def unique(lines):
        n = len(lines)
        return sum(cur[i:i + n] == lines for i in range(len(cur) - n + 1)) == 1

    while k < len(hunks):
        i1, i2, j1, j2 = hunks[k]
        k += 1
        p, up, down = i1 + shift, 0, 0  # p: where the change starts in cur
        while True:
            search = cur[p - up:p] + a[i1:i2 + down]
            replace = cur[p - up:p] + b[j1:j2] + a[i2:i2 + down]
            fine = any(l.strip() for l in search) and unique(search)
            ends = bool(search) and bool(search[-1].strip()) and (not replace or bool(replace[-1].strip()))
            if fine and ends and search[0].strip():
                break
            go_up = fine and ends  # only the first line is blank: look above
            if k < len(hunks) and i2 + down == hunks[k][0] and not go_up:  # the next change: merge it
                i2, j2, down = hunks[k][1], hunks[k][3], 0
                k += 1
            elif i2 + down < len(a) and not go_up:
                down += 1
            elif p - up > 0:
                up += 1
            elif i2 + down < len(a):
                down += 1
            else:
                break
        search = cur[p - up:p] + a[i1:i2 + down]
        replace = cur[p - up:p] + b[j1:j2] + a[i2:i2 + down]
        blocks.append(("\n".join(search), "\n".join(replace)))
        cur[p - up:p + (i2 - i1) + down] = replace
        shift += (j2 - j1) - (i2 - i1)
    return blocks

class DiffFormat(AnswerFormat):
    name = "diff"
    constrainable = True

    def messages(self, source, row, goal, *, context="source", slots=None, summary=None, history=(), notes=""):
        return diff_messages(source, row, goal, notes=notes)

    def target(self, src, tgt, net=None, tried=()):
        text = diff_text(diff_blocks(src["code"], tgt["code"]))
        back = apply_diff(src["code"], text)
        if not back.ok or back.code != tgt["code"]:
            return None, {}, "diff does not apply back to the target"
        return {"role": "assistant", "content": text}, {}, None

    def parse(self, text, *, slots=None, parent=None):
        if parent is None:
            raise ValueError("the diff format needs the parent source")
        return apply_diff(parent, text)

    def search_candidate(self, raw, parent, info, realize=None):
        ans = self.parse(raw, parent=parent)
        if not ans.ok:
            return {"code": None, "status": "parse_error", "parse_status": ans.status, "error": f"{ans.status}: {ans.error}"}
        return {"code": ans.code, "parse_status": "ok", "edits": ans.edits, "fuzzy": ans.fuzzy}

    def constraint_args(self, parent, info, exclude=None):
        return {"parent": parent}  # SEARCH lines quoted from the parent

    def grammar(self, slots=None, exclude=(), parent=None, max_blocks=4):
        return diff_gbnf(max_blocks, parent)

    def token_budget(self, prompt_tokens, slots=0):
        """Half the prompt's tokens + 128, at most 1024: the blocks are a part of the source."""
        return min(1024, prompt_tokens // 2 + 128)


register_format(DiffFormat())
