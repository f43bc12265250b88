"""Repair a network whose layers no longer agree on channel counts, keeping the widths that were set.

    python -m mutator repair broken.py --out fixed.py            # prints what it changed
    python -m mutator repair broken.py --parent original.py --out fixed.py

    result = repair(source, spec)                 # RepairResult(status, source, changes, reason)
    pool.call("mutator.repair:repair_handler", {"source": ..., "spec": ...})   # the same, as JSON

A hand-edited or LLM-written file often changes one layer's width and forgets the layers that must
follow it (the next conv's `in_channels`, its BatchNorm, `Linear.in_features`, the other side of a
residual addition, a `view(-1, 16 * 5 * 5)`). The repair reuses the width analysis
(`mutator.analysis`) on the broken file itself, inside a sandbox worker:

1. Build it on the meta device and classify its integer literals by perturbing them one at a time
   (as the analysis does): a *width* sets some layer's output channels, a *dependent* literal only
   what layers expect at their input, a *forward* literal changes no layer but the forward pass.
2. Widths are what the user set: they are kept. One forward pass with hooks records every layer
   whose input disagrees with what it expects; the dependent literals driving those expectations
   are solved from their measured slope so that the expectation matches what arrives.
3. What is still broken (an addition whose two sides differ, a `view` literal) needs a literal that
   mirrors a width to follow it: for a pair of values a -> b found in the file, every width, dependent
   or forward literal of value a is set to b, the dependent literals are solved again, and the set is
   minimised one literal at a time. The user's value b is the one held by fewer literals of the broken
   file (a hand edit changes one place), and a width whose value no other literal holds is never
   changed; with `parent` (the file before the edit, as in the search
   loop) the literals that differ from it are the user's and are never changed, and their
   parent -> new pairs are tried first.

A repair is accepted only if the repaired file builds, runs forward at the declared input shape
without a channel mismatch and gives (batch, classes). Literals below 2 (strides, flags) and
geometry (kernel, stride, padding, groups count, number of layers or classes) are never changed.
Not repaired: a file that does not build at all (e.g. a GroupNorm whose group count no longer divides
its channels), two unrelated broken couplings in one file without `parent`, channel counts computed
from expressions without an integer literal to solve.
"""
from __future__ import annotations

import difflib
import itertools
import os
import re
from dataclasses import dataclass
from fractions import Fraction

from mutator.analysis import Analyzer, _scalar, _why_not, table_diff
from mutator.handlers import register_handler
from mutator.literals import Rewriter, SourceError, rounding_divisors
from mutator.probe import trial
from mutator.results import repair_check

MIN_LITERAL = 2  # literals below this (0, 1: strides, flags, dims) are never repaired
MAX_PAIRS = 60   # value pairs tried in step 3


@dataclass(frozen=True)
class Change:
    """One literal the repair changed: where, old -> new, and what it feeds."""

    line: int
    col: int
    old: int
    new: int
    feeds: str  # e.g. "layer2.0.bn1.num_features 128 -> 96", or "forward: x = x.view(-1, 16 * 5 * 5)"

    def __str__(self) -> str:
        return f"line {self.line}: {self.old} -> {self.new}  ({self.feeds})"


@dataclass(frozen=True)
class RepairResult:
    """status: "repaired", "unchanged" (the file already builds and runs) or "failed" (reason says why)."""

    status: str
    source: str
    changes: tuple[Change, ...] = ()
    reason: str = ""
    trials: int = 0

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "RepairResult":
        if d.get("status") not in ("repaired", "unchanged", "failed"):  # the sandbox's own failures
            why = d.get("error") or d.get("status") or "no answer"
            return cls("failed", source, reason=f"repair {d.get('status', 'crash')}: {why}"[:500])
        return cls(d["status"], d.get("source", source), tuple(Change(**c) for c in d.get("changes", ())),
                   d.get("reason", ""), int(d.get("trials", 0)))

    def summary(self) -> str:
        if self.status == "unchanged":
            return "already builds and runs; nothing changed"
        if self.status == "failed":
            return f"no repair: {self.reason}"
        return f"repaired {len(self.changes)} literal(s): " + "; ".join(map(str, self.changes))


class _Failed(Exception):
    pass


def _protected(source_rw: Rewriter, parent: str | None) -> dict[int, int]:
    """Literals of `source` that differ from `parent` (index -> parent value, or None if new)."""
    if not parent:
        return {}
    try:
        old = Rewriter(parent).literals
    except SourceError:
        return {}
    new = source_rw.literals
    sm = difflib.SequenceMatcher(a=[l.text for l in old], b=[l.text for l in new], autojunk=False)
    out = {}
    for op, a0, a1, b0, b1 in sm.get_opcodes():
        if op == "equal":
            continue
        for k, j in enumerate(range(b0, b1)):
            out[j] = old[a0 + k].value if op == "replace" and a1 - a0 == b1 - b0 else None
    return out


class Repairer(Analyzer):
    """The analysis run on a broken file: its base build may fail forward or carry mismatches."""

    def __init__(self, source: str, spec: dict, parent: str | None = None, divisor: int = 8):
        self.rw = Rewriter(source)
        self.spec = spec
        self.divisor = MIN_LITERAL
        self.big = max(1, int(divisor))
        self.trials = 0
        self.device = "meta"
        self.expected_out = [int(spec["in_shape"][0]), int(spec["classes"])]
        self.deps = {}
        self.rounders = rounding_divisors(self.rw.module)  # as the analysis: a rounding divisor is no width
        self.protected = _protected(self.rw, parent)
        base = self._run({})
        if base["table"] is None:
            cpu = trial(self.rw.source, spec, "cpu", keep_mismatches=True)
            self.trials += 1
            if cpu["table"] is None:
                raise _Failed(_why_not(cpu if cpu["stage"] != "load" else base))
            self.device, base = "cpu", cpu
        self.base = dict(base, out_shape=self.expected_out)  # classify compares against the goal
        self.broken = base
        self.infos: dict[int, dict] = {}

    def _run(self, values: dict) -> dict:
        self.trials += 1
        return trial(self.rw(values), self.spec, self.device, keep_mismatches=True)

    def _solve(self, module, attr, actual, fixed, new):
        """As the analysis, but a mismatch no literal sets waits while others are solved: one
        literal often feeds two layers and the perturbation saw only one (a shortcut conv that
        exists only while in_ch != out_ch)."""
        nv = super()._solve(module, attr, actual, fixed, new)
        if nv is None:
            self.unsolved = self.unsolved or f"{module}.{attr} gets {actual} channels, and no literal sets it"
            return -1  # realize stops only on None; with nothing solved it reports no progress
        return nv

    def realize(self, assign, fixed=None, rounds: int = 6):
        self.unsolved = None
        ok, assign, tr = super().realize(assign, fixed, rounds)
        if not ok and tr == "repair made no progress" and self.unsolved:
            tr = self.unsolved
        return ok, assign, tr

    def clean(self, t: dict) -> bool:
        return t["stage"] == "ok" and not t["mismatches"] and t["out_shape"] == self.expected_out

    def _classify(self, small: bool) -> None:
        """Classify literals >= the divisor first; the small ones (6 in LeNet) only when needed."""
        for lit in self.rw.literals:
            if lit.index in self.infos or (lit.value < self.big) != small:
                continue
            info = self.classify(lit)
            self.infos[lit.index] = info
            if info["kind"] != "dependent":
                continue
            for m, a, a0, slope in info["drives"]:
                if slope is not None and a0 is not None:
                    self.deps.setdefault((m, a), []).append((lit.index, Fraction(slope), a0, lit.value))
        for entries in self.deps.values():  # solve with channel-sized literals before 5 in 16*5*5
            entries.sort(key=lambda e: (e[3] < self.big, e[0]))

    def _fixed(self) -> set[int]:
        return {i for i, info in self.infos.items() if info["kind"] != "dependent"} | set(self.protected)

    def solve(self) -> dict:
        if self.clean(self.broken):
            return {"status": "unchanged", "source": self.rw.source, "changes": [], "trials": self.trials}
        last = "no candidate literal"
        for small in (False, True):
            self._classify(small)
            ok, assign, tr = self.realize({}, fixed=self._fixed())
            if ok:
                return self._result(assign, tr)
            last = tr if isinstance(tr, str) else _why_not(tr)
            ok, assign, tr = self._pairs(last)
            if ok:
                return self._result(assign, tr)
        return {"status": "failed", "source": self.rw.source, "changes": [], "reason": last,
                "trials": self.trials}

    # -- step 3: a width mirrored by other literals -------------------------------------------
    def _pairs(self, error: str):
        lits = self.rw.literals
        count: dict[int, int] = {}
        for i, info in self.infos.items():
            if info["kind"] in ("width", "dependent", "forward"):
                count[lits[i].value] = count.get(lits[i].value, 0) + 1
        # without a parent, a width whose value no other literal has is the user's edit: kept
        pool = [i for i, info in self.infos.items()
                if info["kind"] in ("width", "dependent", "forward") and i not in self.protected
                and (self.protected or info["kind"] != "width" or count[lits[i].value] > 1)]
        sources, targets = {lits[i].value for i in pool}, set(count)
        mentioned = {int(n) for n in re.findall(r"\d+", error or "")}  # numbers in the error text
        first = []
        for j, old in self.protected.items():
            if old is not None and old != lits[j].value:
                first.append((old, lits[j].value))
        pairs = [(a, b) for a, b in itertools.permutations(sorted(sources | targets), 2)
                 if a in sources and b in targets]
        # the user's value is the rarer one; values named in the error first
        pairs.sort(key=lambda p: (count.get(p[1], 0) >= count.get(p[0], 0),
                                  not {p[0], p[1]} <= mentioned, count.get(p[0], 0)))
        if first:
            pairs = [p for p in first if p[0] in sources] + [p for p in pairs if p not in first]
        for a, b in pairs[:MAX_PAIRS]:
            members = {i for i in pool if lits[i].value == a}
            if not members:
                continue
            ok, assign, tr = self._try_pair(members, b)
            if not ok:
                continue
            for c in sorted(members):
                if len(members) == 1:
                    break
                ok2, assign2, tr2 = self._try_pair(members - {c}, b)
                if ok2:
                    members.discard(c)
                    assign, tr = assign2, tr2
            return True, assign, tr
        return False, None, None

    def _try_pair(self, members, value):
        fixed = self._fixed() | set(members)
        return self.realize({i: value for i in members}, fixed=fixed)

    # -- result ---------------------------------------------------------------------------------
    def _result(self, assign: dict, tr: dict) -> dict:
        lits = self.rw.literals
        lines = self.rw.source.splitlines()
        changes = []
        for i in sorted(assign):
            if assign[i] == lits[i].value:
                continue
            lit = lits[i]
            info = self.infos.get(i, {})
            diff = table_diff(self.broken["table"], tr["table"])["channel"]
            feeds = []
            for m, a, *_ in info.get("drives", ()):
                if (m, a) in diff:
                    feeds.append(f"{m}.{a} {_scalar(diff[(m, a)][0])} -> {_scalar(diff[(m, a)][1])}")
            if not feeds:
                feeds = [f"{m}.{a}" for m, a, *_ in info.get("drives", ())[:2]]
            if not feeds:
                feeds = ["forward: " + lines[lit.line - 1].strip()[:80]]
            more = f" (+{len(feeds) - 2} more)" if len(feeds) > 2 else ""
            changes.append({"line": lit.line, "col": lit.col + 1, "old": lit.value, "new": int(assign[i]),
                            "feeds": ", ".join(feeds[:2]) + more})
        return {"status": "repaired", "source": self.rw(assign), "changes": changes, "trials": self.trials,
                "params": tr["params"]}


# -- worker handler (JSON in, JSON out) and the pool-side wrapper ------------------------------------

def repair_handler(payload: dict) -> dict:
    """Sandbox side: {"source", "spec", "parent"?, "divisor"?} -> {"status", "source", "changes", ...}."""
    try:
        return Repairer(payload["source"], payload["spec"], payload.get("parent"),
                        payload.get("divisor", 8)).solve()
    except SourceError as exc:
        return {"status": "failed", "source": payload["source"], "changes": [], "reason": str(exc)}
    except _Failed as exc:
        return {"status": "failed", "source": payload["source"], "changes": [], "reason": str(exc)}


HANDLER = register_handler("mutator.repair:repair_handler", check=repair_check).name


def repair(source: str, spec: dict, pool=None, parent: str | None = None, divisor: int = 8,
           timeout_s: float = 300.0) -> RepairResult:
    """Repair `source` at `spec` ({"in_shape", "classes", "class_name"}); never raises for bad model code.

    The model code runs only in a sandbox worker: `pool` (a `mutator.sandbox.WorkerPool`), or a
    one-worker pool made and closed here.
    """
    try:
        Rewriter(source)
    except SourceError as exc:
        return RepairResult("failed", source, reason=str(exc))
    own = pool is None
    if own:
        from mutator.sandbox import WorkerPool

        pool = WorkerPool(1, timeout_s=timeout_s)
    try:
        res = pool.call(HANDLER,
                        {"source": source, "spec": spec, "parent": parent, "divisor": divisor},
                        timeout_s=timeout_s)
    finally:
        if own:
            pool.close()
    return RepairResult.from_dict(res, source)


def write_result(result: RepairResult, path: str) -> None:
    """Write the (repaired or unchanged) source atomically; a failed result is never written."""
    if result.status == "failed":
        raise ValueError(f"nothing to write: {result.reason}")
    out = os.path.abspath(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp")
    with open(tmp, "w") as f:
        f.write(result.source)
    os.replace(tmp, out)
