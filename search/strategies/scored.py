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
(`--scorer` without an adapter) with the same prompts and pool is the control.

`--scorer-generate N` puts a generator's answers in the pool too: the Code Generator (`--llm`, `--adapter`
or `--llm-url`, the widths format and its grammar) answers N prompts in one batched pass
(`finetune.llm.sample_many`), answer i at the temperature `--generator-ladder`[i mod its length]; prompt 0
shows the run's feedback memory (the `llm` strategy's prompt), prompt i > 0 up to `memory` of the run's
evaluated configurations drawn with the iteration's seed (seed-dependent exemplars: the answers do not all
start from one history). Each new answer inside the limits is a pool member; the draws above fill the rest
of the pool. An answer that does not parse, repeats or is over a limit is dropped (counted in the note); a
lost generator server leaves the pool to the draws for that iteration. `--generator-prompt prefer` asks the
prefer task's prompt instead (a model tuned with `finetune --task prefer`: the seed network and its accuracy
as the reference, answers `x0.5 x1 x2 ...` relative to it), the same ladder, no exemplars.

`--pool-from STRATEGY` (`--pool-from-n K`, 8) puts another strategy's proposals in the pool too: `largest`'s next
greedy steps, `surrogate`'s top predictions, `tpe`'s or `gp`'s next asks, `evolution`'s children. The other
strategy sees the run's history (every evaluation, whoever proposed it) and is asked K times per iteration,
each answer counted as tried for the next question; the scorer then chooses among them and the draws.
(`mutation` is not offered: the pool's `--pool-local` share is that.)
"""
from __future__ import annotations

import json
import math
import random
import time

from search.strategies.base import WidthsStrategy

STARTUP, NICHES, TOP = 3, 4, 3


class Scored(WidthsStrategy):
    name = "scored"

    def __init__(self, space, cfg, llm, family: dict, generator=None, other=None):
        """llm: a `finetune.llm` backend (or a test double with `generate`); family: what every prompt
        says of the run: `parent` (the seed's name), `dataset`, `recipe` (JSON text, as corpus rows);
        generator: a `search.roles.CodeGenerator` in the widths format whose answers join the pool
        (`--scorer-generate`), or None; other: a `WidthsStrategy` over the same space whose next proposals
        join the pool (`--pool-from`), or None."""
        super().__init__(space, cfg)
        self.llm, self.family, self.generator, self.other = llm, family, generator, other
        self.other_n = max(1, int(getattr(cfg, "pool_from_n", 8))) if other is not None else 0
        self.from_other: dict[tuple, str] = {}  # the last pool's members proposed by `other` -> its note
        self.generate_n = max(0, int(getattr(cfg, "scorer_generate", 0))) if generator is not None else 0
        self.ladder = tuple(float(t) for t in getattr(cfg, "generator_ladder", None) or (0.7, 1.0, 1.3))
        self.asked = None  # the loop's prompt parts of this iteration (parent, goal, instruction, memory, ...)
        self.generated: dict[tuple, float] = {}  # the last pool's generator answers -> their temperature
        self.generator_seconds: list[float] = []
        self.generator_note = ""
        self.generator_prompt = getattr(cfg, "generator_prompt", "search")
        self.seed_row: dict = {}  # the seed network's measured row (the loop sets it): the prefer prompt's reference
        self.explore = getattr(cfg, "explore", 0.1)
        self.pool_size = max(1, int(getattr(cfg, "scorer_pool", 64)))
        self.pool_local = min(1.0, max(0.0, float(getattr(cfg, "pool_local", 0.5))))
        self.scores: dict[tuple, float | None] = {}  # the LM's score (percent) of every configuration it saw
        self.score_seconds: list[float] = []
        self._reference = None
        self.near_best: set[tuple] = set()  # the last pool's members drawn near the best evaluated ones

    def observe(self, cand, row: dict) -> None:
        super().observe(cand, row)
        if self.other is not None:  # the other strategy proposes from the run's history, as if it ran alone
            self.other.observe(cand, row)

    def proposals_of_other(self, rng, parent, parent_row) -> dict[tuple, str]:
        """`--pool-from`: the other strategy's next `--pool-from-n` choices, each new and inside the limits
        (-> its note). Asked one after another, each answer counted as tried for the next question only (the
        other's proposals are distinct: its greedy order, its model's next best); forgotten afterwards, so
        that what the run evaluates is all the other strategy learns from."""
        if self.other is None:
            return {}
        got: dict[tuple, str] = {}
        try:
            for _ in range(self.other_n):
                c = self.other.choose(random.Random(rng.randrange(2 ** 31)), parent, parent_row)
                if c is None:
                    break
                w = tuple(c[0])
                if w in got or not self.new(w):
                    break
                got[w] = c[1]
                self.other.seen.add(w)
        finally:
            self.other.seen.difference_update(got)  # each was new to the run: none is the run's own
        return got

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
    def propose(self, parent_code, parent_row, goal, instruction, memory, seed, extra: str = "",
                exclude=None) -> dict:
        self.asked = (parent_code, parent_row, goal, instruction, memory, seed, extra)
        return super().propose(parent_code, parent_row, goal, instruction, memory, seed, extra, exclude)

    def exemplars(self, rng, k: int):
        """A feedback memory of up to k of the run's evaluated configurations, drawn by `rng`, in run order."""
        from finetune.prompts import outcome_text
        from search.roles import FeedbackMemory, Triple

        picked = sorted(rng.sample(range(len(self.history)), min(k, len(self.history))))
        mem = FeedbackMemory(max(1, k))
        for i in picked:
            w, row = self.history[i]
            mem.add(Triple("", "", outcome_text(row, None), w))
        return mem

    def generate(self) -> tuple[dict[tuple, float], str]:
        """The generator's new answers inside the limits (-> temperature), and a note of what it gave."""
        if not self.generate_n or self.asked is None:
            return {}, ""
        parent_code, parent_row, goal, instruction, memory, seed, extra = self.asked
        temps = [self.ladder[i % len(self.ladder)] for i in range(self.generate_n)]
        if self.generator_prompt == "prefer":
            return self.sample_widths(*self.prefer_prompts(temps), temps, seed)
        gen = self.generator
        info = gen.parent_info(parent_code)
        if "error" in info:
            return {}, f"; generator: {info['error']}"
        k = len(memory.items) if memory.items else getattr(self.cfg, "memory", 5)
        prompts = [gen.messages(parent_code, parent_row, goal, instruction,
                                memory if i == 0 else self.exemplars(random.Random(seed * 7919 + i), k), extra, info)
                   for i in range(self.generate_n)]
        fields = {} if gen.constrain is None else \
            gen.constrain.fields(gen.fmt, **gen.format.constraint_args(parent_code, info, sorted(self.seen)))

        def read(raw):
            ans = gen.format.parse(raw, slots=info["slots"])
            return tuple(int(x) for x in ans.widths) if ans.ok else None
        return self.sample_widths(prompts, read, gen.format.token_budget(0, len(info["slots"])), temps, seed,
                                  fields or None)

    def prefer_prompts(self, temps):
        """`--generator-prompt prefer`: the prefer task's prompt (the seed network, its widths and accuracy, as
        the reference; `finetune.prefer.prefer_messages`) once per answer, and the reader of its answers: widths
        relative to the seed's, kept where each is one of its slot's choices (`finetune.prefer.parse_ratios`)."""
        from finetune.prefer import parse_ratios, prefer_messages

        acc = self.seed_row.get("accuracy")
        ref = {**self.reference(), **({"accuracy": acc} if isinstance(acc, (int, float)) else {})}
        return ([prefer_messages(ref)] * len(temps), lambda raw: parse_ratios(raw, self.space.seed_widths,
                                                                             self.space.choices),
                6 * len(self.space.choices) + 8)

    def sample_widths(self, prompts, read, max_new_tokens: int, temps, seed: int, extra=None):
        """One batched pass of the generator; each answer `read` into a width tuple (None: none) and kept where
        it is new and inside the limits. A lost server or a decoding failure: no answers, said in the note."""
        from finetune.llm import LLMServerError, sample_many

        t0 = time.perf_counter()
        try:
            raws = sample_many(self.generator.llm, prompts, temperatures=temps, seed=seed,
                               max_new_tokens=max_new_tokens, extra=extra)
        except LLMServerError as exc:
            return {}, f"; generator: llm_error {str(exc)[:80]}"
        except (RuntimeError, AssertionError, ValueError) as exc:  # a decoding failure: an outcome of this pool
            return {}, f"; generator: failed {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        finally:
            self.generator_seconds.append(time.perf_counter() - t0)
        out: dict[tuple, float] = {}
        for raw, t in zip(raws, temps):
            w = read(raw)
            if w is not None and len(w) == len(self.space.choices) and w not in out and self.space.inside(w) \
                    and self.new(w):
                out[w] = t
        return out, f"; generator: {len(out)} of {len(temps)} answers new and inside the limits"

    def draw(self, rng, parent=None, parent_row=None) -> list[tuple]:
        """The pool: the generator's new answers (`--scorer-generate`), the other strategy's next proposals
        (`--pool-from`), then new configurations inside the limits, `pool_local` of the drawn ones near the
        best evaluated ones."""
        self.generated, self.generator_note = self.generate()
        pool: dict[tuple, None] = dict.fromkeys(list(self.generated)[:self.pool_size])
        self.from_other = {w: n for w, n in self.proposals_of_other(rng, parent, parent_row).items() if w not in pool}
        for w in list(self.from_other)[:max(0, self.pool_size - len(pool))]:
            pool[w] = None
        start = len(pool)
        top = [w for w, _ in sorted(self.scored(), key=lambda t: -t[1])[:TOP]]
        local = start + round(self.pool_local * (self.pool_size - start)) if top else start
        for _ in range(self.tries):
            if len(pool) >= local:
                break
            w = self.neighbour(rng, top[rng.randrange(len(top))])
            if w not in pool and self.new(w):
                pool[w] = None
        self.near_best = set(list(pool)[start:])
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

        pool = self.draw(rng, parent, parent_row)
        if not pool:
            return None
        if rng.random() < self.explore:
            return list(pool[rng.randrange(len(pool))]), f"uniform (exploration){self.generator_note}"
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
        if pool[j] in self.generated:
            near = f", generated at T={self.generated[pool[j]]:g}"
        elif pool[j] in self.from_other:
            near = f", from {self.other.name} ({self.from_other[pool[j]]})"
        return list(pool[j]), (f"LM {lm_text}, predicted {100 * pred[j]:.2f}%, FLOPs niche {niche[j] + 1}/"
                               f"{len(edges) + 1} of {len(pool)}{near}{self.generator_note}")


def family_of(cfg, table) -> dict:
    """What the score prompts say of a run (as the corpus rows the scorer was tuned on say it)."""
    if table is not None:
        from corpus.spaces import SPACES
        from corpus.table import TABLE_SOURCE

        return {"parent": SPACES[table.space]["seed"], "dataset": "cifar10",
                "recipe": json.dumps({"source": TABLE_SOURCE, "space": table.space})}
    return {"parent": cfg.seed, "dataset": cfg.dataset,
            "recipe": json.dumps({"epochs": cfg.epochs, "train_limit": cfg.train_limit})}
