"""The state of a search, held by one object and rebuilt from the run store by one function.

    state = SearchState.restore(cfg, store, seed_code, seed_row)   # a new run or a resumed one
    state.tried(code)        # "iteration 3" when the same network (up to formatting) was tried
    state.record(it, code, row, ...)                              # after each evaluated candidate

What it holds: the best network, the Pareto archive (accuracy vs the hw metric), the fingerprints of
every network tried (duplicates are failures, never trained again), the feedback memory of the last
K triples, the pending (problem, instruction) for the next proposal, the knowledge base and the
records of the current knowledge-base round, and the count of LLM failures in a row.
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field

from search.pareto import ParetoArchive, cost_of
from search.roles import FeedbackMemory, Triple

INITIAL_PROBLEM = "baseline network, nothing tried yet"
INITIAL_MODIFICATION = "change the widths of a few layers moderately to raise accuracy"


def fingerprint(code: str) -> str:
    """Identity of a network's source up to formatting and comments (its AST), for duplicate checks."""
    try:
        from finetune.formats import parse_quietly

        text = ast.dump(parse_quietly(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        text = " ".join(code.split())
    return hashlib.sha256(text.encode()).hexdigest()


def better(row: dict, best: dict | None) -> bool:
    return row.get("status") == "ok" and row.get("accuracy") is not None and \
        (best is None or row["accuracy"] > best["accuracy"])


@dataclass
class SearchState:
    seed_code: str
    seed_row: dict
    hw_metric: str
    partition_metric: str
    memory: FeedbackMemory
    best_code: str = ""
    best_row: dict = field(default_factory=dict)
    archive: ParetoArchive = field(default_factory=ParetoArchive)
    seen: dict = field(default_factory=dict)
    widths_seen: set = field(default_factory=set)  # width lists answered so far (widths format)
    pending: tuple[str, str] = (INITIAL_PROBLEM, INITIAL_MODIFICATION)
    kb: list[str] | None = None
    kb_version: int = 0
    round_records: list = field(default_factory=list)
    done: int = 0
    llm_errors: int = 0

    def _archive(self, code: str, row: dict, it: int | None) -> bool:
        cost = cost_of(row, self.hw_metric)
        return row.get("status") == "ok" and cost is not None and self.archive.add(
            {"accuracy": row["accuracy"], "cost": cost, "code": code, "row": row, "it": it,
             "pcost": cost_of(row, self.partition_metric)})

    @classmethod
    def restore(cls, cfg, store, seed_code: str, seed_row: dict) -> "SearchState":
        """The state after the iterations stored in `store` (none for a new run)."""
        from search.knowledge import INITIAL

        s = cls(seed_code, seed_row, cfg.hw_metric, cfg.partition_metric, FeedbackMemory(cfg.memory),
                best_code=seed_code, best_row=seed_row, seen={fingerprint(seed_code): "the seed network"})
        s._archive(seed_code, seed_row, None)
        kb_hist = store.kb_versions()
        if cfg.knowledge_base and not kb_hist:
            store.add_kb(0, -1, INITIAL, "initial")
            kb_hist = store.kb_versions()
        if cfg.knowledge_base:
            s.kb, s.kb_version = kb_hist[-1]["items"], kb_hist[-1]["version"]
        done = store.iterations()
        for rec in done:
            m, x = rec["metrics"] or {}, rec["extra"] or {}
            if rec["is_best"]:
                s.best_code, s.best_row = rec["code"], m
            s._archive(rec["code"], m, rec["it"])
            if rec["code"]:
                s.seen.setdefault(fingerprint(rec["code"]), f"iteration {rec['it']}")
            lost = rec["status"] == "llm_error"
            s.llm_errors = s.llm_errors + 1 if lost else 0
            if x.get("answer_widths"):
                s.widths_seen.add(tuple(x["answer_widths"]))
            if not lost:
                w = x.get("answer_widths")
                s.memory.add(Triple(rec["problem"] or "", rec["instruction"] or "", rec["outcome"] or "",
                                    tuple(w) if w else None))
            if kb_hist and rec["it"] > kb_hist[-1]["after_it"]:
                s.round_records.append({**x, **m, "status": rec["status"], "error": rec["error"]})
        if done:
            s.pending = (done[-1]["next_problem"], done[-1]["modification"])
        s.done = len(done)
        return s

    def tried(self, code: str | None) -> str | None:
        """Where the same network was tried before (the seed, an iteration), else None."""
        return self.seen.get(fingerprint(code)) if code else None

    def admit(self, it: int, code: str | None, row: dict, widths=None) -> tuple[bool, bool]:
        """Take an evaluated candidate in (`widths`: its answer's width list, if any): (entered the
        Pareto archive, is the new best)."""
        if code:
            self.seen.setdefault(fingerprint(code), f"iteration {it}")
        if widths:
            self.widths_seen.add(tuple(widths))
        entered = self._archive(code, row, it)
        is_best = better(row, self.best_row)
        if is_best:
            self.best_code, self.best_row = code, row
        return entered, is_best

    def advance(self, it: int, tried: bool, diagnosis: tuple[str, str]) -> None:
        """After iteration `it`: the next (problem, instruction); `tried` False when the LLM failed."""
        self.llm_errors = 0 if tried else self.llm_errors + 1
        self.pending = diagnosis
        self.done = it + 1
