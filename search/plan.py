"""Where each iteration aims: its complexity bin and the network it starts from (its parent).

    plan = Plan(cfg, edges)
    b = plan.bin(it)                         # None without bins
    parent = plan.parent(state, it, b)       # {"code", "row", "it"}: the best, or a Pareto archive member
    text = plan.notes(b, parent["row"], state)   # the bin's budget and the knowledge base, for the prompt

Accuracy objective: the parent is the best network so far. Pareto objective (`--objective pareto`):
a member of the archive, `ParetoArchive.pick`: the most accurate member inside the iteration's bin,
else the one nearest to it; without bins, round-robin over the archive sorted by cost. With `--bins
N`, iteration `it` targets bin `it % N` and the prompt states the bin's range.
"""
from __future__ import annotations

from search.pareto import bin_of, bin_range, bin_text, cost_of, fmt


class Plan:
    def __init__(self, cfg, edges: list[float] | None):
        self.cfg, self.edges = cfg, list(edges or [])
        self.pareto = cfg.objective == "pareto"

    @property
    def round_size(self) -> int:
        """Iterations per knowledge-base round: one pass over the bins, else --round-size."""
        return len(self.edges) + 1 if self.edges else self.cfg.round_size

    def bin(self, it: int) -> int | None:
        return it % (len(self.edges) + 1) if self.edges else None

    def parent(self, state, it: int, b: int | None) -> dict:
        if self.pareto and b is not None:
            return state.archive.pick(*bin_range(b, self.edges), it, key="pcost")
        if self.pareto:
            return state.archive.pick(None, None, it)
        return {"code": state.best_code, "row": state.best_row, "it": None}

    def in_bin(self, row: dict, b: int | None) -> bool | None:
        return None if b is None else bin_of(cost_of(row, self.cfg.partition_metric), self.edges) == b

    def notes(self, b: int | None, parent_row: dict, state) -> str:
        from search.knowledge import render

        text = ""
        if b is not None:
            m = self.cfg.partition_metric
            now = cost_of(parent_row, m)
            text += (f"Target complexity bin {b + 1} of {len(self.edges) + 1}: {bin_text(b, self.edges, m)}"
                     f"{f' (the network you start from: {fmt(now, m)})' if now is not None else ''}. "
                     f"Write a network inside this range, as accurate as possible.\n")
        if state.kb is not None:
            text += render(state.kb, state.kb_version)
        return text
