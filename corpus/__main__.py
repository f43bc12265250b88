"""Command line of the corpus profiler.

    python -m corpus build --variants variants --dataset fashion-mnist --out corpus_fm --train-limit 2000
    python -m corpus profile variants/resnet-small-0123abcd.py --dataset fashion-mnist --train-limit 2000
    python -m corpus profile v.py --evaluator table:cbm-resnet                # a table lookup, no training
    python -m corpus show corpus_fm
    python -m corpus build --variants variants --dataset fashion-mnist --out corpus_zc --zero-cost-only
    python -m corpus predictor fit --corpus corpus_fm --out pred.joblib
    python -m corpus predictor eval --corpus corpus_fm --model pred.joblib
"""
from __future__ import annotations

import argparse
import json
import sys

from mutator.cli import RNG_SEED_RENAMED, renamed


def _profile_args(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    p.add_argument("--dataset", required=dataset_required, help="fashion-mnist | cifar10 | cifar100 | mnist")
    p.add_argument("--data-dir", default=None, help="folder with the data set's files (offline use)")
    p.add_argument("--epochs", type=float, default=1.0, help="proxy-training epochs (default 1; at least --min-steps)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="training batch size (default 0: the largest power of two <= images/64 within [32, 256])")
    p.add_argument("--min-steps", type=int, default=150,
                   help="at least this many optimizer steps: a small --train-limit is repeated (default 150)")
    p.add_argument("--train-limit", type=int, default=0, help="train on a stratified subset of N images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="time limit per network")
    p.add_argument("--use-model-recipe", action="store_true",
                   help="train with the model's own train_setup/learn (LEMUR) instead of the proxy recipe")
    p.add_argument("--rng-seed", dest="seed", metavar="N", type=int, default=0, help="rng seed for weights, subset and batch order")
    renamed(p, "--seed", RNG_SEED_RENAMED)
    p.add_argument("--proxy-seeds", metavar="K", type=int, default=1,
                   help="train each network K times, rng seeds N..N+K-1 (--rng-seed N); accuracy is their mean, "
                        "accuracy_std their std (default 1: one run)")
    p.add_argument("--latency-batch", type=int, default=64, help="the larger latency batch size")
    p.add_argument("--fast-cpu", metavar="auto|on|off", nargs="?", const="on", default="auto",
                   help="channels-last layout and bf16 autocast for training on a CPU: about 2x the images/s of "
                        "vgg/resnet-small where the CPU has bf16 instructions, a ranking no worse (issue 30's table); "
                        "default auto: on where the CPU has them (a resumed corpus: what its rows used)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m corpus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="profile a variants folder into a datasets dataset")
    b.add_argument("--variants", help="folder written by python -m mutator generate (required: a flag or in --config)")
    b.add_argument("--out", help="output folder (datasets.load_from_disk opens it; required)")
    _profile_args(b, dataset_required=False)
    b.add_argument("--workers", type=int, default=1, help="parallel sandboxed workers")
    b.add_argument("--executor", default="local", help="local | ray")
    b.add_argument("--push-to-hub", default=None, help="also push the dataset to this Hub repo")
    b.add_argument("--zero-cost", action="store_true", help="add zero-cost proxy columns (zc_*) before training")
    b.add_argument("--zero-cost-only", action="store_true",
                   help="zero-cost proxies only: no training, accuracy/latency left empty (seconds per net)")
    b.add_argument("--zero-cost-batch", type=int, default=64, help="training images the proxies see")
    b.add_argument("--with-seed", action="store_true",
                   help="also profile the seed network itself (its id: the seed's name): the reference the score "
                        "and prefer tasks describe a family's networks against, as a search does")
    b.add_argument("--config", default=None,
                   help="YAML file of any of these options (keys: the flag names, - or _); flags given override it")
    p = sub.add_parser("profile", help="profile one model file, print its row as one JSON line")
    p.add_argument("file", help="model .py file")
    p.add_argument("--class-name", default=None, help="class or factory that builds the network")
    p.add_argument("--evaluator", default="profile",
                   help="profile (train and measure) or table:SPACE (look the network up in a Channel-Bench-Macro "
                        "table: cbm-resnet | cbm-mobilenet)")
    p.add_argument("--benchmark-file", default=None, help="the space's JSON table (default: see README)")
    _profile_args(p, dataset_required=False)
    t = sub.add_parser("from-table", help="a corpus (code + metrics) from a Channel-Bench-Macro table")
    t.add_argument("--space", required=True, help="cbm-resnet | cbm-mobilenet")
    t.add_argument("--out", required=True)
    t.add_argument("--sample", type=int, default=0, help="random subset of N configurations, the seed's own always among them (0: all 16,384)")
    t.add_argument("--rng-seed", dest="seed", metavar="N", type=int, default=0, help="rng seed of the sample")
    renamed(t, "--seed", RNG_SEED_RENAMED)
    t.add_argument("--benchmark-file", default=None, help="the space's JSON table (default: see README)")
    lt = sub.add_parser("latency-table", help="measure a per-device latency lookup table of a benchmark space")
    lt.add_argument("--space", required=True, help="cbm-resnet | cbm-mobilenet")
    lt.add_argument("--out", required=True, help="JSON file {key: {device: ms}} (resumes from OUT.jsonl)")
    lt.add_argument("--device", default="cpu", help="cpu | cuda: where the latencies are measured")
    lt.add_argument("--sample", type=int, default=0, help="random subset of N configurations (0: all 16,384; "
                    "the seed's configuration is always included)")
    lt.add_argument("--rng-seed", dest="seed", metavar="N", type=int, default=0, help="rng seed of the sample")
    renamed(lt, "--seed", RNG_SEED_RENAMED)
    lt.add_argument("--runs", type=int, default=30, help="timed batch-1 runs per network (median)")
    lt.add_argument("--label", default=None, help="device column name (default: the device's name)")
    s = sub.add_parser("show", help="summary table and accuracy-vs-FLOPs plot of a corpus")
    s.add_argument("dir", help="corpus folder")
    s.add_argument("--plot", default=None, help="PNG path (default DIR/accuracy_vs_flops.png)")
    pr = sub.add_parser("predictor", help="fit / evaluate a predictor of accuracy from zero-cost features")
    psub = pr.add_subparsers(dest="action", required=True)
    f = psub.add_parser("fit", help="fit on a corpus, print held-out rank correlations, save the model")
    f.add_argument("--corpus", required=True, help="corpus folder built with --zero-cost")
    f.add_argument("--out", required=True, help="model file (a FILE.json sidecar is written beside it)")
    f.add_argument("--features", default=None, help="comma-separated columns (default: all zc_* proxies, params, flops)")
    f.add_argument("--holdout", type=float, default=0.2, help="fraction of rows held out for evaluation")
    f.add_argument("--rng-seed", dest="seed", metavar="N", type=int, default=0, help="rng seed of the split and the model")
    renamed(f, "--seed", RNG_SEED_RENAMED)
    f.add_argument("--by", default=None, help="also a table per value of this column (e.g. parent)")
    e = psub.add_parser("eval", help="rank correlations on the rows the model was not fitted on")
    e.add_argument("--corpus", required=True)
    e.add_argument("--model", required=True, help="file written by predictor fit")
    e.add_argument("--by", default=None, help="also a table per value of this column (e.g. parent)")
    return parser


def cmd_build(args, given: set[str] | None = None) -> int:
    """given: the flags written on the command line (`mutator.cli.written`); None: all of args."""
    from corpus.build import BuildConfig, main_build
    from corpus.errors import CorpusError
    from mutator.cli import config_from

    return main_build(config_from(BuildConfig, vars(args), args.config, given=given, error=CorpusError))


def cmd_profile(args) -> int:
    from corpus.profiler import profile_file

    row = profile_file(args)
    print(json.dumps(row))
    return 0 if row["status"] == "ok" else 1


def cmd_from_table(args) -> int:
    from corpus.table import from_table

    res = from_table(args.space, args.out, args.sample, args.seed, args.benchmark_file)
    print(f"{res['new']} new rows; {res['rows']} rows in {res['out']}")
    return 0


def cmd_latency_table(args) -> int:
    from corpus.latency_table import build
    from corpus.table import TableError

    if args.runs < 1 or args.sample < 0:
        raise TableError("--runs must be >= 1 and --sample >= 0")
    res = build(args.space, args.out, args.device, args.sample, args.seed, args.runs, args.label)
    print(f"{res['new']} new latencies; {res['rows']} configurations on {res['device']} in {res['out']}")
    return 0


def cmd_show(args) -> int:
    from corpus.show import show

    return show(args.dir, args.plot)


def cmd_predictor(args) -> int:
    from corpus.predictor import main_eval, main_fit

    return main_fit(args) if args.action == "fit" else main_eval(args)


COMMANDS = {"build": cmd_build, "profile": cmd_profile, "from-table": cmd_from_table,
            "latency-table": cmd_latency_table, "show": cmd_show,
            "predictor": cmd_predictor}


def main(argv=None) -> int:
    from corpus.errors import CorpusError, DataError, TableError
    from mutator.cli import run_command, written
    from mutator.generate import UserError

    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(make_parser(), COMMANDS, argv, errors=(CorpusError, DataError, UserError, TableError),
                       call=lambda args: cmd_build(args, written(make_parser, argv)) if args.command == "build"
                       else COMMANDS[args.command](args),
                       interrupted="interrupted; rows profiled so far are kept (run the same command to resume)")


if __name__ == "__main__":
    sys.exit(main())
