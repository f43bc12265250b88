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
        n = len(self.space.choices)
        for _ in range(self.tries):
            w = list(parent)
            for s in rng.sample(range(n), 1 if rng.random() < 0.5 or n < 2 else 2):
                w[s] = rng.choice([c for c in self.space.choices[s] if c != parent[s]] or [parent[s]])
            if self.new(w):
                return w, "mutation of the parent"
        return None
