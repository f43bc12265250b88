"""Results are data the parent checks: every sandboxed answer is decoded and validated at the boundary.

    result = decode_frame(raw)               # one JSON object, or FrameError saying why not (never RecursionError)
    result = checked(result, check)          # what `WorkerPool.call` returns: its check, or that candidate's failure
    row = validate_row(row)                  # an evaluation row that fits ROW_SCHEMA, or its failed row
    text = clean_text(anything, 160)         # one line of valid UTF-8, at most 160 characters

A candidate may write its own answer frame (the measuring code runs in its process): it can lie about
its own metrics, and nothing here can tell. What it must not do is reach beyond its own row: crash the
fork server or the parent, break a writer downstream (SQLite, Arrow, a prompt, report.md), or poison the
rest of a run with a number no measurement gives (an accuracy of 1e999 that stays the best). So:

- a frame is one JSON object at most MAX_DEPTH deep, without duplicate keys and without non-finite
  numbers (NaN, Infinity, 1e999): `FrameError`, status `invalid_result`. Bytes that are not one JSON
  document at all (two frames in one pipe) are `FrameError(malformed=True)`: the sandbox's `crash`.
- every result (any handler): strings valid UTF-8 (lone surrogates become U+FFFD), `status` absent or a
  short identifier, `error` absent, None or text, made one line and cut to MAX_ERROR characters.
- besides, the check each handler is registered with by the package that owns it (`mutator.handlers`).
- a repair (`repair_check`) or a list of variants (`variants_check`): the fields the parent reads
  have their types (a change is {line, col, old, new, feeds}), text is cut.
- an evaluation row (`validate_row`, ROW_SCHEMA: corpus's check of its evaluation handler): `status`
  one of STATUSES; numbers real (bool excluded), finite and in range (accuracy in [0, 1]; flops,
  params whole and >= 0; times, latencies, memory >= 0); text one line and cut; `flops_unsupported` a
  short list of short names;
  `predictions` base64 text of at most MAX_PREDICTIONS characters (what it decodes to is checked by
  the parent that holds the labels: `corpus.evaluator.score`, which drops it from the row); every
  other key dropped, so a row is at most about 12 kB (besides its predictions) whatever the candidate
  sent. One violation makes the whole row that candidate's failed row: status `invalid_result`, an
  error naming the field, every measurement None (never half of a forged row).

Nothing here raises on a candidate's data. Pure and import-light: the fork server uses it too.
"""
from __future__ import annotations

import json
import math
import re

MAX_ERROR = 500  # characters of a result's error text (it goes into LLM prompts; a candidate chooses it)
MAX_DEPTH = 32  # nesting of a frame: the deepest real answer (`mutator.analysis`) is about 6
MAX_STATUS = 40
INVALID = "invalid_result"
STATUSES = frozenset({  # corpus.pipeline's stages, the sandbox's own failures, and this module's
    "ok", "build_error", "shape_error", "latency_error", "zero_cost_error", "constraint", "train_error", "nan",
    "oom", "error", "crash", "timeout", INVALID})
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,%d}" % (MAX_STATUS - 1))
_SURROGATE = re.compile("[\ud800-\udfff]")
# line breaks, control characters, and invisible characters that reorder or hide text (bidi, zero width)
_BREAKS = re.compile("[\\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]+")


class FrameError(ValueError):
    """An answer frame that is not one valid JSON object (`malformed`: not JSON at all)."""

    def __init__(self, why: str, malformed: bool = False):
        super().__init__(why)
        self.malformed = malformed


# -- text -----------------------------------------------------------------------------------------

def valid_utf8(s: str) -> str:
    """`s` with lone surrogates (which no UTF-8 writer accepts) replaced by U+FFFD; nothing else changed."""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def clean_text(value, limit: int = MAX_ERROR) -> str:
    """Any object as one line of valid UTF-8 of at most `limit` characters (cut ones end with "…").
    None is ""; line breaks, control and invisible characters collapse to one space."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001  (a deep list's str recurses; any object may raise)
            value = f"<{type(value).__name__}>"
    text = _BREAKS.sub(" ", valid_utf8(value)).strip()
    if len(text) > limit:
        text = text[:max(0, limit - 1)].rstrip() + "…"
    return text


def valid_strings(obj):
    """`obj` (JSON data) with every string, keys included, made valid UTF-8 (`valid_utf8`)."""
    if isinstance(obj, str):
        return valid_utf8(obj)
    if isinstance(obj, dict):
        return {valid_utf8(k) if isinstance(k, str) else k: valid_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [valid_strings(v) for v in obj]
    return obj


def finite(value) -> float | int | None:
    """`value` if it is a finite real number (bool excluded), else None: for formatting stored numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value if abs(value) <= 1e300 else None
    return value if math.isfinite(value) else None


# -- frames ---------------------------------------------------------------------------------------

def _pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise FrameError(f"duplicate key {clean_text(dup, 40)!r} in the answer")
    return d


def _constant(name: str):
    raise FrameError(f"non-finite number {name} in the answer")


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise FrameError(f"non-finite number {clean_text(text, 20)} in the answer")
    return v


def _depth(obj) -> int:
    """Nesting depth of JSON data, without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            todo.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def decode_frame(raw: bytes | str) -> dict:
    """One JSON object from a process's answer; FrameError for anything else (see the module docstring).
    Never raises another exception: a frame nested 200,000 deep is a FrameError, not a RecursionError."""
    try:
        obj = json.loads(raw, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
    except FrameError:
        raise
    except RecursionError:
        raise FrameError(f"the answer is nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FrameError("malformed answer (not one JSON document)", malformed=True) from None
    except Exception as exc:  # noqa: BLE001  (an integer of 5,000 digits, memory, ...)
        raise FrameError(f"unreadable answer ({type(exc).__name__}: {clean_text(exc, 80)})") from None
    if not isinstance(obj, dict):
        raise FrameError(f"the answer is a JSON {type(obj).__name__}, not an object")
    if _depth(obj) > MAX_DEPTH:
        raise FrameError(f"the answer is nested deeper than {MAX_DEPTH} levels")
    return obj


# -- results --------------------------------------------------------------------------------------

def failure(why: str, status: str = INVALID) -> dict:
    """A failed result whose error names what was wrong (one line, cut)."""
    return {"status": status, "error": clean_text(f"invalid result: {why}", MAX_ERROR)}


class _Bad(Exception):
    """A field that does not fit its schema: the message names why."""


def _name(status) -> str:
    """A status for an error message: quoted when it is a short name, else only described (a long
    status is where a candidate would put an instruction for the LLM that reads the error)."""
    if isinstance(status, str) and _IDENT.fullmatch(status):
        return repr(status)
    return f"({_kind(status)} of {len(status)} characters)" if isinstance(status, str) else f"({_kind(status)})"


def _show(v) -> str:
    return clean_text(repr(v), 40)


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(type(v), type(v).__name__)


def _number(lo: float = -1e300, hi: float = 1e300, whole: bool = False):
    def check(v):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"is {_kind(v)}, not a number")
        if isinstance(v, float) and not math.isfinite(v):
            raise _Bad(f"is {v}, not a finite number")
        if not lo <= v <= hi:  # exact for ints of any size
            raise _Bad(f"is {_show(v)}, outside [{lo:g}, {hi:g}]")
        if whole:
            if isinstance(v, float) and not v.is_integer():
                raise _Bad(f"is {_show(v)}, not a whole number")
            return int(v)
        return float(v)
    return check


def _text(limit: int):
    def check(v):
        if v is None:
            return None
        if not isinstance(v, str):
            raise _Bad(f"is {_kind(v)}, not text")
        return clean_text(v, limit)
    return check


MAX_PREDICTIONS = 1 << 23  # base64 characters: 6 M test images at one byte each
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _predictions(v):
    if v is None:
        return None
    if not isinstance(v, str):
        raise _Bad(f"is {_kind(v)}, not text")
    if len(v) > MAX_PREDICTIONS or len(v) % 4 or not _BASE64.fullmatch(v):
        raise _Bad(f"is not base64 text of at most {MAX_PREDICTIONS:,} characters")
    return v


def _names(v):
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad("is not a list of names")
    if len(v) > 100:
        raise _Bad(f"lists {len(v)} names, more than 100")
    return [clean_text(x, 100) for x in v]


FRACTION, REAL = _number(0.0, 1.0), _number()
SECONDS = _number(0.0, 1e7)  # latencies in ms and memory in MB too: no measurement here comes near
COUNT = _number(0, 2 ** 63 - 1, whole=True)  # int64 in the corpus's Arrow table
ROW_SCHEMA = {
    "status": None,  # checked first, against STATUSES
    "error": _text(MAX_ERROR), "accuracy": FRACTION, "train_seconds": SECONDS, "flops": COUNT,
    "flops_unsupported": _names, "flops_check": _text(300), "params": COUNT, "params_check": _text(300),
    "latency_ms": SECONDS, "latency_batch_ms": SECONDS,
    "latency_device": _text(200), "peak_memory_mb": SECONDS, "final_loss": REAL, "device_name": _text(200),
    "seconds": SECONDS, "zc_synflow": REAL, "zc_naswot": REAL, "zc_snip": REAL, "zc_grad_norm": REAL,
    "zc_grasp": REAL, "zc_seconds": SECONDS, "zc_error": _text(MAX_ERROR), "predictions": _predictions,
}  # corpus.pipeline.ROW_KEYS, "seconds", corpus.zerocost.COLUMNS, and "predictions" (scored by the parent)


def validate_row(row, statuses=STATUSES, keep: tuple[str, ...] = ()) -> dict:
    """An evaluation row checked against ROW_SCHEMA (module docstring): the row as the schema keeps it,
    or that candidate's failed row (status `invalid_result`, every measurement None). Never raises.
    keep: keys the parent wrote itself (a journal row's id, code, ...), passed through as they are."""
    if not isinstance(row, dict):
        return {**dict.fromkeys(ROW_SCHEMA), **failure(f"the result is {_kind(row)}, not an object")}
    kept = {k: row[k] for k in keep if k in row}
    status = row.get("status")
    try:
        if not isinstance(status, str):
            raise _Bad(f"status is {_kind(status)}, not text")
        if status not in statuses:
            raise _Bad(f"status {_name(status)} is not a known status")
        out = {"status": status}
        for key, check in ROW_SCHEMA.items():
            if check is not None and key in row:
                try:
                    out[key] = check(row[key])
                except _Bad as exc:
                    raise _Bad(f"{key} {exc}") from None
    except _Bad as exc:
        return {**dict.fromkeys(ROW_SCHEMA), **kept, **failure(str(exc))}
    return {**out, **kept}


def _common(result: dict) -> dict:
    """The checks every result gets (module docstring); raises _Bad."""
    status, error = result.get("status"), result.get("error")
    if status is not None and not (isinstance(status, str) and _IDENT.fullmatch(status)):
        raise _Bad(f"status {_name(status)} is not a short name")
    if error is not None and not isinstance(error, str):
        raise _Bad(f"error is {_kind(error)}, not text")
    if error is not None:
        result["error"] = clean_text(error, MAX_ERROR)
    return result


def _fields(d: dict, kinds: dict, where: str = "") -> None:
    """Each present, non-None value of `d` in `kinds` has that type (bool is not an int); raises _Bad."""
    for key, kind in kinds.items():
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            raise _Bad(f"{where}{key} is {_kind(v)}, not {'text' if kind is str else kind.__name__}")


_CHANGE = {"line": int, "col": int, "old": int, "new": int, "feeds": str}


def repair_check(result: dict) -> dict:
    """A repair's check (registered by `mutator.repair`): its source, reason and changes as
    `RepairResult.from_dict` reads them. Raises _Bad."""
    if _common(result).get("status") not in ("repaired", "unchanged", "failed"):
        return result
    _fields(result, {"source": str, "reason": str, "trials": int, "params": int})
    changes = result.get("changes", [])
    if not isinstance(changes, list) or len(changes) > 1000:
        raise _Bad("changes is not a list of at most 1,000 changes")
    for c in changes:
        if not isinstance(c, dict) or set(c) != set(_CHANGE):
            raise _Bad(f"a change is not an object of {', '.join(_CHANGE)}")
        _fields(c, _CHANGE, "a change's ")
        c["feeds"] = clean_text(c["feeds"], 200)
    if result.get("reason") is not None:
        result["reason"] = clean_text(result["reason"], MAX_ERROR)
    return result


def variants_check(result: dict) -> dict:
    """A list of variants' check (`mutator.handlers`): one object per width list, as
    `mutator.calls.variants_of` reads them. Raises _Bad."""
    if _common(result).get("status") != "ok":
        return result
    if not isinstance(result.get("results"), list):
        raise _Bad("results is not a list")
    for v in result["results"]:
        if not isinstance(v, dict):
            raise _Bad(f"a variant is {_kind(v)}, not an object")
        _common(v)
        _fields(v, {"source": str, "params": int, "widths": list}, "a variant's ")
    return result


def params_check(result: dict) -> dict:
    """A validation's check (`mutator.handlers`): params, when present, a whole number. Raises _Bad."""
    _fields(_common(result), {"params": int})
    return result


def checked(result, check=None) -> dict:
    """A sandboxed handler's result as the parent may use it (module docstring): `check` (the handler's
    registered check, `mutator.handlers`: it gets the result with valid strings and returns it checked, or
    raises _Bad), then the checks every result gets. Never raises."""
    if not isinstance(result, dict):
        return failure(f"the result is {_kind(result)}, not an object")
    if _depth(result) > MAX_DEPTH:
        return failure(f"the result is nested deeper than {MAX_DEPTH} levels")
    result = valid_strings(result)
    try:
        return _common((check or _common)(result))
    except _Bad as exc:
        return failure(str(exc))
