"""`search run`'s flags, one parser for the command line and for sweep specs (`search.sweep` checks a
spec's flags against it), and which flags a command line wrote (`--resume` changes only those).

    from search.cli import run_parser
    ns = run_parser().parse_args(["--strategy", "tpe", "--evaluator", "table:cbm-mobilenet", "--out", "r"])
"""
from __future__ import annotations

import argparse
import dataclasses

UNSET = object()  # the default of every `run` flag in run_parser(defaults=False)


def llm_name(value: str) -> str:
    if value == "random":
        raise argparse.ArgumentTypeError("--llm random is now --strategy random (uniform sampling; in table mode "
                                         "the old --llm random) or --strategy mutation (a random change of the parent)")
    return value


def temperatures(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated temperatures, not {value!r}") from None


def add_run_arguments(r: argparse.ArgumentParser, defaults: bool = True) -> argparse.ArgumentParser:
    """`search run`'s flags on r; defaults=False: flags not written on the command line are UNSET."""
    from finetune.formats import format_names
    from finetune.llm import backend_names
    from search.loop import SearchConfig, server_kinds

    d = SearchConfig()

    r.add_argument("--strategy", default=d.strategy,
                   help="what proposes the candidates: llm (the Code Generator, --llm) | random (uniform inside the "
                        "limits) | mutation (a random change of the parent) | largest | evolution | tpe | gp | "
                        "surrogate | scored (a language model scores candidates: --scorer) (search.strategies)")
    r.add_argument("--prior", default=None,
                   help="--strategy surrogate: a labelled corpus folder of another space or family to warm-start from")
    r.add_argument("--explore", type=float, default=d.explore,
                   help="--strategy surrogate or scored: share of uniform proposals")
    r.add_argument("--scorer", default=None,
                   help="--strategy scored: the model that scores candidates (smollm2-135m | Hub id | local folder)")
    r.add_argument("--scorer-adapter", default=None,
                   help="--strategy scored: peft adapter of the scorer (finetune train on a --task score data set)")
    r.add_argument("--scorer-url", default=None, help="--strategy scored: an OpenAI-compatible server of the scorer")
    r.add_argument("--scorer-pool", type=int, default=d.scorer_pool,
                   help="--strategy scored: new configurations drawn and scored per iteration")
    r.add_argument("--scorer-dtype", default=d.scorer_dtype,
                   help="--strategy scored, model in process: float32 | bfloat16 (merges the adapter into the weights and "
                        "casts them: about half the scoring time on a CPU with bf16 instructions; the --scorer-generate "
                        "model too)")
    r.add_argument("--scorer-generate", metavar="N", type=int, default=d.scorer_generate,
                   help="--strategy scored: N pool members per iteration answered by the Code Generator (--llm, "
                        "--adapter or --llm-url; widths answers, one batched pass), the rest drawn (default 0: none)")
    r.add_argument("--generator-ladder", metavar="T,T,...", type=temperatures, default=d.generator_ladder,
                   help="--strategy scored with --scorer-generate: the generator answers' temperatures, cycled "
                        "(default 0.7,1.0,1.3)")
    r.add_argument("--generator-prompt", default=d.generator_prompt,
                   help="--strategy scored with --scorer-generate: search (the Code Generator's prompt, a widths answer; "
                        "default) | prefer (the prefer task's prompt: the seed as reference, answers x0.5 x1 x2 ...; "
                        "a model tuned with finetune --task prefer)")
    r.add_argument("--pool-local", type=float, default=d.pool_local,
                   help="--strategy scored: share of the pool drawn as one- or two-slot changes of the run's best "
                        "evaluated configurations (the rest uniform)")
    r.add_argument("--pool-from", metavar="STRATEGY", default=d.pool_from,
                   help="--strategy scored: another strategy (largest, surrogate, tpe, ...) whose next --pool-from-n "
                        "proposals join each pool, to be scored with the rest (default: none)")
    r.add_argument("--pool-from-n", metavar="K", type=int, default=d.pool_from_n,
                   help="--strategy scored with --pool-from: its proposals per pool (default 8)")
    r.add_argument("--llm", default=d.llm, type=llm_name,
                   help="the Code Generator of --strategy llm: smollm2-135m | Hub id | local folder")
    r.add_argument("--adapter", default=None, help="peft adapter folder for the Code Generator")
    r.add_argument("--improver-llm", default=None, help="Prompt Improver model (default: the same as --llm; 'rule' = no LLM)")
    r.add_argument("--improver-adapter", default=None, help="peft adapter for the Prompt Improver")
    r.add_argument("--llm-backend", default=d.llm_backend, choices=["auto", *backend_names()],
                   help="finetune.llm's backend: auto (openai with --llm-url, else transformers) or a registered name")
    r.add_argument("--llm-url", default=None, help="OpenAI-compatible server (vLLM, Ollama, llama.cpp)")
    r.add_argument("--improver-example", action="store_true",
                   help="show the Prompt Improver one worked answer first (format adherence of small models; "
                        "see benchmarks/improver_format.md)")
    r.add_argument("--improver-url", default=None,
                   help="server of the Prompt Improver (default: --llm-url), e.g. a frozen model beside a tuned generator")
    r.add_argument("--seed", default=d.seed, help="seed network: built-in name or .py path")
    r.add_argument("--class-name", default=d.class_name,
                   help="class or factory function in the --seed file that builds the network (default: Net, or "
                        "the file's only nn.Module class)")
    r.add_argument("--dataset", default=d.dataset, help="fashion-mnist | cifar10 | cifar100 | mnist")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--iterations", type=int, default=d.iterations)
    r.add_argument("--time-budget-s", type=float, default=0.0, help="stop after this many seconds (0: none)")
    r.add_argument("--memory", type=int, default=d.memory, help="feedback-memory window K")
    r.add_argument("--out", default=d.out)
    r.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    r.add_argument("--config", default=None,
                   help="YAML file of any of these options (keys: the flag names, - or _); flags given override it")
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
    r.add_argument("--fast-cpu", metavar="auto|on|off", nargs="?", const="on", default=d.fast_cpu,
                   help="channels-last layout and bf16 autocast for training on a CPU: about 2x the images/s of "
                        "vgg/resnet-small where the CPU has bf16 instructions, a ranking no worse (issue 30's table); "
                        "default auto: on where the CPU has them, the answer stored with the run")
    r.add_argument("--proxy-seeds", metavar="K", type=int, default=d.proxy_seeds,
                   help="train each candidate K times, rng seeds --rng-seed..+K-1; its accuracy is their mean "
                        "(default 1; an evaluator that trains, not a table; kept by --resume)")
    r.add_argument("--temperature", type=float, default=d.temperature)
    r.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    r.add_argument("--label", default=None,
                   help="configuration name used by `compare` (default: the strategy, or llm[+adapter])")
    r.add_argument("--epochs", type=float, default=d.epochs)
    r.add_argument("--train-limit", type=int, default=d.train_limit)
    r.add_argument("--batch-size", type=int, default=d.batch_size)
    r.add_argument("--min-steps", type=int, default=d.min_steps,
                   help=f"at least this many optimizer steps (default {d.min_steps}: with --batch-size {d.batch_size}, "
                        f"{d.min_steps * d.batch_size:,} images of the --train-limit subset)")
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
    r.add_argument("--answer-format", default=d.answer_format, choices=format_names(),
                   help="what the LLM writes: widths (one allowed value per width slot; channel search), diff "
                        "(SEARCH/REPLACE blocks against the parent; any edit), code (the whole file)")
    r.add_argument("--context", default=d.context, choices=["source", "summary"],
                   help="what the widths prompt shows of the parent: its source, or a per-layer table (short)")
    r.add_argument("--constrain", default=d.constrain, choices=["auto", "on", "off"],
                   help="grammar-constrained decoding of widths/diff answers (auto: where the backend supports it)")
    r.add_argument("--server-kind", default=d.server_kind,
                   choices=server_kinds(),
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
    return r


def run_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """`search run`'s flags as a parser of their own (prog "python -m search run")."""
    return add_run_arguments(argparse.ArgumentParser(prog="python -m search run"), defaults)


def given_flags(argv) -> set[str]:
    """The config fields whose flags `search run`'s argv (with or without the leading "run") writes:
    `--resume` changes only those (a flag left at its argparse default must not count as a change of the
    stored run)."""
    argv = list(argv or [])
    ns = run_parser(defaults=False).parse_args(argv[1:] if argv[:1] == ["run"] else argv)
    return {k for k, v in vars(ns).items() if v is not UNSET}
