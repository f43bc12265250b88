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
