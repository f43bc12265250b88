"""An iteration's proposals: asked for, checked for duplicates and pre-checked, and screened to one.

    cands = propose(cfg, proposer, state, parent, goal, notes, seed, precheck)
    cand = screen(cfg, cands, plan, b, store, it)    # the one to evaluate; the others stored as screened

With `--screen zero-cost --screen-keep f` an iteration asks for M = round(1/f) proposals, pre-checks
each (sandboxed build, FLOPs, params, latency and the zero-cost proxies, without training) and keeps
the first by (has code, new and passes the pre-check, inside the bin, zero-cost vote); the vote is a
candidate's mean rank among the M over the proxies in ZC_KEYS (`vote`). Without screening there is
one proposal, and the pre-check runs only where the evaluator cannot measure (a benchmark table's
latency): the evaluation pipeline measures and checks the limits itself, in the same request.
"""
from __future__ import annotations

import dataclasses
import math

from search.proposal import Proposal

ZC_KEYS = ("zc_synflow", "zc_naswot", "zc_snip", "zc_grad_norm")  # the voters (GraSP is stored, not used)


def vote(rows: list[dict | None]) -> list[float | None]:
    """Screening score of each candidate: its mean rank among the candidates over the proxies in
    ZC_KEYS (0 = worst, 1 = best; ties share their mean rank; a proxy missing for a candidate is
    skipped for it). The proxies live on different scales, so ranks among the candidates of one
    iteration are combined rather than raw values (Abdelfattah et al.'s voting); None: no proxy."""
    out: list[list[float]] = [[] for _ in rows]
    for k in ZC_KEYS:
        have = [(r[k], i) for i, r in enumerate(rows) if r and isinstance(r.get(k), (int, float))
                and math.isfinite(r[k])]
        if len(have) < 1:
            continue
        vals = sorted(v for v, _ in have)
        for v, i in have:
            lo, hi = vals.index(v), len(vals) - 1 - vals[::-1].index(v)
            out[i].append((lo + hi) / 2 / max(1, len(vals) - 1))
    return [sum(v) / len(v) if v else None for v in out]


def violation(cfg, row: dict) -> str | None:
    """The first of the config's limits a measured row exceeds, as text; None within every limit."""
    from corpus.pipeline import violation as over

    return over(row, limits(cfg))


def limits(cfg) -> dict:
    """--max-flops, --max-params, --max-latency-ms as the evaluation pipeline's limits."""
    return {k: v for k, v in (("flops", cfg.max_flops), ("params", cfg.max_params),
                              ("latency_ms", cfg.max_latency_ms)) if v is not None}


def pre_failure(pre: dict | None, cfg) -> dict | None:
    """The row of a candidate the pre-check rejects (does not build, or over a limit), else None."""
    if pre is None:
        return None
    if pre.get("status") != "ok":
        return {"status": pre.get("status") or "crash", "error": pre.get("error")}
    why = violation(cfg, pre)
    if why:
        return {**{k: pre.get(k) for k in ("flops", "params", "latency_ms")}, "status": "constraint", "error": why}
    return None


def propose(cfg, proposer, state, parent: dict, goal: dict, notes: str, seed: int, precheck=None) -> list[Proposal]:
    """The iteration's proposals, each with its duplicate check (`dup`) and pre-check row (`pre`)."""
    problem, instruction = state.pending
    cands = []
    for j in range(cfg.proposals_per_iteration):
        prop = sample(cfg, proposer, state, parent, goal, instruction, notes, seed + 1_000_003 * j)
        if precheck is not None and prop.code and prop.dup is None:
            prop = dataclasses.replace(prop, pre=precheck(prop.code))
        cands.append(prop)
    if len(cands) > 1:  # the vote of the zero-cost proxies among this iteration's proposals
        cands = [c.with_pre_score(v) for c, v in zip(cands, vote([c.pre for c in cands]))]
    return cands


def sample(cfg, proposer, state, parent: dict, goal: dict, instruction: str, notes: str, seed: int) -> Proposal:
    """One proposal: up to `cfg.samples` answers, the first that is not a network already tried (its
    `dup` None); a repeat's widths are named in the notes of the next ask. `repeats`: answers that
    repeated a tried network (the last one counts too when every answer was a repeat)."""
    repeats, extra = 0, notes
    for k in range(max(1, cfg.samples)):
        prop = Proposal.of(proposer.propose(parent["code"], parent["row"], goal, instruction, state.memory,
                                            seed + 7_919 * k, extra=extra,
                                            exclude=state.widths_seen if cfg.exclude_tried else None))
        prop = dataclasses.replace(prop, dup=state.tried(prop.code))
        if prop.dup is None:
            break
        repeats += 1
        if prop.widths:
            state.widths_seen.add(prop.widths)
            from finetune.formats import widths_text

            extra = notes + f"Not {widths_text(list(prop.widths))}: already tried ({prop.dup}).\n"
    return dataclasses.replace(prop, repeats=repeats, samples=k + 1)


def rank(cand: Proposal, cfg, plan, b: int | None) -> tuple:
    """Screening order (higher first): has code, new and passes the pre-check, inside the bin, zero-cost score."""
    pre = cand.pre
    if cand.code is None:
        return (0, 0, 0, 0.0)
    if cand.dup is not None or pre_failure(pre, cfg):
        return (1, 0, 0, 0.0)
    if pre is None:
        return (1, 1, 1, 0.0)
    return (1, 1, int(plan.in_bin(pre, b) is not False), float(pre.get("zc_score") or 0.0))


def screen(cfg, cands: list[Proposal], plan, b: int | None, store, it: int) -> Proposal:
    """The candidate to evaluate; the others go to the store's `screened` table with why."""
    pick = max(range(len(cands)), key=lambda j: (rank(cands[j], cfg, plan, b), -j))
    for j, c in enumerate(cands):
        if j == pick:
            continue
        if rank(c, cfg, plan, b)[1]:
            status, error = "screened", None
        else:
            why = failure(c, cfg) or {"status": "no_code"}
            status, error = why["status"], why.get("error")
        store.add_screened(it, j, {"code": c.code, "raw": c.raw, "status": status, "error": error,
                                   "metrics": None if c.pre is None else dict(c.pre)})
    return cands[pick]


def failure(cand: Proposal, cfg) -> dict | None:
    """The row of a candidate that is not evaluated: no code, an LLM failure, a duplicate, or a pre-check
    failure; None when it goes on to the evaluation."""
    if cand.code is None:
        return {"status": cand.status or "no_code",
                "error": cand.error or "the answer contains no parseable Python code"}
    if cand.dup is not None:
        return {"status": "duplicate", "error": f"the same network as {cand.dup} (not trained again)"}
    return pre_failure(cand.pre, cfg)
