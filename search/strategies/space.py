"""The space a non-LLM strategy searches: one list of allowed widths per slot of the seed network.

    space = table_space(pool, seed_code, spec, ev)        # a Channel-Bench-Macro table: 7 slots x 4 widths
    space = code_space(pool, seed_code, spec, precheck)   # any seed: the mutator's slots, a grid of widths
    cand = space.candidate(widths)                         # realised by the mutator from the seed, sandboxed

Slots are the mutator's width groups of the seed (`mutator.analysis`): every coupled layer follows a
slot's width. A table space's choices are the table's; a code space's are the seed's width times
`FACTORS`, rounded to the slot's multiple (the grid the mutator's random variants draw from, made
discrete so that model-based strategies can enumerate it).

Cost without training (`cost(widths)`): a table's FLOPs and params (its own count, the one a
`--max-flops` budget means in table mode), else the pre-check's (a sandboxed build and count of the
realised network, memoised). `fits(widths)` holds `--max-flops/--max-params/--max-latency-ms` against
that cost; a width list whose cost cannot be measured does not fit. The evaluator checks the limits
again on its own row: a strategy's pre-filter saves evaluations, it decides nothing.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)
# (limit key, cost key): the limits are `search.screening.limits(cfg)`'s, keyed as the evaluation pipeline's
# ("flops", not "max_flops": with the flag's names here no limit matched, and every width list "fit")
LIMIT_KEYS = (("flops", "flops"), ("params", "params"), ("latency_ms", "latency_ms"))


@dataclass
class SlotSpace:
    choices: list[list[int]]
    seed_widths: list[int]
    realize: object  # widths -> Variant (mutator.calls)
    measure: object = None  # widths -> {"flops", "params", ...} or None (cannot be measured)
    limits: dict = field(default_factory=dict)  # {"flops": ..., ...} (`screening.limits`): only the limits that are set
    table: bool = False
    _cost: dict = field(default_factory=dict)
    _variants: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    def index(self, widths) -> tuple[int, ...]:
        return tuple(c.index(w) for c, w in zip(self.choices, widths))

    def widths(self, index) -> list[int]:
        return [c[i] for c, i in zip(self.choices, index)]

    def inside(self, widths) -> bool:
        return widths is not None and len(widths) == len(self.choices) and \
            all(w in c for w, c in zip(widths, self.choices))

    def all(self):
        """Every width list of the space (callers check `size` first)."""
        return (list(w) for w in itertools.product(*self.choices))

    def sample(self, rng) -> list[int]:
        return [int(rng.choice(c)) for c in self.choices]

    def cost(self, widths) -> dict | None:
        key = tuple(widths)
        if key not in self._cost:
            self._cost[key] = self.measure(list(widths)) if self.measure is not None else None
        return self._cost[key]

    def fits(self, widths) -> bool:
        if not self.limits:
            return True
        unknown = set(self.limits) - {k for k, _ in LIMIT_KEYS}
        if unknown:  # a limit this space cannot hold would be silently ignored
            raise ValueError(f"limits {sorted(unknown)} are not among {[k for k, _ in LIMIT_KEYS]}")
        c = self.cost(widths)
        if c is None:
            return False
        return all(c.get(m) is not None and c[m] <= self.limits[k] for k, m in LIMIT_KEYS if k in self.limits)

    def variant(self, widths):
        key = tuple(widths)
        if key not in self._variants:
            self._variants[key] = self.realize(list(widths))
        return self._variants[key]

    def candidate(self, widths, note: str = "") -> dict:
        """The loop's candidate of a width list: the seed realised with those widths (or why not)."""
        v = self.variant(widths)
        raw = f"widths {list(widths)}" + (f" ({note})" if note else "")
        if not v.ok:
            return {"prompt": None, "raw": raw, "code": None, "status": v.status, "widths": list(widths),
                    "error": f"widths {list(widths)} do not build: {v.error}"}
        # the mutator's parameter count: a table holds it against its own without building the network again
        return {"prompt": None, "raw": raw, "code": v.source, "widths": list(widths), "params": v.params}


def grid(groups: list[dict], factors=FACTORS) -> list[list[int]]:
    """Per width group of the mutator's analysis: the seed's width times each factor, rounded to the
    group's multiple (at least one multiple), without repeats, in increasing order."""
    out = []
    for g in groups:
        m, v = int(g["multiple"]), float(g["value"])
        out.append(sorted({max(m, int(round(v * f / m)) * m) for f in factors}))
    return out


def _realizer(pool, seed_code: str, spec: dict, analysis, remember=None):
    from mutator.calls import realize

    def make(widths):
        v = realize(pool, seed_code, spec, analysis, [widths])[0]
        if v.ok and remember is not None:  # the table looks the widths up without building the network again
            remember(v.source, list(widths), v.params)
        return v

    return make


def table_space(pool, seed_code: str, spec: dict, ev, limits: dict, analysis) -> SlotSpace:
    """A table's space: its choices, costs from its rows (no build), candidates realised from the seed."""
    from corpus.spaces import SPACES, key_of

    choices = [list(c) for c in SPACES[ev.space]["choices"]]

    def measure(widths):
        entry = ev.table.get(key_of(widths, ev.space))
        if entry is None:
            return None
        lat = ev.latency.get(key_of(widths, ev.space)) if ev.latency is not None else None
        return {"flops": entry["flops"], "params": entry["params"], "latency_ms": lat}

    return SlotSpace(choices, list(analysis.seed_widths), _realizer(pool, seed_code, spec, analysis, ev.remember),
                     measure, limits, table=True)


def code_space(pool, seed_code: str, spec: dict, precheck, limits: dict, analysis) -> SlotSpace:
    """Any seed network: the mutator's slots, `grid` choices, costs from the pre-check (sandboxed)."""
    realize = _realizer(pool, seed_code, spec, analysis)
    space = SlotSpace(grid(analysis.groups), list(analysis.seed_widths), realize, None, limits)

    def measure(widths):
        v = space.variant(widths)
        if not v.ok or precheck is None:
            return None
        pre = precheck(v.source)
        return pre if pre.get("status") == "ok" else None

    space.measure = measure
    return space
