"""What scores a candidate network: the `Evaluator` protocol, the `--evaluator` spec and the registry.

    spec = parse_evaluator("table:cbm-mobilenet")    # EvaluatorSpec(kind="table", space="cbm-mobilenet")
    spec.trains, spec.lookup_only, spec.table_space  # False, True, "cbm-mobilenet": no evaluator built
    with make_evaluator(spec, benchmark_file=None) as ev:
        row = ev.evaluate(Candidate(code=source))    # the row stored for the candidate
        pre = ev.check(Candidate(code=source))       # the same without training (pre-checks)

An evaluator spec is `KIND` or `KIND:SPACE`; it is parsed once, here, and everything else asks the
parsed spec or the evaluator object, never the text. `EVALUATORS` maps a kind to its class (or
"module:Class", imported when first asked for); one module per implementation:
- `profile` (`corpus.evaluator.Evaluator`): one sandboxed request per candidate that builds, measures,
  checks the limits and trains it on the data set (`trains`);
- `table:SPACE` (`corpus.table.TableEvaluator`): the Channel-Bench-Macro table's metrics for the
  candidate's widths (`lookup_only`: nothing is measured; `table_space`: the benchmark space).
Adding one is one module plus one line here (or `register_evaluator` from outside, as the tests do).

An evaluator class has the class attributes `trains` (a candidate is trained: its accuracy measured,
the limits checked before training), `lookup_only` (its metrics come from a table: nothing can be
timed), `spaced` (the spec must name a space: `KIND:SPACE`) and `table` (that space is a benchmark space
of `corpus.spaces`: the search takes its widths choices, seed and input shape); a classmethod
`from_spec(spec, **options) -> evaluator` (options: whatever the caller knows, e.g. `search run`'s data
set, recipe, device, limits, benchmark file; each class takes what it needs and ignores the rest) and,
optionally, `validate(spec, **options)`: the cheap checks before a run starts (raise ValueError).
An evaluator object has `evaluate(candidate) -> row`, `check(candidate) -> row` and `close()`; a row
is a dict with a `status` (`ok` or why not), never an exception for the candidate's own failures.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from corpus.candidate import Candidate


class Evaluator(Protocol):
    trains: bool
    lookup_only: bool
    table_space: str | None

    def evaluate(self, cand: Candidate) -> dict: ...

    def check(self, cand: Candidate) -> dict: ...

    def close(self) -> None: ...


EVALUATORS: dict[str, object] = {
    "profile": "corpus.evaluator:Evaluator",
    "table": "corpus.table:TableEvaluator",
}


def register_evaluator(kind: str, factory) -> None:
    """Add an evaluator class (see the module docstring) under `kind`; `--evaluator kind[:SPACE]` selects it."""
    if not kind or ":" in kind:
        raise ValueError(f"an evaluator kind is a name without ':', not {kind!r}")
    EVALUATORS[kind] = factory


def evaluator_class(kind: str):
    cls = EVALUATORS[kind]
    if isinstance(cls, str):
        module, name = cls.split(":")
        cls = EVALUATORS[kind] = getattr(importlib.import_module(module), name)
    return cls


def forms() -> str:
    """The spec forms the registry knows, for error messages: `profile or table:SPACE`."""
    names = [f"{k}:SPACE" if getattr(evaluator_class(k), "spaced", False) else k for k in EVALUATORS]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


@dataclass(frozen=True)
class EvaluatorSpec:
    kind: str
    space: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.space}" if self.space is not None else self.kind

    @property
    def cls(self):
        return evaluator_class(self.kind)

    @property
    def trains(self) -> bool:
        return bool(getattr(self.cls, "trains", False))

    @property
    def lookup_only(self) -> bool:
        return bool(getattr(self.cls, "lookup_only", False))

    @property
    def table_space(self) -> str | None:
        """The benchmark space (`corpus.spaces.SPACES`) whose configurations the evaluator knows, else None."""
        return self.space if getattr(self.cls, "table", False) else None

    @property
    def name(self) -> str:
        """A short name for folders (a sweep's): the space, else the kind."""
        return self.space or self.kind


def parse_evaluator(text: str) -> EvaluatorSpec:
    """`profile` -> EvaluatorSpec("profile"), `table:cbm-resnet` -> EvaluatorSpec("table", "cbm-resnet");
    ValueError (one line, naming the known forms) for an unknown kind or a space given or missing."""
    kind, sep, space = (text or "").partition(":")
    if kind not in EVALUATORS:
        raise ValueError(f"--evaluator must be {forms()}, not {text!r}")
    spaced = bool(getattr(evaluator_class(kind), "spaced", False))
    if spaced != bool(sep) or (sep and not space):
        raise ValueError(f"--evaluator must be {forms()}, not {text!r}")
    return EvaluatorSpec(kind, space if sep else None)


def evaluator_name(text: str) -> str:
    """The folder name of an evaluator spec (`cbm-mobilenet` for `table:cbm-mobilenet`); the text itself
    when it does not parse (its error comes from the run's own checks)."""
    try:
        return parse_evaluator(text).name
    except ValueError:
        return text


def make_evaluator(spec: EvaluatorSpec | str, **options):
    """The evaluator object of a spec (see the module docstring for `options`)."""
    spec = parse_evaluator(spec) if isinstance(spec, str) else spec
    return spec.cls.from_spec(spec, **options)


def validate_evaluator(spec: EvaluatorSpec | str, **options) -> None:
    """The cheap checks of an evaluator before a run starts (a table file that is missing or unreadable):
    ValueError saying why."""
    spec = parse_evaluator(spec) if isinstance(spec, str) else spec
    check = getattr(spec.cls, "validate", None)
    if check is not None:
        check(spec, **options)
