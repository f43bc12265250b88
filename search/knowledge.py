"""The knowledge base: a short list of design heuristics that co-evolves with the search.

Version 0 is `INITIAL`. After each round (one pass over the complexity bins, or `--round-size`
iterations without bins) the Prompt Improver rewrites the list from that round's results (which
candidates widened or narrowed the network relative to their parent, in which bin, and whether
that helped or hurt); the new version goes to the run store's `kb` table and into every later Code
Generator prompt. Without an improver LLM, `rule_rewrite` writes the list from the same statistics.
"""
from __future__ import annotations

import re

MAX_ITEMS = 6
INITIAL = ["Change only channel widths; keep every layer's input channels equal to the previous layer's output.",
           "Narrowing the widest layers cuts cost most; widen narrow early layers to raise accuracy."]


def render(items: list[str], version: int) -> str:
    body = "\n".join(f"- {h}" for h in items) if items else "- (none yet)"
    return f"Design heuristics learned so far (knowledge base v{version}):\n{body}\n"


_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.{8,})$", re.M)


def parse(text: str | None) -> list[str] | None:
    """Bullet or numbered lines of an improver answer (at most MAX_ITEMS); None if there are none."""
    items = [m.group(1).strip().strip("*").strip()[:240] for m in _ITEM.finditer(text or "")]
    return items[:MAX_ITEMS] or None


def change_of(rec: dict) -> str:
    """'widened' / 'narrowed' / 'kept' size of a candidate relative to its parent (by parameters)."""
    p, q = rec.get("parent_params"), rec.get("params")
    if p is None or q is None or p == q:
        return "kept"
    return "widened" if q > p else "narrowed"


def round_summary(records: list[dict]) -> str:
    """One line per candidate of the round: bin, change vs parent, accuracy and cost deltas, outcome."""
    lines = []
    for r in records:
        where = f"bin {r['bin'] + 1}" if r.get("bin") is not None else "no bin"
        if r.get("status") != "ok":
            lines.append(f"{where}: {change_of(r)} -> FAILED {r.get('status')}: {(r.get('error') or '')[:100]}")
            continue
        d_acc = 100 * (r["accuracy"] - r["parent_accuracy"]) if r.get("parent_accuracy") is not None else 0.0
        d_cost = (r["cost"] / r["parent_cost"] - 1) * 100 if r.get("parent_cost") else 0.0
        lines.append(f"{where}: {change_of(r)} -> accuracy {d_acc:+.2f} points, cost {d_cost:+.0f}%"
                     f"{', entered the Pareto archive' if r.get('archive') else ''}"
                     f"{', outside its bin' if r.get('in_bin') is False else ''}")
    return "\n".join(lines)


def rule_rewrite(items: list[str], records: list[dict]) -> list[str]:
    """Per-bin heuristics from the round's statistics; older items about other bins are kept."""
    new, bins = [], []
    for b in sorted({r.get("bin") for r in records}, key=lambda x: -1 if x is None else x):
        rs = [r for r in records if r.get("bin") == b and r.get("status") == "ok"]
        where = "Without a bin target" if b is None else f"In bin {b + 1}"  # 1-based, as in the prompt
        bins.append(where)
        for change in ("narrowed", "widened"):
            cs = [r for r in rs if change_of(r) == change and r.get("parent_accuracy") is not None]
            if not cs:
                continue
            gain = sum(r["accuracy"] - r["parent_accuracy"] for r in cs) / len(cs)
            kept = sum(bool(r.get("archive")) for r in cs)
            verdict = "helped" if kept or gain > 0 else "hurt"  # helped: a new trade-off, or more accurate
            new.append(f"{where}: {change} networks {verdict} ({len(cs)} tried, {kept} entered the Pareto "
                       f"archive, mean {100 * gain:+.2f} accuracy points vs their parents).")
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        kinds = sorted({r.get("status") for r in failed})
        new.append(f"{len(failed)} of {len(records)} candidates failed last round ({', '.join(kinds)}): "
                   "make smaller, shape-consistent width changes.")
    old = [h for h in items if not h.startswith(tuple(bins)) and "failed last round" not in h]
    return (new + old)[:MAX_ITEMS]
