"""A candidate network, as one frozen record from its proposal to its stored row.

    cand = Candidate(code=source, widths=(64, 384, 384, 384, 128, 768, 512), params=1_234_567,
                     answer_format="widths", proposer="random", iteration=3, parent=1)
    row = evaluator.evaluate(cand)                      # corpus.evaluators: any registered evaluator
    cand = dataclasses.replace(cand, code=repaired)     # a change is a new record, never an edit in place

`widths` and `params` are known where the mutator realised the network itself (a widths answer, a
non-LLM strategy's choice: the seed built with those widths, sandboxed): a table evaluator then looks
the widths up without building anything, and holds `params` against the table's to refuse another
structure. Elsewhere they are None and an evaluator that needs them builds the network (sandboxed).
`fingerprint` names the network: the sha256 of its source, else of its width list (a choice that did
not build), else None. Provenance (`proposer`: the strategy or LLM that proposed it, `iteration`,
`parent`: the iteration it started from where the plan names one, a Pareto archive member; None for
the best network so far) travels with it to the evaluator.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    code: str | None
    widths: tuple[int, ...] | None = None
    params: int | None = None  # the mutator's count of the realised network; None where nothing built it here
    answer_format: str | None = None  # widths | diff | code (finetune.formats), None for a non-LLM strategy
    proposer: str | None = None  # the strategy (random, tpe, ...) or the LLM that proposed it
    iteration: int | None = None
    parent: int | None = None  # the iteration of the network it started from (None: the best so far)

    def __post_init__(self):
        if self.widths is not None:  # a list from a strategy or a parsed answer: hashable and unchangeable here
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def fingerprint(self) -> str | None:
        if self.code is not None:
            return hashlib.sha256(self.code.encode()).hexdigest()
        if self.widths is not None:
            return hashlib.sha256(repr(list(self.widths)).encode()).hexdigest()
        return None


def as_candidate(cand: Candidate | str) -> Candidate:
    """A Candidate from itself or from bare source code (`corpus profile`, `finetune evaluate`, tests)."""
    return cand if isinstance(cand, Candidate) else Candidate(code=cand)
