"""The shared skeleton of every `python -m <package>` command: parse, run the sub-command, and turn
the package's user errors into one line on stderr with exit code 2 (never a traceback).

    sys.exit(run_command(make_parser(), COMMANDS, argv, errors=(UserError,), interrupted="..."))
"""
from __future__ import annotations

import argparse
import sys
import warnings


class _Renamed(argparse.Action):
    """A flag that was renamed: using it prints one line naming the new spelling and exits with 2."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"error: {option_string} is {self.new}", file=sys.stderr)
        sys.exit(2)


def renamed(parser, old: str, new: str) -> None:
    """`old` is refused with 'error: OLD is NEW' (e.g. renamed(p, "--seed", "the seed network in nasforge's
    commands; the rng seed is --rng-seed")): a one-line error instead of a silently different meaning."""
    parser.add_argument(old, action=_Renamed, new=new)


RNG_SEED_RENAMED = "the seed network in nasforge's commands, not a number: the rng seed is --rng-seed"


def show_warnings_as_lines() -> None:
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's usage errors (an unknown flag, a bad value) as one line, `error: PROG: message (see
    PROG --help)`, exit code 2, on the parser and every sub-command's parser, instead of the usage block."""
    def error(message, prog=parser.prog):
        print(f"error: {prog}: {message} (see {prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def run_command(parser, commands: dict, argv=None, errors: tuple = (), interrupted: str = "interrupted",
                call=None, setup=show_warnings_as_lines) -> int:
    """commands: name -> function(args) returning an exit code; call(args) overrides the dispatch.
    errors: exception classes printed as `error: <message>` with exit code 2 (the sandbox's start-up
    errors always are); interrupted: what Ctrl-C prints (exit code 130)."""
    from mutator.sandbox import SandboxError

    args = one_line_errors(parser).parse_args(argv)
    setup()
    try:
        return call(args) if call else commands[args.command](args)
    except (*errors, SandboxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def read_config_file(path: str, error=ValueError) -> dict:
    """The mapping of option: value in a YAML file (`--config FILE`), keys with - or _ as field names;
    an unreadable file, bad YAML or anything but a mapping is `error` with one line."""
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"--config {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise error(f"--config {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in doc.items()}


def config_from(cls, flags: dict, file: str | None = None, given: set[str] | None = None, error=ValueError,
                strict: bool = True):
    """The one way every command fills its config dataclass: cls(its defaults < the flags' own defaults
    < a YAML file < the flags written).

    flags: the parsed flags (`vars(args)`; keys that are not fields are skipped); given: the fields
    whose flags were written on the command line (None: every key of `flags` was, as with argparse's
    SUPPRESS defaults); file: `--config FILE` (an unknown key is `error`, or skipped when strict=False:
    a stored config of an older version). An on/off value of a boolean field is that boolean; a YAML
    list is a tuple (configs are frozen); a required field left unset is `error` naming its flag."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in flags.items() if k in fields and given is not None and k not in given}
    if file:
        doc = read_config_file(file, error)
        unknown = sorted(set(doc) - set(fields))
        if unknown and strict:
            raise error(f"--config {file}: unknown option(s) {', '.join(unknown)}")
        doc = {k: v for k, v in doc.items() if k in fields}
        for k, v in doc.items():
            if not fits(v, hints(cls).get(k)):
                raise error(f"--config {file}: {k.replace('_', '-')} must be {type_text(hints(cls)[k])}, not {v!r}")
        values.update(doc)
    values.update({k: v for k, v in flags.items() if k in fields and (given is None or k in given)})
    for k, v in values.items():
        default = fields[k].default
        if isinstance(default, bool) and v in ("on", "off"):
            values[k] = v == "on"
        elif isinstance(v, list):
            values[k] = tuple(v)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and values.get(n) is None]
    if missing:
        raise error(f"missing --{missing[0].replace('_', '-')} (a flag or a key in --config)")
    try:
        return cls(**values)
    except TypeError as exc:
        raise error(f"bad configuration: {exc}") from None


def hints(cls) -> dict:
    """cls's field annotations as types (empty where they cannot be resolved)."""
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation naming something not importable here: no checks
        return {}


def type_text(hint) -> str:
    """`int`, `float | None`, `tuple[float, ...] | None`: an annotation as a user reads it."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("NoneType", "None")


def fits(value, hint) -> bool:
    """Whether a YAML value is of an annotated type (int for a float, a list for a tuple; unknown: yes)."""
    import types
    import typing

    if hint is None or hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool) or value in ("on", "off")
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, (list, tuple))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def written(make_parser, argv) -> set[str]:
    """The dests whose flags `argv` writes, not those left at their defaults (a `--config` file and
    `--resume` give way only to what the user wrote). make_parser: builds the command's parser anew."""
    unset = object()

    def clear(p: argparse.ArgumentParser) -> None:
        p._defaults.clear()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    clear(sub)
            elif a.default is not argparse.SUPPRESS:
                a.default = unset

    parser = make_parser()
    clear(parser)
    ns = parser.parse_args(list(argv))
    return {k for k, v in vars(ns).items() if v is not unset}
