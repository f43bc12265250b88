"""What every non-LLM strategy shares: the history of evaluated width lists, the tried set, the parent's widths.

A strategy subclasses `WidthsStrategy` and writes `choose(rng, parent) -> (widths, note) | None`;
`propose` (the loop's proposer interface, the same as the LLM Code Generator's) turns the choice into a
candidate realised by the mutator, and `observe` (called by the loop after every stored iteration,
and for each stored iteration on `--resume`) keeps the history, so that a resumed run proposes what
the uninterrupted run would have: every choice depends only on the history and the iteration's seed.
"""
from __future__ import annotations

import random
import time


class WidthsStrategy:
    name = "widths"
    tries = 1000  # draws before a strategy says it found nothing new that fits

    def __init__(self, space, cfg):
        self.space, self.cfg = space, cfg
        self.history: list[tuple[tuple, dict]] = []  # (widths, row) of every stored iteration with widths
        self.seen: set[tuple] = {tuple(space.seed_widths)}
        self.code_widths: dict[str, tuple] = {}

    # ------------------------------------------------------------------ history
    def observe(self, cand, row: dict) -> None:
        """cand: the iteration's `search.proposal.Proposal` (its widths and code); row: its stored row."""
        w = cand.widths
        if not w:
            return
        w = tuple(w)
        self.seen.add(w)
        self.history.append((w, row))
        if cand.code:
            self.code_widths[cand.code] = w

    def scored(self) -> list[tuple[tuple, float]]:
        """(widths, accuracy) of the evaluated candidates (status ok)."""
        return [(w, r["accuracy"]) for w, r in self.history
                if r.get("status") == "ok" and isinstance(r.get("accuracy"), (int, float))]

    def best(self, seed_row: dict | None = None) -> tuple | None:
        s = self.scored()
        if seed_row is not None and isinstance(seed_row.get("accuracy"), (int, float)):
            s.append((tuple(self.space.seed_widths), seed_row["accuracy"]))
        return max(s, key=lambda x: x[1])[0] if s else None

    def parent_widths(self, parent_code: str, parent_row: dict) -> tuple:
        w = parent_row.get("widths") if parent_row else None
        if w and self.space.inside(w):
            return tuple(w)
        return self.code_widths.get(parent_code, tuple(self.space.seed_widths))

    def new(self, widths) -> bool:
        """Not tried (the seed included) and inside the run's limits."""
        return tuple(widths) not in self.seen and self.space.fits(widths)

    def neighbour(self, rng, widths) -> tuple:
        """One slot (half of the time two) of `widths` moved to another of its allowed widths."""
        w, n = list(widths), len(widths)
        for s in rng.sample(range(n), 1 if rng.random() < 0.5 or n < 2 else 2):
            w[s] = rng.choice([c for c in self.space.choices[s] if c != widths[s]] or [widths[s]])
        return tuple(w)

    def uniform_new(self, rng, tries: int | None = None) -> list[int] | None:
        for _ in range(tries or self.tries):
            w = self.space.sample(rng)
            if self.new(w):
                return w
        return None

    # ------------------------------------------------------------------ the proposer interface
    def choose(self, rng: random.Random, parent: tuple, parent_row: dict):
        raise NotImplementedError

    def propose(self, parent_code, parent_row, goal, instruction, memory, seed, extra: str = "",
                exclude=None) -> dict:
        t0 = time.perf_counter()
        got = self.choose(random.Random(seed), self.parent_widths(parent_code, parent_row), parent_row)
        spent = time.perf_counter() - t0
        if got is None:
            return {"prompt": None, "raw": None, "code": None, "status": "exhausted", "strategy_seconds": spent,
                    "error": f"{self.name}: no configuration that is new and inside the limits was found"}
        widths, note = got
        return {**self.space.candidate(widths, note), "strategy_seconds": spent}
