"""Answer formats through `search run`: valid candidates, duplicates and LLM seconds per proposal for
`widths`, `diff` and `code` (frozen SmolLM2-135M, Q4 GGUF, served by llama.cpp on loopback).

    python benchmarks/edit_formats.py --n-widths 20 --n-diff 6 --n-code 2       # what the README reports
    NASFORGE_CBM_DIR=../shared/data/channel-bench-macro python benchmarks/edit_formats.py --targets cbm-resnet

Each (target, format) is one `search.runner.run` with `--improver-llm rule` (no LLM diagnosis: the
generator's seconds only), `--constrain auto` (the llama.cpp server takes the GBNF grammar for
widths and diff), `--repair on`, `--samples 1` (a repeat is stored as a `duplicate`), widths with
`--context summary`. Targets:
- `cbm-resnet`, `cbm-mobilenet`: `--evaluator table:SPACE`; *valid* = the candidate is in the space
  and in the table (status ok). Needs the real tables: `$NASFORGE_CBM_DIR` (default
  `../shared/data/channel-bench-macro`), else skipped with a message.
- `lenet`: Fashion-MNIST's shape; *valid* = builds and runs forward at (1, 1, 28, 28) giving
  (1, 10) in the sandbox (`corpus.evaluator.Checker`), no training. Its rows carry accuracy 0 for
  every network (validity only: the parent stays the seed; no accuracy is reported from them).
*duplicates*: proposals that repeat a network already tried (the seed included). *LLM s*: mean wall
time of the generator's request per proposal, on whatever CPU the server shares. Skips (exit 0)
when llama_cpp or the GGUF is missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]


def lenet_validity():
    from corpus.evaluator import Checker

    checker = Checker({"in_shape": [1, 1, 28, 28], "classes": 10, "class_name": None}, "cpu", zero_cost=False,
                      latency=False)

    def evaluate(code: str) -> dict:
        row = checker.check(code)
        return {**row, "accuracy": 0.0} if row.get("status") == "ok" else row

    return evaluate, checker.close


def one(target: str, fmt: str, n: int, url: str, out: Path, cbm: Path | None, max_tokens: dict,
        samples: int = 1) -> dict:
    from search.loop import SearchConfig
    from search.runner import load_run, run

    kw = {"llm": "smollm2", "llm_url": url, "improver_llm": "rule", "answer_format": fmt, "iterations": n,
          "out": str(out / f"{target}-{fmt}-s{samples}"), "rng_seed": 0, "samples": samples, "max_new_tokens": max_tokens[fmt],
          "context": "summary" if fmt == "widths" else "source", "llm_timeout_s": 900, "llm_retries": 0}
    close = None
    if target == "lenet":
        evaluate, close = lenet_validity()
        cfg = SearchConfig(seed="lenet", dataset="fashion-mnist", **kw)
    else:
        evaluate = None
        cfg = SearchConfig(evaluator=f"table:{target}", benchmark_file=str(cbm / f"{target.split('-')[1]}.json"), **kw)
    try:
        run(cfg, evaluate=evaluate, progress=False)
    finally:
        if close:
            close()
    _, iters, _ = load_run(cfg.out)
    st = [r["status"] for r in iters]
    return {"target": target, "format": fmt, "samples": samples, "n": len(iters),
            "valid": st.count("ok") + st.count("duplicate"), "new": st.count("ok"),
            "duplicates": st.count("duplicate"), "asks": sum((r["extra"] or {}).get("samples", 1) for r in iters), "parse": st.count("parse_error") + st.count("no_code"),
            "repaired": sum(bool((r["extra"] or {}).get("repaired")) for r in iters),
            "llm_s": statistics.mean(r["llm_seconds"] for r in iters) if iters else None,
            "other": sorted({s for s in st if s not in ("ok", "duplicate", "parse_error", "no_code")})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="cbm-resnet,cbm-mobilenet,lenet")
    ap.add_argument("--formats", default="widths,diff,code")
    ap.add_argument("--n-widths", type=int, default=40)
    ap.add_argument("--n-diff", type=int, default=40)
    ap.add_argument("--n-code", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1, help="answers asked per proposal (the first new one is kept)")
    ap.add_argument("--port", type=int, default=8094)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    args = ap.parse_args()
    if importlib.util.find_spec("llama_cpp") is None:
        print('skipped: llama_cpp is not installed (pip install "llama-cpp-python[server]==0.3.36")')
        return 0
    from answer_formats import start_server

    cbm = Path(os.environ.get("NASFORGE_CBM_DIR", ROOT.parent / "shared/data/channel-bench-macro"))
    targets = args.targets.split(",")
    if not (cbm / "resnet.json").is_file():
        print(f"skipped the Channel-Bench-Macro spaces: no tables in {cbm} (set NASFORGE_CBM_DIR)")
        targets = [t for t in targets if not t.startswith("cbm-")]
    n = {"widths": args.n_widths, "diff": args.n_diff, "code": args.n_code}
    max_tokens = {"widths": 48, "diff": 512, "code": 1536}
    out = Path(args.out or tempfile.mkdtemp(prefix="edit_formats-"))
    out.mkdir(parents=True, exist_ok=True)
    server, url = start_server(args.port, args.threads, out / "server.log")
    rows = []
    try:
        for fmt in args.formats.split(","):
            for t in targets:
                if n[fmt] > 0:
                    rows.append(one(t, fmt, n[fmt], url, out, cbm, max_tokens, args.samples))
                    r = rows[-1]
                    print(f"{t} {fmt}: {r['valid']}/{r['n']} valid, {r['new']} new, {r['duplicates']} duplicates, "
                          f"{r['llm_s']:.1f} s/proposal", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("\n| target | format | samples | proposals | valid | new valid | repeats kept | answers asked "
          "| parse failures | repaired | other failures | LLM s/proposal |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        pct = lambda k: f"{r[k]} ({100 * r[k] / max(1, r['n']):.0f} %)"
        print(f"| {r['target']} | {r['format']} | {r['samples']} | {r['n']} | {pct('valid')} | {pct('new')} "
              f"| {r['duplicates']} | {r['asks']} | {r['parse']} | {r['repaired']} | {', '.join(r['other']) or '-'} "
              f"| {r['llm_s']:.1f} |")
    print(f"runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
