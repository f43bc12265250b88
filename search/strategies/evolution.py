"""`--strategy evolution`: regularized (aging) evolution (Real et al., AAAI 2019), sized for small budgets.

The population is the last `POPULATION` evaluated networks (oldest out first, whatever its accuracy);
until it is full, candidates are uniform draws inside the limits. Then each proposal samples
`SAMPLE` members uniformly, takes the most accurate and mutates one slot to another allowed width
(drawn again while the child was tried or is over a limit). Sizes for a 20-evaluation budget
(the paper's P = 100, S = 25 are for thousands): P = 8, S = 3.
"""
from __future__ import annotations

from search.strategies.base import WidthsStrategy

POPULATION, SAMPLE = 8, 3


class Evolution(WidthsStrategy):
    name = "evolution"

    def choose(self, rng, parent, parent_row):
        pop = self.scored()[-POPULATION:]
        if len(pop) < POPULATION:
            w = self.uniform_new(rng)
            return (w, "initial population: uniform") if w is not None else None
        for _ in range(self.tries):
            top = max(rng.sample(pop, SAMPLE), key=lambda x: x[1])[0]
            w = list(top)
            s = rng.randrange(len(w))
            w[s] = rng.choice([c for c in self.space.choices[s] if c != top[s]] or [top[s]])
            if self.new(w):
                return w, "child of a tournament winner"
        return None
