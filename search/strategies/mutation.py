"""`--strategy mutation`: a random local change of the parent (the best network, or the Pareto pick).

Table spaces: one slot (half of the time two) of the parent moves to another of its allowed widths;
a change already tried or over a limit is drawn again. Code spaces: every width of the parent times
a factor drawn log-uniformly in [0.5, 1.5], rounded to its multiple (`search.roles.RandomProposer`,
the `--llm random` of earlier versions outside table mode), limits checked by the evaluator.
"""
from __future__ import annotations

from search.strategies.base import WidthsStrategy


class Mutation(WidthsStrategy):
    name = "mutation"

    def choose(self, rng, parent, parent_row):
        for _ in range(self.tries):
            w = self.neighbour(rng, parent)
            if self.new(w):
                return list(w), "mutation of the parent"
        return None
