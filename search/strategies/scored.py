"""`--strategy scored --scorer MODEL [--scorer-adapter DIR]`: a language model as a scorer of candidates.

    python -m search run --strategy scored --scorer smollm2-135m --scorer-adapter adapters/score_mobilenet \
        --evaluator table:cbm-resnet --iterations 20 --out runs/scored-0

Each iteration:
1. draws `--scorer-pool N` new configurations inside the run's limits (`search.strategies.space`; a
   table's costs, else the pre-check's): once the run has evaluations, a share `--pool-local` (0.5) of them
   as one- or two-slot changes of its `TOP` best evaluated configurations (the candidate pool of BANANAS,
   White et al. 2021: mutations of the best), the rest uniformly over the seed's width slots;
2. scores them in one batched pass: each is described as the score task's training rows describe a
   network (`finetune.score.score_messages`: the family, the data and recipe, per slot its width
   relative to the seed's, FLOPs and params relative to the seed's), and the model answers its accuracy
   (`finetune.score.llm_score_texts`: digit-constrained greedy decoding in process, the prompts' common
   prefix -- system, family and data lines -- run once and its cache shared; any backend otherwise);
   the scores of a configuration are remembered for the run;
3. recalibrates on the run's own evaluations (the feedback memory used as data): once `STARTUP`
   candidates are evaluated, a ridge head over (the LM's score, one indicator per slot width) is refit on
   them after every evaluation, and its prediction replaces the raw score;
4. picks by an acquisition with an exploration share and FLOPs niches: with probability `--explore` a
   uniform member of the pool; else the highest `value = prediction + bonus / sqrt(1 + n)`, where n counts
   the run's evaluations in the candidate's FLOPs niche (quartiles of the pool's FLOPs) and `bonus` is
   half the spread (std) of the pool's predictions: 20 evaluations cannot all collapse onto one region.

A candidate the model's answer does not give a number for gets the pool's median score. The frozen model
(`--scorer` without an adapter) with the same prompts and pool is the control. Issue 29's generator side
(the Code Generator's answers at a temperature ladder as pool members) is not here yet.
"""
from __future__ import annotations

import json
import math
import time

from search.strategies.base import WidthsStrategy

STARTUP, NICHES, TOP = 3, 4, 3


class Scored(WidthsStrategy):
    name = "scored"

    def __init__(self, space, cfg, llm, family: dict):
        """llm: a `finetune.llm` backend (or a test double with `generate`); family: what every prompt
        says of the run: `parent` (the seed's name), `dataset`, `recipe` (JSON text, as corpus rows)."""
        super().__init__(space, cfg)
        self.llm, self.family = llm, family
        self.explore = getattr(cfg, "explore", 0.1)
        self.pool_size = max(1, int(getattr(cfg, "scorer_pool", 64)))
        self.pool_local = min(1.0, max(0.0, float(getattr(cfg, "pool_local", 0.5))))
        self.scores: dict[tuple, float | None] = {}  # the LM's score (percent) of every configuration it saw
        self.score_seconds: list[float] = []
        self._reference = None
        self.near_best: set[tuple] = set()  # the last pool's members drawn near the best evaluated ones

    # ------------------------------------------------------------------ prompts
    def row(self, widths) -> dict:
        cost = self.space.cost(widths) or {}
        return {**self.family, "widths": list(widths), "flops": cost.get("flops"), "params": cost.get("params")}

    def reference(self) -> dict:
        if self._reference is None:
            self._reference = self.row(self.space.seed_widths)
        return self._reference

    def score(self, pool: list[tuple]) -> list[float | None]:
        """The LM's score of each configuration (percent), one batched pass over those not scored yet."""
        from finetune.score import llm_score_texts, parse_score, score_messages

        todo = [w for w in dict.fromkeys(pool) if w not in self.scores]
        if todo:
            t0 = time.perf_counter()
            ref = self.reference()
            texts = llm_score_texts(self.llm, [score_messages(self.row(w), ref) for w in todo],
                                    batch_size=len(todo))
            self.score_seconds.append(time.perf_counter() - t0)
            for w, t in zip(todo, texts):
                self.scores[w] = parse_score(t)
        return [self.scores[w] for w in pool]

    # ------------------------------------------------------------------ the choice
    def draw(self, rng) -> list[tuple]:
        """The pool: new configurations inside the limits, `pool_local` of them near the best evaluated ones."""
        pool: dict[tuple, None] = {}
        top = [w for w, _ in sorted(self.scored(), key=lambda t: -t[1])[:TOP]]
        local = round(self.pool_local * self.pool_size) if top else 0
        for _ in range(self.tries):
            if len(pool) >= local:
                break
            w = self.neighbour(rng, top[rng.randrange(len(top))])
            if w not in pool and self.new(w):
                pool[w] = None
        self.near_best = set(pool)
        for _ in range(self.tries):
            if len(pool) >= self.pool_size:
                break
            w = tuple(self.space.sample(rng))
            if w not in pool and self.new(w):
                pool[w] = None
        return list(pool)

    def onehot(self, widths) -> list[float]:
        return [1.0 if w == x else 0.0 for w, c in zip(widths, self.space.choices) for x in c]

    def predict(self, pool: list[tuple], lm: list[float]) -> list[float]:
        """Accuracy (fraction) predicted per pool member: the LM's score, recalibrated on the run's own rows."""
        import numpy as np
        from sklearn.linear_model import Ridge

        mine = self.scored()
        if len(mine) < STARTUP:
            return [s / 100 for s in lm]
        own = self.score([w for w, _ in mine])  # cached; after --resume, scored again (greedy: the same numbers)
        fill = float(np.median([s for s in own + lm if s is not None] or [0.0]))
        x = lambda w, s: [(s if s is not None else fill) / 100, *self.onehot(w)]  # noqa: E731
        head = Ridge(alpha=1.0).fit([x(w, s) for (w, _), s in zip(mine, own)], [a for _, a in mine])
        return [float(v) for v in head.predict(np.array([x(w, s) for w, s in zip(pool, lm)]))]

    def niches(self, pool: list[tuple]) -> tuple[list[int], list[float]]:
        """Each pool member's FLOPs niche (quartiles of the pool's FLOPs), and the niches' inner edges."""
        import numpy as np

        flops = [(self.space.cost(w) or {}).get("flops") for w in pool]
        known = [f for f in flops if isinstance(f, (int, float))]
        if len(known) < NICHES:
            return [0] * len(pool), []
        edges = [float(e) for e in np.quantile(known, [i / NICHES for i in range(1, NICHES)])]
        return [int(np.searchsorted(edges, f, side="right")) if isinstance(f, (int, float)) else 0 for f in flops], \
            edges

    def choose(self, rng, parent, parent_row):
        import numpy as np

        pool = self.draw(rng)
        if not pool:
            return None
        if rng.random() < self.explore:
            return list(pool[rng.randrange(len(pool))]), "uniform (exploration)"
        raw = self.score(pool)
        known = [s for s in raw if s is not None]
        fill = float(np.median(known)) if known else 0.0
        lm = [s if s is not None else fill for s in raw]
        pred = self.predict(pool, lm)
        niche, edges = self.niches(pool)
        visits = [0] * NICHES
        for w, _ in self.history:
            f = (self.space.cost(w) or {}).get("flops")
            if edges and isinstance(f, (int, float)):
                visits[int(np.searchsorted(edges, f, side="right"))] += 1
        bonus = 0.5 * float(np.std(pred)) if len(pred) > 1 else 0.0
        value = [p + bonus / math.sqrt(1 + visits[n]) for p, n in zip(pred, niche)]
        j = max(range(len(pool)), key=lambda i: (value[i], -i))
        lm_text = f"{raw[j]:.1f}" if raw[j] is not None else "no number"
        near = ", near the best" if pool[j] in self.near_best else ""
        return list(pool[j]), (f"LM {lm_text}, predicted {100 * pred[j]:.2f}%, FLOPs niche {niche[j] + 1}/"
                               f"{len(edges) + 1} of {len(pool)}{near}")


def family_of(cfg, table) -> dict:
    """What the score prompts say of a run (as the corpus rows the scorer was tuned on say it)."""
    if table is not None:
        from corpus.spaces import SPACES
        from corpus.table import TABLE_SOURCE

        return {"parent": SPACES[table.space]["seed"], "dataset": "cifar10",
                "recipe": json.dumps({"source": TABLE_SOURCE, "space": table.space})}
    return {"parent": cfg.seed, "dataset": cfg.dataset,
            "recipe": json.dumps({"epochs": cfg.epochs, "train_limit": cfg.train_limit})}
