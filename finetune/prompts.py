"""THE prompt templates: what a tuned model sees in training and what `search` must show it at inference.

    from finetune.prompts import build_messages, extract_code, goal_met
    msgs = build_messages(source, row, {"kind": "cut_flops", "fraction": 0.3, "max_acc_drop": 0.01})
    code = extract_code(llm_answer)            # source that ast.parse accepts, or None

A prompt is two chat messages: the system message, and a user message with the network's measured
telemetry, one goal and the full source. The answer is the complete improved source in one
```python block (`answer_message`). Change a word here and every adapter trained before the change
sees a prompt it was not trained on: keep the templates stable.

Units, everywhere: accuracy is a fraction in [0, 1] (shown in percent, 2 decimals); FLOPs count one
fused multiply-add as one flop for one sample's forward pass (shown in MFLOPs); latency is the
median batch-1 forward time in milliseconds; accuracy drops are absolute fractions (0.01 = one
percentage point).

Goals (dicts, stored as JSON beside every training pair):
- {"kind": "raise_accuracy"}: accuracy strictly higher.
- {"kind": "accuracy_under_flops", "max_flops": F}: accuracy strictly higher and FLOPs <= F.
- {"kind": "cut_flops", "fraction": f, "max_acc_drop": d}: FLOPs <= (1 - f) x before, accuracy >= before - d.
- {"kind": "cut_latency", "fraction": f, "max_acc_drop": d}: the same with batch-1 latency.
"""
from __future__ import annotations

import ast
import re
import textwrap

from mutator.results import clean_text, finite

SYSTEM = ("You are an expert in neural architecture design. You edit the source code of PyTorch "
          "networks so that they meet a goal measured on a fixed training recipe. Keep the file's "
          "interface (class names, constructor arguments, helper functions) unchanged. Answer with "
          "the complete modified source file in one ```python code block.")

GOAL_KINDS = ("raise_accuracy", "accuracy_under_flops", "cut_flops", "cut_latency")
_EPS = 1e-9  # float slack in the goal checks: a bound derived from a value must accept that value


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _mflops(flops: float) -> str:
    return f"{flops / 1e6:.4g} MFLOPs"


def telemetry_text(row: dict) -> str:
    """One line of measured numbers: 'accuracy 84.12%, 0.2871 MFLOPs, 44,426 parameters, latency 0.310 ms'.
    A value that is not a finite number (a row stored before results were validated) is "unknown"."""
    acc, flops, params, lat = (finite(row.get(k)) for k in ("accuracy", "flops", "params", "latency_ms"))
    acc = _pct(acc) if acc is not None else "unknown"
    flops = _mflops(flops) if flops is not None else "unknown MFLOPs"
    params = f"{int(params):,}" if params is not None else "unknown"
    lat = f"{lat:.3f} ms" if lat is not None else "unknown"
    return f"accuracy {acc}, {flops}, {params} parameters, latency {lat} (batch 1)"


def outcome_text(row: dict, parent: dict | None) -> str:
    """Short outcome of a candidate, for the search's memory and a training prompt's tried list: metrics
    and change vs its parent (the best so far, or in Pareto mode the archive member it was asked to
    change), or the failure: its status and the first line of its error, cut to 160 characters, one
    line of valid UTF-8 whatever the candidate wrote (`mutator.results.clean_text`)."""
    if row.get("status") != "ok":
        err = row.get("error")
        err = clean_text(err.strip().splitlines()[0] if isinstance(err, str) and err.strip() else err, 160)
        return f"FAILED {clean_text(row.get('status'), 40)}: {err}".strip()
    text = telemetry_text(row)
    if parent and finite(parent.get("accuracy")) is not None and finite(row.get("accuracy")) is not None:
        text += f"; {100 * (row['accuracy'] - parent['accuracy']):+.2f} points vs the network it started from"
    return text


def _drop(d: float) -> str:
    return "without losing accuracy" if d <= 0 else f"losing at most {100 * d:.2f} accuracy points"


def goal_text(goal: dict) -> str:
    kind = goal.get("kind")
    if kind == "raise_accuracy":
        return "Raise the accuracy."
    if kind == "accuracy_under_flops":
        return f"Raise the accuracy while keeping the cost at most {goal['max_flops'] / 1e6:g} MFLOPs."
    if kind == "cut_flops":
        return f"Cut the FLOPs by at least {100 * goal['fraction']:.0f}%, {_drop(goal['max_acc_drop'])}."
    if kind == "cut_latency":
        return f"Cut the latency by at least {100 * goal['fraction']:.0f}%, {_drop(goal['max_acc_drop'])}."
    raise ValueError(f"unknown goal kind {kind!r} (known: {', '.join(GOAL_KINDS)})")


def goal_met(goal: dict, before: dict, after: dict) -> bool:
    """True when `after` (a profiled row) meets `goal` relative to `before`; False for a failed row."""
    if after.get("status", "ok") != "ok" or after.get("accuracy") is None:
        return False
    kind = goal.get("kind")
    acc0, acc1 = before["accuracy"], after["accuracy"]
    if kind == "raise_accuracy":
        return acc1 > acc0
    if kind == "accuracy_under_flops":
        return acc1 > acc0 and after["flops"] <= goal["max_flops"]
    if kind in ("cut_flops", "cut_latency"):
        key = "flops" if kind == "cut_flops" else "latency_ms"
        if after.get(key) is None:
            return False
        return (after[key] <= (1 - goal["fraction"]) * before[key] * (1 + _EPS)
                and acc1 >= acc0 - goal["max_acc_drop"] - _EPS)
    raise ValueError(f"unknown goal kind {kind!r} (known: {', '.join(GOAL_KINDS)})")


def build_messages(source: str, row: dict, goal: dict, system: str = SYSTEM) -> list[dict]:
    """System + user message asking for `goal` on `source`, whose measurements are `row`."""
    where = f" on {row['dataset']}" if row.get("dataset") else ""
    user = (f"Network, measured{where}: {telemetry_text(row)}.\n"
            f"Goal: {goal_text(goal)}\n\n"
            f"```python\n{source.rstrip()}\n```\n\n"
            "Answer with the complete modified source in one ```python block.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_message(child_source: str) -> dict:
    return {"role": "assistant", "content": f"```python\n{child_source.rstrip()}\n```"}


# -- extracting code from an answer -----------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*$", re.M)
_CHAT_TOKENS = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end|assistant)\|>|</s>")
_CODE_START = re.compile(r"^(?:import |from \S+ import |class |def |async def |@|\"\"\"|'''|#)")
_PY_TAGS = {"", "python", "py", "python3", "pytorch", "torch"}


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _defines(tree: ast.Module) -> bool:
    return any(isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body)


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of each fenced block; an unterminated last fence runs to the end."""
    blocks = []
    marks = list(_FENCE.finditer(text))
    i = 0
    while i < len(marks):
        m = marks[i]
        fence, tag = m.group(1), m.group(2).lower()
        close = next((j for j in range(i + 1, len(marks))
                      if marks[j].group(1)[0] == fence[0] and len(marks[j].group(1)) >= len(fence)
                      and not marks[j].group(2)), None)
        end = marks[close].start() if close is not None else len(text)
        blocks.append((tag, text[m.end():end]))
        i = close + 1 if close is not None else len(marks)
    return blocks


def _segments(text: str) -> list[str]:
    """Everything between two fence lines, and after the last: for answers whose fences do not pair
    up (an opening fence used to close a block, a block that was never closed)."""
    marks = list(_FENCE.finditer(text))
    bounds = [m.end() for m in marks]
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [text[b:e] for b, e in zip(bounds, ends)]


def _trim_to_code(text: str) -> str | None:
    """Raw answer without usable fences: drop prose lines before a code-looking line and after the
    last line that keeps the rest parseable; the result must define a class or function."""
    lines = text.splitlines()
    starts = [i for i, l in enumerate(lines) if _CODE_START.match(l)][:5] or [0]
    for s in starts:
        for e in range(len(lines), max(s, len(lines) - 80), -1):
            code = "\n".join(lines[s:e]).strip("\n")
            tree = _parses(code)
            if tree is not None and _defines(tree):
                return code
    return None


def _pick(bodies, need_def: bool = False) -> str | None:
    good, plain = [], []
    for body in bodies:
        body = textwrap.dedent(body).strip("\n")
        tree = _parses(body) if body.strip() else None
        if tree is not None:
            (good if _defines(tree) else plain).append(body)
    if need_def:
        plain = []
    return max(good or plain, key=len) if good or plain else None


def extract_code(text: str | None) -> str | None:
    """The Python source in an LLM answer, or None.

    Fenced blocks first (``` or ~~~; untagged or tagged python; an unterminated last fence runs to
    the end): among those that parse, the longest that defines a class or function, else the
    longest that parses. Fences that do not pair up are cut at every fence line instead. Without
    a usable block: the raw text, with prose before and after trimmed, if it defines a class or
    function. Chat control tokens (`<|im_end|>` ...) are removed first. The result always
    satisfies `ast.parse`.
    """
    if not text:
        return None
    text = _CHAT_TOKENS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    code = _pick(body for tag, body in _fenced_blocks(text) if tag in _PY_TAGS)
    if code is None or not _defines(ast.parse(code)):
        code = _pick(_segments(text), need_def=True) or code
    if code is None:
        code = _trim_to_code(textwrap.dedent(text))
    return code + "\n" if code else None
