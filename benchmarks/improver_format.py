"""How often does a served model answer the Prompt Improver in the format the loop can parse?

Replays the improver's question of every stored iteration of search runs (the candidate's outcome,
the best/parent network, the feedback memory as it was then) against an OpenAI-compatible server,
once without and once with the worked example (`search.roles.IMPROVER_SHOT`, `--improver-example`),
and prints the share of answers `parse_diagnosis` accepts, side by side in one run, and how many
parsed answers copy the example (share a run of >= 20 characters with its answer): a parsed answer
is only useful if it is about the situation asked about.

    python -m llama_cpp.server --model base.q8_0.gguf --port 8092 --model_alias smollm2 &
    python benchmarks/improver_format.py --url http://127.0.0.1:8092 --model smollm2 runs/llm-pareto-*
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def situations(folder: str, limit: int) -> list[tuple]:
    """(row, parent_row, memory) of each stored iteration, as the loop had them at diagnose time."""
    import copy

    from search.roles import FeedbackMemory, Triple
    from search.runner import load_run

    cfg, iters, seed = load_run(folder)
    by_it = {r["it"]: r["metrics"] or {} for r in iters}
    memory, best, out = FeedbackMemory(5), seed, []
    for r in iters[:limit]:
        x = r["extra"] or {}
        parent = by_it.get(x.get("parent_it"), seed) if cfg.objective == "pareto" else best
        row = {**(r["metrics"] or {}), "status": r["status"], "error": r["error"]}
        memory.add(Triple(r["problem"] or "", r["instruction"] or "", r["outcome"] or ""))
        out.append((row, parent, copy.deepcopy(memory)))
        if r["is_best"]:
            best = r["metrics"] or {}
    return out


def copies(parsed: tuple[str, str], example: str, n: int = 20) -> bool:
    from difflib import SequenceMatcher

    text = " ".join(parsed)
    m = SequenceMatcher(None, text, example, autojunk=False).find_longest_match(0, len(text), 0, len(example))
    return m.size >= n


def main() -> int:
    from search.llm import OpenAILLM
    from search.roles import IMPROVER_SHOT, PromptImprover, parse_diagnosis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="search run folders")
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--per-run", type=int, default=8, help="iterations replayed per run")
    args = ap.parse_args()
    llm = OpenAILLM(args.url, args.model)
    cases = [c for f in args.runs for c in situations(f, args.per_run)]
    res = {}
    for shot in (False, True):
        imp = PromptImprover(llm, shot=shot)
        ok, copied, secs, example = 0, 0, 0.0, None
        for i, (row, parent, memory) in enumerate(cases):
            t = time.time()
            raw = llm.generate(imp.diagnose_messages(row, parent, memory), temperature=imp.temperature,
                               max_new_tokens=imp.max_new_tokens, seed=i)
            secs += time.time() - t
            parsed = parse_diagnosis(raw)
            ok += parsed is not None
            copied += bool(parsed) and copies(parsed, IMPROVER_SHOT[1])
            if parsed and example is None:
                example = parsed
        res[shot] = (ok, copied, secs / max(1, len(cases)), example)
        print(f"{'with' if shot else 'without'} the worked example: {ok}/{len(cases)} parsed", file=sys.stderr)
    print(f"\nPrompt Improver answers parsed by `parse_diagnosis` ({len(cases)} stored situations, "
          f"model {args.model} at {args.url}, temperature 0.3)\n")
    print("| prompt | parsed | rate | parsed but copying the example | s per answer | first parsed answer |")
    print("|---|---:|---:|---:|---:|---|")
    for shot, (ok, cp, s, ex) in res.items():
        text = f"PROBLEM: {ex[0][:70]} / MODIFICATION: {ex[1][:70]}" if ex else ""
        print(f"| {'system + worked example' if shot else 'system only'} | {ok}/{len(cases)} | "
              f"{100 * ok / max(1, len(cases)):.0f} % | {cp} | {s:.1f} | {text.replace('|', '/')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
