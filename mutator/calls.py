"""Typed calls into the sandbox: the parent's side of `mutator.analysis`'s worker handlers.

    with WorkerPool(1) as pool:
        a = analyze(pool, source, spec)                   # Analysis: width groups, seed widths, ...
        vs = realize(pool, source, spec, a, [[32, 64], [16, 48]])   # one Variant per width list
        ok = validate(pool, vs[0].source, spec)           # Check

Each returns a frozen result record with a `status` ("ok", else why not) and an `error`; a request
that crashed or timed out in the sandbox is such a result too, with its status (`crash`, `timeout`),
never an exception and never a silently shorter list: `realize` always returns one Variant per width
list asked for.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Analysis:
    status: str
    error: str | None = None
    groups: list = field(default_factory=list)  # width groups: literals, value, multiple, layers, lines
    seed_widths: list = field(default_factory=list)
    params: int | None = None
    raw: dict = field(default_factory=dict, repr=False)  # what the realizer needs back (deps, divisor, ...)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Variant:
    status: str
    error: str | None = None
    source: str | None = None
    params: int | None = None
    widths: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Check:
    status: str
    error: str | None = None
    params: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_ANALYSES: OrderedDict = OrderedDict()  # (sha256 of source, spec, divisor) -> Analysis: the last 256 that were ok


def analyze(pool, source: str, spec: dict, divisor: int = 8, timeout_s: float | None = None) -> Analysis:
    """The analysis of `source`; one that succeeded is remembered in this process (it is a function of
    the source, spec and divisor alone), so a seed that a run's strategy, evaluator and pre-check each
    analyse is sent to the sandbox once. A failed one is asked again (a timeout may not recur)."""
    key = (hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest(), json.dumps(spec, sort_keys=True, default=str),
           divisor)
    if key in _ANALYSES:
        _ANALYSES.move_to_end(key)
        return copy.deepcopy(_ANALYSES[key])  # a caller may change its lists: the memo stays as answered
    res = pool.call("mutator.analysis:analyze", {"source": source, "spec": spec, "divisor": divisor}, timeout_s)
    status = res.get("status") or "crash"
    if status != "ok":
        return Analysis(status, res.get("error") or status)
    a = Analysis("ok", None, res.get("groups") or [], res.get("seed_widths") or [], res.get("params"), res)
    _ANALYSES[key] = copy.deepcopy(a)
    if len(_ANALYSES) > 256:
        _ANALYSES.popitem(last=False)
    return a


def realize_payload(source: str, spec: dict, analysis: Analysis, widths: list[list[int]]) -> dict:
    return {"source": source, "spec": spec, "analysis": analysis.raw, "widths": [list(w) for w in widths]}


def variants_of(res: dict, widths: list[list[int]]) -> list[Variant]:
    """One Variant per width list from a `variants` answer; a failed request fails every one."""
    results = res.get("results")
    if res.get("status") != "ok" or not isinstance(results, list) or len(results) != len(widths):
        status = res.get("status") if res.get("status") not in (None, "ok") else "crash"
        why = res.get("error") or "the sandbox answered without one result per width list"
        return [Variant(status, why, widths=list(w)) for w in widths]
    return [Variant(r.get("status") or "crash", r.get("error"), r.get("source"), r.get("params"), list(w))
            for r, w in zip(results, widths)]


def realize(pool, source: str, spec: dict, analysis: Analysis, widths: list[list[int]],
            timeout_s: float | None = None) -> list[Variant]:
    if not widths:
        return []
    res = pool.call("mutator.analysis:variants", realize_payload(source, spec, analysis, widths), timeout_s)
    return variants_of(res, widths)


def validate(pool, source: str, spec: dict, timeout_s: float | None = None) -> Check:
    res = pool.call("mutator.analysis:validate", {"source": source, "spec": spec}, timeout_s)
    return Check(res.get("status") or "crash", res.get("error"), res.get("params"))
