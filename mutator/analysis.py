"""Find the width literals of a model file, group the coupled ones, and realize width choices.

Runs inside a sandbox worker (it executes the model code). The method, all by building the model
(meta device: shapes only) and comparing every layer's attributes with the unchanged build:

1. Perturb one integer literal at a time. It is a *width* if it changes the output channels of some
   layer (conv `out_channels`, linear `out_features`) and no kernel size, stride, padding, group
   count or number of layers (two perturbations adding different numbers of layers = a layer
   count); it is *dependent* if it only changes what layers expect at their input (`in_channels`,
   BatchNorm/GroupNorm features, `in_features`, depthwise groups): those are never chosen but
   repaired; it is *forward-coupled* if it changes no layer but breaks the forward pass (e.g. the
   16 in `x.view(-1, 16 * 5 * 5)`). Literals below the divisor are never widths (kernel sizes,
   expansion ratios, input channels), nor are those that change the number of classes.
2. Realize a choice: set the width literals, run one forward pass with hooks that record every
   layer whose input disagrees with what it expects (mismatches are patched over so one pass finds
   them all), solve each dependent literal from its measured linear effect (`16 * 4 * 4` has slope
   16) and run again until the pass is clean.
   A rounding divisor is never a width: a literal that code divides by (`c // 8 * 8`), directly or
   through parameters (`round_nearest=8` handed to `_make_divisible(v, divisor)`), found in the
   syntax tree (`mutator.literals.rounding_divisors`); changing it moves widths only by rounding.
3. A width whose change cannot be realized alone (a residual addition couples two layers' output
   widths, a forward literal mirrors a layer width) is grouped with the literals of the same value
   whose joint change works, minimised one literal at a time. A group changes as one width.

The widths of a variant are the group values, in order of their first literal in the source.
"""
from __future__ import annotations

import math
from fractions import Fraction

from mutator.literals import Rewriter, rounding_divisors
from mutator.probe import producer_attrs, trial

MAX_LITERAL = 1 << 16


class AnalysisError(Exception):
    pass


def _count(table):
    return len(table or {})


def table_diff(base: dict, other: dict) -> dict:
    """Channel and geometry attributes that differ between two builds, and added/removed layers."""
    channel, geometry = {}, {}
    for name, row in base.items():
        new = other.get(name)
        if new is None or new.get("type") != row.get("type"):
            continue
        for attr, v in row.items():
            if attr == "type" or new.get(attr) == v:
                continue
            if attr in ("in_channels", "out_channels", "groups", "in_features", "out_features",
                        "num_features", "num_channels", "normalized_shape", "num_parameters",
                        "param_shapes"):
                if attr == "groups" and not (v == row.get("in_channels") and v > 1):
                    geometry[(name, attr)] = (v, new.get(attr))  # a group count, not a width
                else:
                    channel[(name, attr)] = (v, new.get(attr))
            else:
                geometry[(name, attr)] = (v, new.get(attr))
    added = [n for n in other if n not in base]
    removed = [n for n in base if n not in other]
    return {"channel": channel, "geometry": geometry, "added": added, "removed": removed}


def _scalar(v):
    if isinstance(v, list):
        return v[0] if len(v) == 1 and isinstance(v[0], int) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Analyzer:
    def __init__(self, source: str, spec: dict, divisor: int = 8):
        self.rw = Rewriter(source)
        self.spec = spec
        self.divisor = max(1, int(divisor))
        self.device = "meta"
        self.trials = 0
        base = self._run({})
        if base["stage"] != "ok" or base["mismatches"]:
            cpu = trial(self.rw.source, spec, "cpu")
            self.trials += 1
            if cpu["stage"] == "ok" and not cpu["mismatches"]:
                self.device, base = "cpu", cpu
            else:
                raise AnalysisError(_why_not(cpu if cpu["stage"] != "load" else base))
        want = [int(spec["in_shape"][0]), int(spec["classes"])]
        if base["out_shape"] != want:
            raise AnalysisError(f"the model's output shape is {tuple(base['out_shape'])}, expected {tuple(want)}")
        self.base = base
        self.expected_out = want
        self.literals: list[dict] = []
        self.deps: dict[tuple, list] = {}
        self.rounders = rounding_divisors(self.rw.module)

    def _run(self, values: dict) -> dict:
        self.trials += 1
        return trial(self.rw(values), self.spec, self.device)

    # -- step 1 ----------------------------------------------------------------------------
    def classify(self, lit) -> dict:
        info = {"index": lit.index, "value": lit.value, "line": lit.line, "col": lit.col,
                "kind": "other", "drives": [], "reason": ""}
        v = lit.value
        if v < self.divisor or v > MAX_LITERAL:
            info["reason"] = f"below the divisor {self.divisor}" if v < self.divisor else "too large"
            return info
        if (lit.line, lit.col) in self.rounders:
            # `round_nearest=8` moves widths only by rounding them: choosing it as a width would
            # change a network's rounding, not its size
            info["reason"] = "a rounding divisor (widths are divided by it)"
            return info
        t = None
        for nv in (2 * v, v // 2, v + self.divisor):
            if nv < 1 or nv == v:
                continue
            t = self._run({lit.index: nv})
            if t["table"] is not None:
                break
        if t is None or t["table"] is None:
            info["reason"] = "any change breaks the build" if t is None else f"a change breaks the build ({t['error']})"
            return info
        d = table_diff(self.base["table"], t["table"])
        if d["geometry"]:
            (m, a), _ = next(iter(d["geometry"].items()))
            info["reason"] = f"sets {a} of {m}"
            return info
        if not d["channel"]:
            if d["added"] or d["removed"]:
                info["reason"] = "sets a number of layers"
            elif t["stage"] != "ok" or t["mismatches"] or t["out_shape"] != self.base["out_shape"]:
                info["kind"], info["reason"] = "forward", "used in forward, coupled to a width"
            else:
                info["reason"] = "no effect on any layer"
            return info
        out = t["out_shape"]
        if t["stage"] == "ok" and not t["mismatches"] and out and out[-1] != self.base["out_shape"][-1]:
            info["reason"] = "sets the number of classes"
            return info
        if d["added"] or d["removed"]:
            # a layer count adds layers at every step; a width adds or drops one only where it
            # happens to meet a condition (`if in_planes != planes: shortcut = ...`)
            counts = {_count(t["table"])}
            for k in (3, 4):
                tk = self._run({lit.index: k * v})
                if tk["table"] is not None:
                    counts.add(_count(tk["table"]))
            if len(counts) == 3:
                info["reason"] = "sets a number of layers"
                return info
        base_table = self.base["table"]
        dv = nv - v
        # a width grows its layers when it grows; a literal that shrinks them (the 16 in
        # `planes // 16`) is a ratio, not a width
        for (m, a), (a0, a1) in d["channel"].items():
            s0, s1 = _scalar(a0), _scalar(a1)
            if s0 is not None and s1 is not None and (s1 - s0) * dv < 0:
                info["reason"] = f"divides {m}.{a} (a ratio, not a width)"
                return info
        producer = any(a in producer_attrs(base_table[m]) for m, a in d["channel"])
        info["kind"] = "width" if producer else "dependent"
        for (m, a), (a0, a1) in sorted(d["channel"].items()):
            s0, s1 = _scalar(a0), _scalar(a1)
            slope = None if s0 is None or s1 is None else Fraction(s1 - s0, dv)
            info["drives"].append([m, a, s0, None if slope is None else str(slope)])
        return info

    # -- step 2 ----------------------------------------------------------------------------
    def realize(self, assign: dict[int, int], fixed=None, rounds: int = 4):
        """Set `assign`, repair dependent literals; (ok, final assignment, trial or error text)."""
        assign = dict(assign)
        fixed = set(assign) if fixed is None else set(fixed)
        t = None
        for _ in range(rounds):
            t = self._run(assign)
            if not t["mismatches"]:
                if t["stage"] != "ok":
                    return False, assign, _why_not(t)
                if t["out_shape"] != self.expected_out:
                    return False, assign, f"output shape {tuple(t['out_shape'])} instead of {tuple(self.expected_out)}"
                return True, assign, t
            new: dict[int, int] = {}
            for m, a, expected, actual in t["mismatches"]:
                nv = self._solve(m, a, _scalar(actual), fixed, new)
                if nv is None:
                    return False, assign, f"{m}.{a} gets {_scalar(actual)} channels but expects {_scalar(expected)}, and no literal sets it"
            if all(assign.get(k) == v for k, v in new.items()):
                return False, assign, "repair made no progress"
            assign.update(new)
        return False, assign, _why_not(t) if t and t["stage"] != "ok" else "repair did not converge"

    def _solve(self, module, attr, actual, fixed, new):
        if actual is None:
            return None
        for idx, slope, a0, v in self.deps.get((module, attr), ()):
            if idx in fixed or slope == 0:
                continue
            step = Fraction(actual - a0) / slope
            if step.denominator != 1 or v + int(step) < 1:
                continue
            nv = v + int(step)
            if new.get(idx, nv) != nv:
                return None
            new[idx] = nv
            return nv
        return None

    # -- step 3 ----------------------------------------------------------------------------
    def run(self) -> dict:
        infos = [self.classify(lit) for lit in self.rw.literals]
        self.literals = infos
        for info in infos:
            if info["kind"] != "dependent":
                continue
            for m, a, a0, slope in info["drives"]:
                if slope is not None and a0 is not None:
                    self.deps.setdefault((m, a), []).append((info["index"], Fraction(slope), a0, info["value"]))
        by_index = {i["index"]: i for i in infos}
        pool = [i for i in infos if i["kind"] in ("width", "dependent", "forward")]
        groups: list[dict] = []
        member_of: dict[int, dict] = {}
        frozen = []
        for info in infos:
            if info["kind"] != "width" or info["index"] in member_of:
                continue
            members = {info["index"]}
            ok, tr = self._try(members)
            if not ok:
                cands = {c["index"] for c in pool if c["value"] == info["value"] and c["index"] != info["index"]}
                ok, tr = self._try(members | cands) if cands else (False, tr)
                if ok:
                    for c in sorted(cands):
                        trial_ok, trial_tr = self._try(members | cands - {c})
                        if trial_ok:
                            cands.discard(c)
                            tr = trial_tr
                    members |= cands
            if not ok:
                info["reason"] = f"cannot change alone or with its equal literals: {tr}"
                frozen.append({"index": info["index"], "line": info["line"], "reason": info["reason"]})
                continue
            merged = [g for g in groups if g["literals"] & members]
            for g in merged:
                members |= g["literals"]
                groups.remove(g)
            group = {"literals": members, "value": info["value"], "trial": tr}
            groups.append(group)
            for i in members:
                member_of[i] = group
        out_groups = []
        for g in sorted(groups, key=lambda g: min(g["literals"])):
            d = table_diff(self.base["table"], g["trial"]["table"])
            multiple = self.divisor
            for (m, a) in d["channel"]:
                row = self.base["table"][m]
                k = row.get("num_groups") if row.get("type") == "GroupNorm" else None
                if k is None and row.get("groups", 1) > 1 and row.get("groups") != row.get("in_channels"):
                    k = row["groups"]
                if k:
                    multiple = multiple * k // math.gcd(multiple, k)
            layers = sorted({f"{m}.{a}" for m, a in d["channel"]})
            out_groups.append({"literals": sorted(g["literals"]), "value": g["value"],
                               "multiple": multiple, "layers": layers,
                               "lines": sorted({by_index[i]["line"] for i in g["literals"]})})
        return {"status": "ok", "device": self.device, "params": self.base["params"],
                "divisor": self.divisor, "literals": infos, "groups": out_groups, "frozen": frozen,
                "deps": [[m, a, [[i, str(s), a0, v] for i, s, a0, v in e]] for (m, a), e in self.deps.items()],
                "seed_widths": [g["value"] for g in out_groups], "trials": self.trials}

    def _try(self, members):
        value = self.rw.literals[min(members)].value
        ok, _, tr = self.realize({i: 2 * value for i in members})
        return ok, tr


def _why_not(t: dict) -> str:
    where = {"load": "does not load", "build": "does not build", "forward": "forward pass fails"}.get(t["stage"], "fails")
    if t["stage"] == "ok" and t["mismatches"]:
        m, a, e, got = t["mismatches"][0]
        return f"forward pass fails: {m}.{a} expects {e} but gets {got}"
    return f"{where}: {t['error']}"


class Realizer(Analyzer):
    """Realize width choices from a finished analysis without redoing it (worker side)."""

    def __init__(self, source: str, spec: dict, analysis: dict):
        self.rw = Rewriter(source)
        self.spec = spec
        self.divisor = analysis["divisor"]
        self.device = analysis["device"]
        self.trials = 0
        self.expected_out = [int(spec["in_shape"][0]), int(spec["classes"])]
        self.groups = analysis["groups"]
        self.deps = {(m, a): [(i, Fraction(s), a0, v) for i, s, a0, v in e] for m, a, e in analysis["deps"]}

    def variant(self, widths: list[int]) -> dict:
        if len(widths) != len(self.groups):
            return {"status": "invalid", "error": f"{len(widths)} widths given, the model has {len(self.groups)}"}
        assign = {i: int(w) for g, w in zip(self.groups, widths) for i in g["literals"]}
        ok, final, tr = self.realize(assign)
        if not ok:
            return {"status": "invalid", "error": tr}
        return {"status": "ok", "source": self.rw(final), "params": tr["params"], "widths": list(widths)}


# -- worker handlers (JSON in, JSON out) ---------------------------------------------------------

def analyze(payload: dict) -> dict:
    try:
        a = Analyzer(payload["source"], payload["spec"], payload.get("divisor", 8))
        return a.run()
    except AnalysisError as exc:
        return {"status": "error", "error": str(exc)}


def variants(payload: dict) -> dict:
    r = Realizer(payload["source"], payload["spec"], payload["analysis"])
    return {"status": "ok", "results": [r.variant(w) for w in payload["widths"]]}


def validate(payload: dict) -> dict:
    """Build and forward one source at the spec: the check every written variant passes."""
    t = trial(payload["source"], payload["spec"], payload.get("device", "meta"))
    want = [int(payload["spec"]["in_shape"][0]), int(payload["spec"]["classes"])]
    if t["stage"] != "ok" or t["mismatches"]:
        return {"status": "invalid", "error": _why_not(t)}
    if t["out_shape"] != want:
        return {"status": "invalid", "error": f"output shape {tuple(t['out_shape'])} instead of {tuple(want)}"}
    return {"status": "ok", "params": t["params"]}
