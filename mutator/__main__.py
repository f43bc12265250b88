"""Command line of the mutator.

    python -m mutator generate                       # 100 variants of the default seed into ./variants
    python -m mutator generate --seed model.py --class-name ResNet18 --in-shape 1,3,32,32 --num 20
    python -m mutator seeds                          # built-in seeds and their parameter counts
    python -m mutator check model.py                 # the width literals found, and what they drive
    python -m mutator apply --seed vgg-small --widths 48,32,96,128,64 --out v.py
    python -m mutator repair broken.py --out fixed.py   # make the layers follow the widths you set
"""
from __future__ import annotations

import argparse
import json
import sys


def _shape(text: str):
    """'1,3,32,32' -> (1, 3, 32, 32); anything else is returned as written, so that `spec_of` refuses
    it in one line naming the flag (argparse's own errors add a usage line)."""
    try:
        return tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        return text


def _choices(text: str) -> tuple[tuple[int, ...], ...]:
    """'64/128/192,128/256' -> ((64, 128, 192), (128, 256)): one list of allowed values per width."""
    try:
        out = tuple(tuple(int(v) for v in part.split("/")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lists like 64/128,32/48, got {text!r}") from None
    if any(not part or min(part) < 1 for part in out):
        raise argparse.ArgumentTypeError("every width needs at least one positive choice")
    return out


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-shape", type=_shape, default=(1, 3, 32, 32),
                   help="input shape: four positive integers batch,channels,height,width (default 1,3,32,32), "
                        "the shape the model is built and run at")
    p.add_argument("--classes", type=int, default=10, help="number of output classes")
    p.add_argument("--class-name", default=None,
                   help="class or factory that builds the network (default: Net, or the only nn.Module)")
    p.add_argument("--divisor", type=int, default=8, help="widths are multiples of this, never below it")
    p.add_argument("--timeout-s", type=float, default=300.0, help="time limit per sandboxed request")


def make_parser() -> argparse.ArgumentParser:
    from mutator import seeds

    parser = argparse.ArgumentParser(prog="python -m mutator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write validated channel-width variants of a seed")
    g.add_argument("--seed", default=seeds.DEFAULT_SEED,
                   help=f"built-in seed name or path to a .py file (default {seeds.DEFAULT_SEED})")
    g.add_argument("--num", type=int, default=100, help="number of new variants to write")
    g.add_argument("--out", default="variants", help="output folder (variants + manifest.jsonl)")
    g.add_argument("--min-factor", type=float, default=0.25, help="smallest width factor")
    g.add_argument("--max-factor", type=float, default=2.0, help="largest width factor")
    g.add_argument("--width-choices", type=_choices, default=None,
                   help="allowed values per width, e.g. 64/128/192/256,128/256 (overrides the factors)")
    g.add_argument("--rng-seed", type=int, default=0, help="random seed of the sampler")
    g.add_argument("--workers", type=int, default=0, help="sandbox worker processes (0: up to 2)")
    _model_args(g)
    a = sub.add_parser("apply", help="write the seed with exactly the given width values")
    a.add_argument("--seed", default=seeds.DEFAULT_SEED, help="built-in seed name or path to a .py file")
    a.add_argument("--widths", required=True,
                   help="comma-separated values, one per width in the order `check` prints them")
    a.add_argument("--out", required=True, help="file to write")
    _model_args(a)
    sub.add_parser("seeds", help="list built-in seeds with their parameter counts")
    c = sub.add_parser("check", help="validate one file and print its width literals")
    c.add_argument("file", help="model file (.py) or built-in seed name")
    _model_args(c)
    c.add_argument("--json", action="store_true", help="print the full analysis as JSON")
    r = sub.add_parser("repair", help="fix the layers that must follow the widths set in a file")
    r.add_argument("file", help="model file (.py) whose layers disagree on channel counts")
    r.add_argument("--out", required=True, help="file to write the repaired model to")
    r.add_argument("--parent", default=None,
                   help="the file before the edit: literals that differ from it are never changed")
    _model_args(r)
    return parser


def cmd_generate(args) -> int:
    from mutator.generate import GenerateConfig, generate

    cfg = GenerateConfig(seed=args.seed, num=args.num, out=args.out, in_shape=args.in_shape,
                         classes=args.classes, class_name=args.class_name,
                         min_factor=args.min_factor, max_factor=args.max_factor,
                         divisor=args.divisor, rng_seed=args.rng_seed,
                         width_choices=args.width_choices, workers=args.workers,
                         timeout_s=args.timeout_s)
    print(f"config: {cfg}", file=sys.stderr)
    res = generate(cfg)
    failed = res["invalid"] + res["timeout"] + res["crash"]
    print(f"wrote {res['written']} variants ({res['widths']} widths) to {res['out']}; "
          f"{failed} candidates failed validation and were discarded")
    for msg, n in res["top_errors"]:
        print(f"  {n} x {msg}")
    if res["exhausted"]:
        print("the width space has no more distinct configurations to sample")
    return 0


def cmd_apply(args) -> int:
    from mutator.generate import GenerateConfig, UserError, apply_widths

    try:
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--widths must be integers like 64,128,256, got {args.widths!r}") from None
    cfg = GenerateConfig(seed=args.seed, in_shape=args.in_shape, classes=args.classes,
                         class_name=args.class_name, divisor=args.divisor, timeout_s=args.timeout_s,
                         workers=1)
    res = apply_widths(cfg, widths, args.out)
    print(f"wrote {res['file']}: widths {res['widths']} (seed {res['seed_widths']}), {res['params']:,} parameters")
    return 0


def cmd_seeds(args) -> int:
    from mutator import seeds
    from mutator.probe import build, load

    print(f"{'seed':<18} {'params (3x32x32, 10 classes)':>30}  file")
    for name, file in seeds.SEEDS.items():
        model = build(load(seeds.seed_source(name)), {"in_shape": (1, 3, 32, 32), "classes": 10}, "meta")
        n = sum(p.numel() for p in model.parameters())
        mark = "  (default)" if name == seeds.DEFAULT_SEED else ""
        print(f"{name:<18} {n:>30,}  mutator/seeds/{file}{mark}")
    return 0


def cmd_check(args) -> int:
    from mutator.generate import GenerateConfig, analyze_seed, make_pool, resolve_seed, spec_of

    label, source = resolve_seed(args.file)
    cfg = GenerateConfig(seed=args.file, in_shape=args.in_shape, classes=args.classes,
                         class_name=args.class_name, divisor=args.divisor, timeout_s=args.timeout_s)
    pool = make_pool(cfg)
    try:
        a = analyze_seed(pool, source, spec_of(cfg), cfg.divisor, label).raw
    finally:
        pool.close()
    if args.json:
        print(json.dumps(a, indent=1))
    print(f"{label}: builds and runs forward at {tuple(args.in_shape)} -> ({args.in_shape[0]}, {args.classes}); "
          f"{a['params']:,} parameters; checked on the {a['device']} device")
    lines = source.splitlines()
    by_index = {l["index"]: l for l in a["literals"]}
    print(f"{len(a['groups'])} width(s):")
    for k, g in enumerate(a["groups"]):
        where = ", ".join(f"line {by_index[i]['line']}:{by_index[i]['col'] + 1}" for i in g["literals"])
        layers = ", ".join(g["layers"][:6]) + (f", ... ({len(g['layers'])} in all)" if len(g["layers"]) > 6 else "")
        print(f"  w{k}  value {g['value']:<5} at {where}  multiple of {g['multiple']}")
        print(f"       drives {layers}")
        print(f"       | {lines[by_index[g['literals'][0]]['line'] - 1].strip()[:100]}")
    deps = [l for l in a["literals"] if l["kind"] == "dependent"]
    if deps:
        print(f"{len(deps)} dependent literal(s), repaired to follow the widths: "
              + ", ".join(f"line {l['line']} ({l['value']})" for l in deps[:12]) + (" ..." if len(deps) > 12 else ""))
    for f in a["frozen"]:
        print(f"  not mutable: line {f['line']}: {f['reason']}")
    if not a["groups"]:
        from mutator.generate import _frozen_summary

        print(f"error: {label}: no width literals found ({_frozen_summary(a)})", file=sys.stderr)
        return 2
    return 0


def cmd_repair(args) -> int:
    from mutator.generate import GenerateConfig, UserError, make_pool, resolve_seed, spec_of
    from mutator.repair import repair, write_result

    label, source = resolve_seed(args.file)
    parent = resolve_seed(args.parent)[1] if args.parent else None
    cfg = GenerateConfig(seed=args.file, in_shape=args.in_shape, classes=args.classes,
                         class_name=args.class_name, divisor=args.divisor, timeout_s=args.timeout_s, workers=1)
    pool = make_pool(cfg)
    try:
        res = repair(source, spec_of(cfg), pool=pool, parent=parent, divisor=cfg.divisor, timeout_s=cfg.timeout_s)
    finally:
        pool.close()
    if res.status == "failed":
        raise UserError(f"{label}: {res.summary()}")
    write_result(res, args.out)
    print(f"{label}: {res.summary() if res.status == 'unchanged' else f'repaired {len(res.changes)} literal(s)'}; wrote {args.out}")
    for c in res.changes:
        print(f"  {c}")
    return 0


COMMANDS = {"generate": cmd_generate, "apply": cmd_apply, "seeds": cmd_seeds, "check": cmd_check,
            "repair": cmd_repair}


def main(argv=None) -> int:
    from mutator.cli import run_command
    from mutator.generate import UserError

    return run_command(make_parser(), COMMANDS, argv, errors=(UserError,),
                       interrupted="interrupted; everything written so far is kept")


if __name__ == "__main__":
    sys.exit(main())
