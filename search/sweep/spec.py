"""The sweep spec: a YAML grid of `search run` configurations x rng seeds x evaluators, checked
against `search run`'s own parser (`search.cli`) before anything starts, expanded into `Cell`s."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from search.loop import SearchError

SPEC_KEYS = {"defaults", "configurations", "seeds", "evaluators"}
SWEEP_FLAGS = {"out", "resume", "rng_seed", "label", "evaluator", "help", "config"}  # set by the sweep, per cell
SERVER_KEYS = {"gguf", "gguf_args"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


class SweepError(SearchError):
    """A bad spec, an unusable sweep folder, failed runs: one line, exit 2."""


@dataclass(frozen=True)
class Cell:
    """One `search run`: flags are the spec's (dest -> value), before a served model's URL is added."""
    ev: str  # the evaluator entry's name (its folders)
    evaluator: str  # its --evaluator value
    config: str
    seed: int
    flags: tuple[tuple[str, object], ...]
    iterations: int
    gguf: str | None = None

    @property
    def name(self) -> str:
        return f"{self.ev}/{self.config}-{self.seed}"

    def argv(self, parser: argparse.ArgumentParser, out: Path, served: dict | None = None) -> list[str]:
        """`search run`'s arguments; served: the flags of the model the sweep serves (llm, llm_url)."""
        return flag_argv({**dict(self.flags), **(served or {})}, parser) + [
            "--evaluator", self.evaluator, "--rng-seed", str(self.seed), "--label", self.config,
            "--out", str(out / "runs" / self.name)]


@dataclass(frozen=True)
class Spec:
    cells: tuple[Cell, ...]
    servers: dict  # configuration -> {"gguf", "args", "alias"}
    evaluators: tuple[str, ...]
    raw: dict


# ---------------------------------------------------------------- the spec

def run_parser() -> argparse.ArgumentParser:
    """`search run`'s parser (`search.cli`), raising SweepError instead of printing usage and exiting."""
    from search.cli import run_parser as parser_of_run

    run = parser_of_run()

    def error(message):
        raise SweepError(message)

    run.error = error
    return run


def check_flags(flags, where: str, parser: argparse.ArgumentParser, extra: set[str] = frozenset()) -> dict:
    """A mapping of `search run` flags -> {dest: value}, each value checked like its command-line form.
    extra: sweep keys allowed here (returned under their own names)."""
    if flags is None:
        return {}
    if not isinstance(flags, dict):
        raise SweepError(f"{where}: expected a mapping of `search run` flags, not {type(flags).__name__}")
    out = {}
    for key, value in flags.items():
        if not isinstance(key, str):
            raise SweepError(f"{where}: flag {key!r} is not a name")
        if key in extra:
            out[key] = value
            continue
        action = parser._option_string_actions.get("--" + key.replace("_", "-"))
        if action is None or action.dest in SWEEP_FLAGS:
            why = "is set by the sweep" if action is not None else "is not a `search run` flag"
            raise SweepError(f"{where}: {key} {why}")
        if action.dest in out:
            raise SweepError(f"{where}: {key} is given twice")
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                raise SweepError(f"{where}: {key} is a switch: true or false, not {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise SweepError(f"{where}: {key} needs a string or a number, not {value!r}")
            try:
                converted = action.type(str(value)) if action.type else str(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                raise SweepError(f"{where}: {key}: {value!r} is not a valid value") from None
            if action.choices is not None and converted not in action.choices:
                raise SweepError(f"{where}: {key} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
        out[action.dest] = value
    return out


def flag_argv(flags: dict, parser: argparse.ArgumentParser) -> list[str]:
    opts = {a.dest: a for a in parser._actions}
    argv = []
    for dest, value in flags.items():
        opt = opts[dest].option_strings[-1]
        if opts[dest].nargs == 0:
            argv += [opt] if value else []
        else:
            argv += [opt, str(value)]
    return argv


def search_config(ns: argparse.Namespace):
    """The SearchConfig `search run` builds from these parsed flags (`mutator.cli.config_from`, as
    cmd_run does: an on/off flag of a boolean field is that boolean)."""
    from search.loop import SearchConfig

    from mutator.cli import config_from

    return config_from(SearchConfig, vars(ns), error=SweepError)


def evaluator_name(evaluator: str) -> str:
    from corpus.evaluators import evaluator_name as name

    return name(evaluator)


def _names(mapping, where: str) -> None:
    for name in mapping:
        if not isinstance(name, str) or not NAME.match(name):
            raise SweepError(f"{where}: {name!r} is not a usable name (letters, digits, . _ + = -)")


def load_spec(path: str | Path, executor: str = "local", address: str | None = None,
              select: tuple[str, ...] | None = None, select_configs: tuple[str, ...] | None = None) -> Spec:
    """The validated grid; SweepError (one line) for anything wrong, before anything starts. select /
    select_configs: only these evaluator entries / configurations (a configuration left out, or one that
    runs on no selected evaluator, is then not checked or served)."""
    path = Path(path)
    raw = read_spec(path)
    parser = run_parser()
    defaults = check_flags(raw.get("defaults"), f"{path}: defaults", parser)
    seeds = spec_seeds(raw["seeds"], path)
    evaluators = spec_evaluators(raw["evaluators"], path, parser, select)
    configs, servers, only = spec_configurations(raw["configurations"], path, parser, evaluators, select,
                                                 select_configs, executor, address)
    cells = []
    for ename, (ev, eflags) in evaluators.items():
        if select is not None and ename not in select:
            continue
        for cname, cflags in configs.items():
            if cname not in only or ename in only[cname]:
                cells += spec_cells(path, parser, defaults, seeds, ename, ev, eflags, cname, cflags,
                                    servers.get(cname))
    if not cells:
        raise SweepError(f"{path}: --evaluators / --configurations select no run (no selected configuration "
                         "runs on a selected evaluator)")
    return Spec(tuple(cells), servers, tuple(e for e in evaluators if select is None or e in select), raw)


def read_spec(path: Path) -> dict:
    """The spec file's mapping: YAML, known keys, the required ones not empty."""
    import yaml

    if not path.is_file():
        raise SweepError(f"spec {path} is not a file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SweepError(f"{path}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with {', '.join(sorted(SPEC_KEYS))}")
    unknown = sorted(map(str, set(raw) - SPEC_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(sorted(SPEC_KEYS))})")
    for key in ("configurations", "seeds", "evaluators"):
        if raw.get(key) in (None, [], {}):
            raise SweepError(f"{path}: {key} is missing or empty")
    return raw


def spec_seeds(seeds, path: Path) -> list[int]:
    """`seeds: N` (0..N-1) or a list of distinct integers >= 0."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        return list(range(seeds))
    if isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
            and len(set(seeds)) == len(seeds):
        return seeds
    raise SweepError(f"{path}: seeds must be a count > 0 or a list of distinct integers >= 0, not {seeds!r}")


def spec_evaluators(evs, path: Path, parser, select) -> dict[str, tuple[str, dict]]:
    """Evaluator entries, name -> (--evaluator value, its flags): a list of names or a mapping name -> flags."""
    if isinstance(evs, list):
        if not all(isinstance(e, str) for e in evs):
            raise SweepError(f"{path}: evaluators must be names (profile, table:SPACE) or a mapping name -> flags")
        named = {evaluator_name(e): {"evaluator": e} for e in evs}
        if len(named) != len(evs):
            raise SweepError(f"{path}: an evaluator is listed twice")
        evs = named
    if not isinstance(evs, dict):
        raise SweepError(f"{path}: evaluators must be a list or a mapping name -> flags")
    _names(evs, f"{path}: evaluators")
    evaluators = {}
    for name, flags in evs.items():
        flags = check_flags(flags, f"{path}: evaluator {name}", parser, extra={"evaluator"})
        ev = flags.pop("evaluator", name)
        if not isinstance(ev, str):
            raise SweepError(f"{path}: evaluator {name}: evaluator must be profile or table:SPACE, not {ev!r}")
        evaluators[name] = (ev, flags)
    if select is not None:
        unknown = [n for n in select if n not in evaluators]
        if unknown:
            raise SweepError(f"--evaluators: {unknown[0]!r} is not an evaluator of {path} ({', '.join(evaluators)})")
    return evaluators


def spec_configurations(confs, path: Path, parser, evaluators: dict, select, select_configs, executor: str,
                        address: str | None) -> tuple[dict, dict, dict]:
    """(name -> flags, name -> served model, name -> the evaluator entries it is restricted to) of the
    selected configurations that run on a selected evaluator."""
    if not isinstance(confs, dict):
        raise SweepError(f"{path}: configurations must be a mapping name -> `search run` flags")
    _names(confs, f"{path}: configurations")
    if select_configs is not None:
        unknown = [n for n in select_configs if n not in confs]
        if unknown:
            raise SweepError(f"--configurations: {unknown[0]!r} is not a configuration of {path} ({', '.join(confs)})")
        confs = {k: v for k, v in confs.items() if k in select_configs}
    configs, servers, only = {}, {}, {}
    for name, flags in confs.items():
        where = f"{path}: configuration {name}"
        flags = check_flags(flags, where, parser, extra=SERVER_KEYS | {"evaluators"})
        if "evaluators" in flags:  # this configuration runs on these evaluator entries only
            names = flags.pop("evaluators")
            names = [names] if isinstance(names, str) else names
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                raise SweepError(f"{where}: evaluators must be a non-empty list of evaluator names")
            unknown = [n for n in names if n not in evaluators]
            if unknown:
                raise SweepError(f"{where}: evaluators: {unknown[0]!r} is not an evaluator of this spec "
                                 f"({', '.join(evaluators)})")
            only[name] = set(names)
        if select is not None and not (only.get(name, set(evaluators)) & set(select)):
            continue  # runs on no selected evaluator: not checked, not served
        served, gguf, gguf_args = "gguf" in flags, flags.pop("gguf", None), flags.pop("gguf_args", [])
        if served:
            servers[name] = {"gguf": str(check_gguf(gguf, gguf_args, flags, where, path.parent, executor, address)),
                             "args": [str(a) for a in gguf_args], "alias": str(flags.get("llm") or Path(gguf).stem)}
        elif gguf_args:
            raise SweepError(f"{where}: gguf_args without gguf")
        configs[name] = flags
    return configs, servers, only


def spec_cells(path: Path, parser, defaults: dict, seeds: list[int], ename: str, ev: str, eflags: dict,
               cname: str, cflags: dict, server: dict | None) -> list[Cell]:
    """The runs of one configuration on one evaluator entry, one per seed, after checking their flags as
    `search run` would (a served model's URL stands in for the port chosen later)."""
    from corpus.errors import CorpusError
    from search.llm import LLMError
    from search.loop import check_config
    from search.runner import validate

    both = sorted(set(eflags) & set(cflags))
    if both:
        raise SweepError(f"{path}: {both[0]} is set by both configuration {cname} and evaluator {ename}")
    if server:  # what the runs will get
        cflags = {**cflags, "llm": server["alias"]}
    cell = Cell(ename, ev, cname, seeds[0], tuple({**defaults, **eflags, **cflags}.items()), 0,
                server["gguf"] if server else None)
    try:
        cfg = search_config(parser.parse_args(cell.argv(parser, Path("x"),
                                                        {"llm_url": "http://127.0.0.1:1"} if server else None)))
        check_config(cfg)
        validate(cfg, llm_given=False, improver_given=False)
    except (SearchError, LLMError, CorpusError) as exc:
        raise SweepError(f"{path}: configuration {cname}, evaluator {ename}: {exc}") from None
    return [dataclasses.replace(cell, seed=s, iterations=cfg.iterations) for s in seeds]


def check_gguf(gguf, args, flags: dict, where: str, base: Path, executor: str, address: str | None) -> Path:
    import importlib.util

    if not isinstance(gguf, str) or not isinstance(args, list) or \
            not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
        raise SweepError(f"{where}: gguf is a file name and gguf_args a list of server arguments")
    for key in ("llm_url", "improver_url", "adapter"):
        if key in flags:
            raise SweepError(f"{where}: {key} and gguf exclude each other (the sweep serves the gguf file)")
    if flags.get("strategy", "llm") != "llm":
        raise SweepError(f"{where}: strategy {flags['strategy']} uses no model: drop gguf")
    p = Path(gguf).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise SweepError(f"{where}: gguf file {p} not found")
    if executor == "ray" and (address or os.environ.get("RAY_ADDRESS")):
        raise SweepError(f"{where}: a gguf model is served on this machine's loopback, which other Ray nodes "
                         "cannot reach: use --executor local or a local Ray instance, or serve it yourself (llm_url)")
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                           "pydantic_settings") if importlib.util.find_spec(m) is None]
    if missing:
        raise SweepError(f"{where}: serving gguf needs llama.cpp's server: pip install 'llama-cpp-python[server]' "
                         f"({', '.join(missing)} missing)")
    return p.resolve()
