"""Command line of the search loop.

    python -m search run --llm smollm2-135m --seed lenet --dataset fashion-mnist --iterations 10 --out runs/frozen-0
    python -m search run --llm smollm2-135m --adapter adapters/lenet --out runs/tuned-0 --label tuned
    python -m search run --strategy mutation --out runs/mutation-0
    python -m search run --strategy tpe --evaluator table:cbm-mobilenet --out runs/tpe-0
    python -m search run --llm-url http://127.0.0.1:8000 --llm smollm2 --out runs/server-0
    python -m search run --out runs/frozen-0 --resume
    python -m search run --strategy mutation --objective pareto --hw-metric latency_ms --bins 4 --knowledge-base --out runs/pareto-0
    python -m search compare runs/* --baseline random --out runs/compare
    python -m search report runs/frozen-0
    python -m search compare runs/* --out runs/compare
    python -m search export runs/frozen-0 --to runs/frozen-0-dataset
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings


UNSET = object()  # the default of every `run` flag in make_parser(defaults=False)


def llm_name(value: str) -> str:
    if value == "random":
        raise argparse.ArgumentTypeError("--llm random is now --strategy random (uniform sampling; in table mode "
                                         "the old --llm random) or --strategy mutation (a random change of the parent)")
    return value


def make_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """defaults=False: `run` flags not written on the command line are left out (see `given_flags`)."""
    from search.loop import SearchConfig

    d = SearchConfig()
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) a search")
    r.add_argument("--strategy", default=d.strategy,
                   help="what proposes the candidates: llm (the Code Generator, --llm) | random (uniform inside the "
                        "limits) | mutation (a random change of the parent) | largest | evolution | tpe | gp | "
                        "surrogate (search.strategies)")
    r.add_argument("--prior", default=None,
                   help="--strategy surrogate: a labelled corpus folder of another space or family to warm-start from")
    r.add_argument("--explore", type=float, default=d.explore, help="--strategy surrogate: share of uniform proposals")
    r.add_argument("--llm", default=d.llm, type=llm_name,
                   help="the Code Generator of --strategy llm: smollm2-135m | Hub id | local folder")
    r.add_argument("--adapter", default=None, help="peft adapter folder for the Code Generator")
    r.add_argument("--improver-llm", default=None, help="Prompt Improver model (default: the same as --llm; 'rule' = no LLM)")
    r.add_argument("--improver-adapter", default=None, help="peft adapter for the Prompt Improver")
    r.add_argument("--llm-url", default=None, help="OpenAI-compatible server (vLLM, Ollama, llama.cpp)")
    r.add_argument("--improver-example", action="store_true",
                   help="show the Prompt Improver one worked answer first (format adherence of small models; "
                        "see benchmarks/improver_format.md)")
    r.add_argument("--improver-url", default=None,
                   help="server of the Prompt Improver (default: --llm-url), e.g. a frozen model beside a tuned generator")
    r.add_argument("--seed", default=d.seed, help="seed network: built-in name or .py path")
    r.add_argument("--dataset", default=d.dataset, help="fashion-mnist | cifar10 | cifar100 | mnist")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--iterations", type=int, default=d.iterations)
    r.add_argument("--time-budget-s", type=float, default=0.0, help="stop after this many seconds (0: none)")
    r.add_argument("--memory", type=int, default=d.memory, help="feedback-memory window K")
    r.add_argument("--out", default=d.out)
    r.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    r.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run LLM-written code even where nothing can contain it (no bubblewrap, namespaces or Landlock)")
    r.add_argument("--objective", default="accuracy", choices=["accuracy", "pareto"],
                   help="accuracy: hill-climb the best network | pareto: archive over accuracy and --hw-metric")
    r.add_argument("--hw-metric", default=d.hw_metric, choices=["latency_ms", "flops", "params"],
                   help="the cost objective of --objective pareto (latency: batch 1 on --latency-device)")
    r.add_argument("--latency-device", default=d.latency_device, choices=["cpu", "cuda"],
                   help="device the pre-check measures latency on")
    r.add_argument("--latency-table", default=None,
                   help="per-device latency file looked up instead of measuring (table evaluators; see "
                        "`python -m corpus latency-table`)")
    r.add_argument("--latency-column", default=None, help="the device column of --latency-table")
    r.add_argument("--bins", type=int, default=0, help="complexity bins proposals cycle through (0: off, else >= 2)")
    r.add_argument("--partition-by", default=None, choices=["latency_ms", "flops", "params"],
                   help="metric of the bins (default: --hw-metric)")
    r.add_argument("--bin-edges", type=lambda s: tuple(float(x) for x in s.split(",")), default=None,
                   help="comma-separated inner bin edges (default: quantiles of the seed's random variants)")
    r.add_argument("--bin-samples", type=int, default=d.bin_samples, help="seed variants measured for the bin quantiles")
    r.add_argument("--knowledge-base", action="store_true",
                   help="design heuristics the Prompt Improver rewrites after each round, shown to the Code Generator")
    r.add_argument("--round-size", type=int, default=d.round_size, help="iterations per round without bins")
    r.add_argument("--screen", default="none", choices=["none", "zero-cost"],
                   help="zero-cost: propose round(1/--screen-keep) candidates per iteration, train the most promising")
    r.add_argument("--screen-keep", type=float, default=d.screen_keep, help="share of proposals trained when screening")
    r.add_argument("--max-flops", type=float, default=None, help="limit checked before training")
    r.add_argument("--max-params", type=float, default=None, help="limit checked before training")
    r.add_argument("--max-latency-ms", type=float, default=None, help="limit checked before training (--latency-device)")
    r.add_argument("--rng-seed", type=int, default=0)
    r.add_argument("--temperature", type=float, default=d.temperature)
    r.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    r.add_argument("--label", default=None,
                   help="configuration name used by `compare` (default: the strategy, or llm[+adapter])")
    r.add_argument("--epochs", type=float, default=d.epochs)
    r.add_argument("--train-limit", type=int, default=d.train_limit)
    r.add_argument("--batch-size", type=int, default=d.batch_size)
    r.add_argument("--device", default=d.device)
    r.add_argument("--timeout-s", type=float, default=d.timeout_s)
    r.add_argument("--evaluator", default="profile",
                   help="profile (train and measure) | table:cbm-resnet | table:cbm-mobilenet (Channel-Bench-Macro lookup)")
    r.add_argument("--benchmark-file", default=None, help="Channel-Bench-Macro JSON table for --evaluator table:...")
    r.add_argument("--table-noise", action="store_true", help="one training seed's accuracy instead of the mean")
    r.add_argument("--llm-timeout-s", type=float, default=d.llm_timeout_s,
                   help="seconds per request to --llm-url / --improver-url")
    r.add_argument("--llm-retries", type=int, default=d.llm_retries,
                   help="more tries after a failed request, waiting --llm-backoff-s, then twice as long each time; "
                        "then the iteration is an llm_error and the run goes on")
    r.add_argument("--llm-backoff-s", type=float, default=d.llm_backoff_s, help="first wait before a retry")
    r.add_argument("--max-llm-errors", type=int, default=d.max_llm_errors,
                   help="consecutive llm_error iterations that end the run (stored; continue with --resume)")
    r.add_argument("--answer-format", default=d.answer_format, choices=["widths", "diff", "code"],
                   help="what the LLM writes: widths (one allowed value per width slot; channel search), diff "
                        "(SEARCH/REPLACE blocks against the parent; any edit), code (the whole file)")
    r.add_argument("--context", default=d.context, choices=["source", "summary"],
                   help="what the widths prompt shows of the parent: its source, or a per-layer table (short)")
    r.add_argument("--constrain", default=d.constrain, choices=["auto", "on", "off"],
                   help="grammar-constrained decoding of widths/diff answers (auto: where the backend supports it)")
    r.add_argument("--server-kind", default=d.server_kind,
                   choices=["auto", "llama.cpp", "llama-cpp-python", "vllm", "vllm-legacy", "ollama", "none"],
                   help="which request field carries the grammar (auto: detected from --llm-url)")
    r.add_argument("--repair", default="on" if d.repair else "off", choices=["on", "off"],
                   type=str, help="shape repair of diff/code candidates whose layers disagree on channels")
    r.add_argument("--exclude-tried", default="on" if d.exclude_tried else "off", choices=["on", "off"],
                   help="constrained widths answers: the grammar leaves out the width lists already tried "
                        "(no repeats by construction)")
    r.add_argument("--samples", type=int, default=d.samples,
                   help="answers asked per proposal at most: the first that is not a network already tried is kept")
    if not defaults:
        r.set_defaults(**{f.name: UNSET for f in dataclasses.fields(SearchConfig)})
    p = sub.add_parser("report", help="plots and a markdown summary of one run")
    p.add_argument("dir")
    c = sub.add_parser("compare", help="compare runs grouped by configuration")
    c.add_argument("dirs", nargs="+")
    c.add_argument("--out", default=None, help="folder for the table and plot (default: the first run's parent)")
    c.add_argument("--threshold", type=float, default=None, help="accuracy for 'iterations to reach'")
    c.add_argument("--baseline", default=None,
                   help="comma-separated baseline groups for the tests and latency reduction (default: random, else "
                        "the first), or `best`: each group vs the strongest non-LLM group (the strongest vs the next)")
    c.add_argument("--hw-metric", default=None, choices=["latency_ms", "flops", "params"],
                   help="cost axis of HV/IGD (default: the first Pareto run's, else latency_ms)")
    c.add_argument("--budgets", type=lambda s: tuple(float(x) for x in s.split(",")), default=None,
                   help="cost budgets for 'best accuracy under budget', as multiples of the seed's cost (default 0.5,0.75,1)")
    e = sub.add_parser("export", help="write a run as a datasets dataset")
    e.add_argument("dir")
    e.add_argument("--to", default=None, help="output folder (default DIR/dataset)")
    w = sub.add_parser("sweep", help="a grid of runs (configurations x rng seeds x evaluators) as one resumable job")
    w.add_argument("spec", help="YAML spec of the grid (format: search/sweep.py, README)")
    w.add_argument("--out", required=True, help="sweep folder: runs/, logs/, sweep.jsonl, compare-<evaluator>/")
    w.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes or Ray tasks")
    w.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    w.add_argument("--parallel", type=int, default=0, help="runs at once (0: the CPU cores, or the Ray cluster's CPUs)")
    w.add_argument("--evaluators", default=None,
                   help="run only these evaluator entries of the spec (comma-separated names; default: all)")
    w.add_argument("--configurations", default=None,
                   help="run only these configurations of the spec (comma-separated names; default: all)")
    return parser


def given_flags(argv) -> set[str]:
    """The config fields whose `run` flags are written in argv: `--resume` changes only those (a flag
    left at its argparse default must not count as a change of the stored run)."""
    ns = make_parser(defaults=False).parse_args(argv)
    return {k for k, v in vars(ns).items() if v is not UNSET}


def cmd_run(args, argv=None) -> int:
    from search.loop import SearchConfig
    from search.runner import run

    from mutator import sandbox

    # LLM-written code: refuse a machine where the sandbox can contain nothing, unless the user says so
    sandbox.REQUIRE_CONTAINMENT = not args.unsafe_no_sandbox
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["repair"] = values.get("repair", "on") == "on"
    values["exclude_tried"] = values.get("exclude_tried", "on") == "on"
    cfg = SearchConfig(**values)
    res = run(cfg, resume=args.resume, given=given_flags(argv) & fields)
    best, seed = res["best"], res["seed"]
    print(f"{res['iterations']} iterations in {cfg.out}; seed accuracy {100 * seed['accuracy']:.2f}%, "
          f"best {100 * best['accuracy']:.2f}%")
    return 0


def cmd_report(args) -> int:
    from search.report import report

    print(report(args.dir))
    return 0


def cmd_compare(args) -> int:
    from search.compare import compare

    print(compare(args.dirs, args.out, args.threshold, args.baseline, args.hw_metric, args.budgets))
    return 0


def cmd_export(args) -> int:
    from search.report import export

    print(f"wrote {export(args.dir, args.to)}")
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "export": cmd_export}


def cmd_sweep(args) -> int:
    from search.sweep import SweepConfig, sweep

    cfg = SweepConfig(spec=args.spec, out=args.out, executor=args.executor, address=args.address, parallel=args.parallel,
                      evaluators=tuple(e for e in (args.evaluators or "").split(",") if e) or None,
                      configurations=tuple(c for c in (args.configurations or "").split(",") if c) or None)
    try:
        res = sweep(cfg)
    except KeyboardInterrupt:
        print(f"interrupted; finished iterations are stored: run the same command to continue {cfg.out}", file=sys.stderr)
        return 130
    print(f"{res['done']}/{res['runs']} runs done in {cfg.out} ({len(res['ran'])} ran now); compare: "
          f"{', '.join(res['compare'].values()) or 'none'}")
    return 0


COMMANDS["sweep"] = cmd_sweep


# Libraries whose deprecation and usage notes are noise here; RuntimeWarnings (the sandbox naming
# what it cannot contain, numerical problems) are never silenced.
NOISY = r"(transformers|torch|peft|trl|datasets|huggingface_hub|fvcore|iopath|tqdm|matplotlib)(\.|$)"


def quiet_library_warnings() -> None:
    warnings.simplefilter("default")
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY)
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"


def main(argv=None) -> int:
    from corpus.errors import CorpusError, DataError
    from mutator.cli import run_command
    from mutator.generate import UserError
    from search.llm import LLMError
    from search.loop import SearchError
    from search.store import StoreError

    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(make_parser(), COMMANDS, argv, errors=(SearchError, LLMError, StoreError, CorpusError,
                                                              DataError, UserError),
                       interrupted="interrupted; finished iterations are stored (continue with --resume)",
                       call=lambda args: cmd_run(args, argv) if args.command == "run" else COMMANDS[args.command](args),
                       setup=quiet_library_warnings)


if __name__ == "__main__":
    sys.exit(main())
