"""`--strategy tpe` and `--strategy gp`: Optuna's TPESampler and GPSampler over the categorical slots.

Each slot is one categorical parameter (`s0`, `s1`, ...) over the indices of its allowed widths.
Every proposal builds an in-memory study from the run's history (each stored candidate a finished
trial: an evaluated one with its accuracy, a failed one as a FAIL trial, so a crash or a broken
network is a failed trial, not a crash of the run) and asks the sampler, seeded with the iteration's
seed: the proposals depend only on the history, and a resumed run proposes what the uninterrupted run
would have. Limits are each trial's constraints (Optuna 5: `create_trial(constraints=...)` for the
history, `Trial.set_constraint` for an asked trial; one per limit, the cost minus the limit relative to
the limit, from the table or the pre-check: every trial carries the same names, as GPSampler requires;
the deprecated `constraints_func` never saw the history's trials, so GPSampler stopped with "constraint
names must be the same" and TPESampler took every past trial for feasible); an asked configuration over a limit, or tried before, is told to the study (infeasible,
or its known accuracy) without an evaluation and the sampler is asked again, up to `ASKS` times; then a
uniform draw inside the limits. Sizes for a 20-evaluation budget: 5 startup trials (Optuna's default 10
would be half the budget), then the model.
"""
from __future__ import annotations

from search.strategies.base import WidthsStrategy
from search.strategies.space import LIMIT_KEYS

ASKS, STARTUP = 100, 5


class OptunaStrategy(WidthsStrategy):
    name = "tpe"

    def sampler(self, seed: int):
        import optuna

        if self.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP, warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP, multivariate=True,
                                          warn_independent_sampling=False)

    def violation(self, widths) -> dict[str, float]:
        """{limit key: (cost - limit) / limit} for each limit of the run (<= 0: within it; an unknown cost
        counts as over); {} without limits."""
        c = self.space.cost(widths) or {}
        out = {}
        for k, m in LIMIT_KEYS:
            if k in self.space.limits:
                v = c.get(m)
                out[k] = float(v - self.space.limits[k]) / max(abs(self.space.limits[k]), 1.0) if v is not None else 1.0
        return out

    def distributions(self):
        from optuna.distributions import CategoricalDistribution

        return {f"s{i}": CategoricalDistribution(list(range(len(c)))) for i, c in enumerate(self.space.choices)}

    def choose(self, rng, parent, parent_row):
        import logging

        import optuna
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(logging.WARNING)
        dists = self.distributions()
        study = optuna.create_study(direction="maximize", sampler=self.sampler(rng.randrange(2 ** 31)))
        known: dict[tuple, float | None] = {}
        floor = min([a for _, a in self.scored()] or [0.0])
        for w, row in self.history:
            if not self.space.inside(w):
                continue
            params = {f"s{i}": j for i, j in enumerate(self.space.index(w))}
            acc = row.get("accuracy") if row.get("status") in ("ok", "constraint") else None
            acc = acc if isinstance(acc, (int, float)) else None
            study.add_trial(create_trial(state=TrialState.COMPLETE if acc is not None else TrialState.FAIL,
                                         value=acc, params=params, distributions=dists,
                                         constraints=self.violation(w) or None))
            known[tuple(w)] = acc
        for _ in range(ASKS):
            trial = study.ask(dists)
            w = self.space.widths([trial.params[f"s{i}"] for i in range(len(self.space.choices))])
            if self.new(w):
                study.tell(trial, state=TrialState.FAIL)  # the real outcome comes with the next history
                return w, f"{self.name} sampler"
            for key, value in self.violation(w).items():
                trial.set_constraint(key, value)
            acc = known.get(tuple(w))
            if tuple(w) == tuple(self.space.seed_widths) and acc is None:
                acc = floor
            study.tell(trial, acc if acc is not None else floor)
        w = self.uniform_new(rng)
        return (w, f"{self.name}: {ASKS} asks repeated or broke a limit: uniform") if w is not None else None


class GP(OptunaStrategy):
    name = "gp"
