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
import sys
import warnings

from search.cli import add_run_arguments, given_flags  # noqa: F401  (given_flags: the old import path)


def make_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """defaults=False: `run` flags not written on the command line are left out (`search.cli.given_flags`)."""
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="run (or resume) a search"), defaults)
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
    w.add_argument("spec", help="YAML spec of the grid (format: docs/search.md, Sweeps; search/sweep/)")
    w.add_argument("--out", required=True, help="sweep folder: runs/, logs/, sweep.jsonl, compare-<evaluator>/")
    w.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes or Ray tasks")
    w.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    w.add_argument("--parallel", type=int, default=0, help="runs at once (0: the CPU cores, or the Ray cluster's CPUs)")
    w.add_argument("--evaluators", default=None,
                   help="run only these evaluator entries of the spec (comma-separated names; default: all)")
    w.add_argument("--configurations", default=None,
                   help="run only these configurations of the spec (comma-separated names; default: all)")
    return parser


def cmd_run(args, argv=None) -> int:
    from search.loop import SearchConfig, SearchError
    from search.runner import run

    from mutator import sandbox
    from mutator.cli import config_from, read_config_file

    # LLM-written code: refuse a machine where the sandbox can contain nothing, unless the user says so
    sandbox.REQUIRE_CONTAINMENT = not args.unsafe_no_sandbox
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    given = given_flags(argv if argv is not None else sys.argv[1:]) & fields
    cfg = config_from(SearchConfig, vars(args), args.config, given=given, error=SearchError)
    if args.config:  # on --resume the file's options count as given, like the flags
        given |= set(read_config_file(args.config, SearchError)) & fields
    res = run(cfg, resume=args.resume, given=given)
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
