"""A proposal, one frozen record from the proposer's answer to the stored row.

    prop = Proposal.of(proposer.propose(...))                 # the answer (a mapping) as the record
    prop = dataclasses.replace(prop, dup=state.tried(prop.code))  # a change is a new record, never an edit
    cand = prop.candidate("tpe", iteration=3, parent=1)       # the corpus.candidate.Candidate evaluated

A proposer (`search.strategies`, `search.roles.CodeGenerator`) answers with a mapping: the network
(`code`, `widths` and `params` where the mutator realised it, the answer `format`), what produced it
(`prompt`, `raw`, `parse_status`, `constrained`, `strategy_seconds`) or why there is none (`status`,
`error`); any other keys (a diff's `edits`, `fuzzy`) are kept read-only in `detail`. The iteration adds
what it learns about it, each as a new record: `dup` (the earlier iteration it repeats), `pre` (its
pre-check row), `repeats`/`samples` (answers asked), `repair` and `llm_code` (the shape repair of a
channel mismatch: the code evaluated is the repaired one, `llm_code` the proposer's).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from corpus.candidate import Candidate

def frozen_map(m: Mapping | None) -> Mapping | None:
    return None if m is None else m if isinstance(m, MappingProxyType) else MappingProxyType(dict(m))


@dataclass(frozen=True)
class Proposal:
    code: str | None = None
    widths: tuple[int, ...] | None = None
    params: int | None = None
    format: str | None = None  # finetune.formats' answer format; None for a non-LLM strategy
    prompt: Any = None  # the chat messages asked (an LLM proposer), None otherwise
    raw: str | None = None
    status: str | None = None  # why there is no code: parse_error | llm_error | exhausted | ...
    error: str | None = None
    parse_status: str | None = None
    constrained: bool | None = None
    strategy_seconds: float | None = None
    detail: Mapping | None = None  # the answer's other keys (read-only; None: none)
    dup: str | None = None  # "iteration 3" / "the seed": the same network was tried before
    pre: Mapping | None = None  # the pre-check row (screening, or what the evaluator cannot measure)
    repeats: int = 0
    samples: int = 1
    repair: Mapping | None = None  # status, changes, reason, text of the shape repair
    llm_code: str | None = None  # the proposer's code, where the repaired code replaced it

    def __post_init__(self):
        if self.widths is not None:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        for name in ("detail", "pre", "repair"):
            object.__setattr__(self, name, frozen_map(getattr(self, name)))

    @classmethod
    def of(cls, answer: Mapping) -> Proposal:
        """The record of a proposer's answer; keys that are not fields go to `detail`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"detail"}
        known = {k: v for k, v in answer.items() if k in names}
        return cls(**known, detail={k: v for k, v in answer.items() if k not in names} or None)

    def candidate(self, proposer: str | None, iteration: int | None = None, parent: int | None = None) -> Candidate:
        """What the evaluator is given (`corpus.candidate`): the network and its provenance."""
        return Candidate(code=self.code, widths=self.widths, params=self.params, answer_format=self.format,
                         proposer=proposer, iteration=iteration, parent=parent)

    def with_pre_score(self, score: float | None) -> Proposal:
        """The same proposal with the zero-cost vote among its iteration's proposals in its pre-check row."""
        return self if self.pre is None else dataclasses.replace(self, pre={**self.pre, "zc_score": score})
