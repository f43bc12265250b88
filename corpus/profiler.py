"""`python -m corpus profile FILE`: one model file, one JSON row (sandboxed, same recipe as build).

    python -m corpus profile v.py --dataset fashion-mnist --train-limit 2000
    python -m corpus profile v.py --evaluator table:cbm-resnet     # Channel-Bench-Macro lookup (corpus.table)

With `--evaluator table:SPACE` the network is not trained: its widths are found by building it
(sandboxed) and its accuracy, FLOPs and params are the table's, as `search run --evaluator table:SPACE`
does; a network outside the space is a row with status `out_of_space` saying why.
`--proxy-seeds K` trains it K times (recipe seeds S..S+K-1, `corpus.evaluator.evaluate_seeds`): the row's
`accuracy` is their mean; a table evaluator refuses K > 1 (one-line error: it trains nothing).
"""
from __future__ import annotations

from pathlib import Path

from corpus.candidate import Candidate
from corpus.errors import CorpusError


def profile_file(args) -> dict:
    from corpus.evaluator import check_proxy_seeds

    proxy_seeds = check_proxy_seeds(getattr(args, "proxy_seeds", 1))
    path = Path(args.file)
    if not path.is_file():
        raise CorpusError(f"no such file: {args.file}")
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read {args.file}: {exc}") from None
    from mutator.literals import SourceError, parse

    try:
        parse(code)
    except SourceError as exc:
        raise CorpusError(f"{args.file}: {exc}") from None
    from corpus.evaluators import make_evaluator, parse_evaluator

    try:
        spec = parse_evaluator(getattr(args, "evaluator", "profile"))
    except ValueError as exc:
        raise CorpusError(str(exc)) from None
    options = {"benchmark_file": getattr(args, "benchmark_file", None)}
    if proxy_seeds > 1 and not spec.trains:
        raise CorpusError(f"--proxy-seeds {proxy_seeds} averages training runs: --evaluator {spec} trains nothing "
                          f"(a table's accuracy is its own; leave --proxy-seeds at 1)")
    if spec.trains:
        if not args.dataset:
            raise CorpusError("--dataset is needed to train (or look the network up with --evaluator table:SPACE)")
        from corpus.evaluator import fast_cpu, recipe_for

        options.update(dataset=args.dataset, data_dir=args.data_dir, device=args.device, timeout_s=args.timeout_s,
                       use_model_recipe=args.use_model_recipe, latency_batch=args.latency_batch,
                       class_name=args.class_name, proxy_seeds=proxy_seeds,
                       recipe=recipe_for(args.dataset, args.epochs, args.batch_size, args.train_limit, args.seed,
                                         min_steps=args.min_steps, **fast_cpu(getattr(args, "fast_cpu", "off"))))
    ev = make_evaluator(spec, **options)
    try:
        row = ev.evaluate(Candidate(code=code))
    finally:
        ev.close()
    row = {"id": path.stem, **row}
    row.pop("code", None)
    return row
