"""`--strategy random`: uniform sampling over the configurations inside the run's limits.

Each slot's width is drawn uniformly from its choices; a draw equal to the parent's widths, or over a
limit (`--max-flops/--max-params/--max-latency-ms`, held against the table's or the pre-check's cost),
is drawn again, so that with a budget it samples uniformly inside the budget (rejection). It ignores
the parent otherwise, and may repeat a configuration already tried (a `duplicate` iteration, not trained
again: about 1 in 800 at 20 of 16,384; in a small code space far more: lenet's 75-configuration grid repeated
11 of 100 draws in issue 27's sweep). Without limits its draws are those of the `--llm random` of earlier versions in
table mode (the same rng calls in the same order), so its runs reproduce theirs.
"""
from __future__ import annotations

from search.strategies.base import WidthsStrategy


class Uniform(WidthsStrategy):
    name = "random"

    def choose(self, rng, parent, parent_row):
        tries = 20 if not self.space.limits else self.tries
        for _ in range(tries):
            w = self.space.sample(rng)
            if tuple(w) != parent and self.space.fits(w):
                return w, "uniform"
        return None
