"""`python -m search sweep SPEC.yaml --out DIR`: a grid of `search run`s as one resumable job.

    python -m search sweep benchmarks/sweep_example.yaml --out sweeps/example
    python -m search sweep spec.yaml --out sweeps/big --executor ray --address 10.0.0.5:6379 --parallel 32
    python -m search sweep spec.yaml --out sweeps/big --evaluators mobilenet    # part of the grid first

The spec (YAML; every key is checked before anything starts, errors are one line with exit 2):

    defaults: {iterations: 20}               # `search run` flags shared by every run (optional)
    configurations:                          # name -> `search run` flags (the name is the run's --label)
      random: {strategy: random}
      tuned: {llm: smollm2, llm_url: "http://127.0.0.1:8092"}          # the user's server
      served: {gguf: models/tuned.q8_0.gguf, gguf_args: [--n_ctx, "4096"]}   # served by the sweep
      tuned-r: {llm: smollm2, llm_url: "http://127.0.0.1:8093", evaluators: [mobilenet]}  # only there
    seeds: 10                                # rng seeds: a count (0..9) or a list [0, 3, 7]
    evaluators: [table:cbm-mobilenet, profile]     # or a mapping name -> flags, e.g.
    #   mobilenet-budget: {evaluator: "table:cbm-mobilenet", max_flops: 1.2e8}

Flags are `search run`'s own (`llm_url` or `llm-url`): each is looked up in that command's parser
and its value converted and checked the way the command line would be (a switch takes true/false);
the resulting config of every configuration x evaluator then passes `search run`'s own checks
(`check_config`, `validate`: benchmark tables present, model names, URLs). `out`, `resume`,
`rng_seed` and `label` are the sweep's to set; `evaluator` only names an evaluator entry's evaluator.
A flag set by both a configuration and an evaluator entry is an error (the spec must say which).
A configuration's `evaluators: [name, ...]` (a sweep key) runs it on those evaluator entries only: e.g.
an adapter tuned without one space (or seed family) runs only where it searches the held-out one.
`--evaluators a,b` / `--configurations x,y` run only those evaluator entries / configurations of the
spec (a configuration left out, or one that runs on no selected evaluator, is neither checked nor
served: its gguf file may not exist yet); the same command without them later runs the rest, keeping
what is done. `search compare` runs for an evaluator once every selected run of it finished.

Each cell (configuration x seed x evaluator) is one `python -m search run ... --out
DIR/runs/<evaluator>/<configuration>-<seed>` subprocess (the evaluator's name is the part after
`table:`), its output appended to `DIR/logs/<evaluator>/<configuration>-<seed>.log`. Cells run in
parallel: `--executor local` (default) keeps `--parallel` processes (default: the CPU cores) going;
`--executor ray` runs each command as a Ray task (1 CPU) on a local instance, or on the cluster at
`--address` (else `RAY_ADDRESS`): every node then needs nasforge importable and DIR on a shared file
system, and gguf configurations (served on the driver's loopback) are refused.

Resuming: run the same command again after a kill (kill -9 included). A run whose store holds all
its iterations (or that ended with exit 0 on the same flags, e.g. at its --time-budget-s) is done and
is not run again; a started store is continued with `--resume` (the loop loses at most the iteration
in flight); a folder without a store, or with one that never got past its start, starts fresh; a
store that is not readable is moved aside (`run.sqlite.invalid-<time>`) and the run starts fresh.
Every run process dies with the sweep (PR_SET_PDEATHSIG; a Ray task on the sweep's host watches the
sweep's process and kills its run), so a killed sweep leaves none behind to write a store twice; one sweep at a time holds DIR (a lock file). `DIR/sweep.jsonl` (a
`mutator.records` journal) records each invocation's spec, every run's start (fresh/resume, the
iterations it had) and end (exit code, iterations), moved-aside stores and compares.

A configuration with `gguf: FILE` is served by the sweep with llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server`, from `llama-cpp-python[server]`) on 127.0.0.1 and a free port, started
before the runs (its log: `DIR/logs/server-<configuration>.log`), waited for until `GET /v1/models`
answers, and stopped at the end, on errors and on Ctrl-C; its runs get `--llm-url` (resumable) and
`--llm` = the configuration's `llm` flag (default: the file's stem), which is the server's
`--model_alias`.

One progress bar covers the sweep: iterations stored / total across runs (its rate and ETA), runs
done / total. At the end `search compare` runs per evaluator over its runs into
`DIR/compare-<evaluator>` when all of them finished; failed runs are listed (their logs) and the
sweep exits 2: running it again retries them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from mutator import records
from search.loop import SearchError

ROOT = Path(__file__).resolve().parents[1]  # the checkout the runs import `search` from
SPEC_KEYS = {"defaults", "configurations", "seeds", "evaluators"}
SWEEP_FLAGS = {"out", "resume", "rng_seed", "label", "evaluator", "help"}  # set by the sweep, per cell
SERVER_KEYS = {"gguf", "gguf_args"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


class SweepError(SearchError):
    """A bad spec, an unusable sweep folder, failed runs: one line, exit 2."""


@dataclass(frozen=True)
class SweepConfig:
    spec: str
    out: str
    executor: str = "local"  # local | ray
    address: str | None = None  # Ray cluster (None: RAY_ADDRESS, else a local instance)
    parallel: int = 0  # runs at once (0: CPU cores, or the Ray cluster's CPUs)
    progress: bool = True
    server_timeout_s: float = 600.0  # for a gguf server to answer /v1/models
    evaluators: tuple[str, ...] | None = None  # run only these evaluator entries (None: all)
    configurations: tuple[str, ...] | None = None  # run only these configurations (None: all)


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
    """The SearchConfig `search run` builds from these parsed flags (cmd_run's rule: the namespace's
    config fields; an on/off flag of a boolean field is that boolean)."""
    from search.loop import SearchConfig

    fields = {f.name: f for f in dataclasses.fields(SearchConfig)}
    values = {k: v for k, v in vars(ns).items() if k in fields}
    for k, v in values.items():
        if isinstance(fields[k].default, bool) and v in ("on", "off"):
            values[k] = v == "on"
    return SearchConfig(**values)


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


# ---------------------------------------------------------------- run folders

def run_state(folder: Path) -> tuple[str, int]:
    """(state, iterations stored): missing (no store), invalid (not a readable run store), unstarted
    (never got past its start: `search run` replaces it), started."""
    from search.store import RunStore, StoreError

    if not (folder / "run.sqlite").exists():
        return "missing", 0
    try:
        store = RunStore(folder, create=False)  # read-write: a kill -9's hot journal is rolled back
    except StoreError:
        return "invalid", 0
    try:
        n = store.db.execute("SELECT COUNT(*) FROM iterations").fetchone()[0]
        if not store.started():
            return "unstarted", 0
        return ("started", n) if store.meta("config") is not None else ("invalid", 0)
    except sqlite3.DatabaseError:
        return "invalid", 0
    finally:
        store.close()


def stored_iterations(folder: Path) -> int | None:
    """Iterations in a run's store, read-only (while its run writes it); None when unreadable now."""
    path = folder / "run.sqlite"
    try:
        if path.stat().st_size == 0:
            return None
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM iterations").fetchone()[0]
    except (OSError, sqlite3.Error):
        return None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the sweep dies (kill -9 included), so no run outlives it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def child_env(threads: int | None = None) -> dict:
    """The runs' environment. threads: each run's training/measuring threads (`NASFORGE_THREADS`, read by
    `corpus.evaluator`), the cores shared out among the parallel runs, so that N runs on C cores do not
    start N x C threads and thrash (a value the user exported wins)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads and "NASFORGE_THREADS" not in os.environ:
        env["NASFORGE_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start_run(argv: list[str], log: str, env: dict, cwd: str | None = None):
    """`python -m search ARGV` with its output appended to log (after a header line): (process, log file)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "ab")
    f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} python -m search {' '.join(argv)}\n".encode())
    f.flush()
    return subprocess.Popen([sys.executable, "-m", "search", *argv], stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd, preexec_fn=_die_with_parent), f


def process_identity(pid: int) -> tuple[str, int, str] | None:
    """(host, pid, start time in clock ticks): names one process for as long as the host runs, pid
    reuse included; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return socket.gethostname(), pid, stat.rsplit(")", 1)[1].split()[19]


def driver_gone(driver: tuple[str, int, str] | None) -> bool:
    """True when the sweep that started a Ray task is known dead: only on the sweep's own host (a local
    Ray instance); on a cluster's other nodes Ray ends the job's tasks when its driver is lost."""
    return driver is not None and driver[0] == socket.gethostname() and process_identity(driver[1]) != driver


def run_task(argv: list[str], log: str, env: dict, cwd: str, driver: tuple[str, int, str] | None = None) -> int:
    """A Ray task: one run on the task's node, from the task's thread (its death kills the run), in the
    driver's working directory (relative paths in flags mean the same there: a shared file system).
    Ray notices a killed driver only seconds later and its worker (and with it the run) lives on till
    then; so on the driver's host the task watches the driver itself and kills the run at once, before a
    resumed sweep can start a second writer of the same store."""
    p, f = start_run(argv, log, env, cwd)
    with f:
        while True:
            try:
                return p.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if driver_gone(driver):
                    p.kill()
                    return p.wait()


# ---------------------------------------------------------------- executors

class LocalExecutor:
    """Processes started from this (main) thread: PR_SET_PDEATHSIG follows the thread that forked."""

    def __init__(self, parallel: int):
        self.parallel = parallel or os.cpu_count() or 1
        self.procs: dict[str, tuple[subprocess.Popen, object]] = {}

    def submit(self, name: str, argv: list[str], log: str, env: dict) -> int:
        p, f = start_run(argv, log, env)
        self.procs[name] = (p, f)
        return p.pid

    def poll(self) -> list[tuple[str, int]]:
        done = []
        for name, (p, f) in list(self.procs.items()):
            if p.poll() is not None:
                f.close()
                del self.procs[name]
                done.append((name, p.returncode))
        return done

    def close(self) -> None:
        """Ctrl-C or an error: ask the runs to stop (SIGINT: they store what is finished), then kill."""
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + 10
        for p, f in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            f.close()
        self.procs.clear()


class RayExecutor:
    """Each run is a Ray task (1 CPU, no retries) running the same command on its node."""

    def __init__(self, parallel: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise SweepError("--executor ray needs Ray: pip install 'ray[default]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self.parallel = parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.refs: dict = {}

    def submit(self, name: str, argv: list[str], log: str, env: dict) -> None:
        self.refs[self.task.remote(argv, log, env, os.getcwd(), process_identity(os.getpid()))] = name

    def poll(self) -> list[tuple[str, int]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        done = []
        for ref in ready:
            name = self.refs.pop(ref)
            try:
                rc = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001  (the task itself died: node lost, worker killed)
                print(f"warning: ray task of {name} failed: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                rc = -1
            done.append((name, rc))
        return done

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            self.ray.shutdown()


# ---------------------------------------------------------------- served models

class LlamaServers:
    """llama.cpp servers for the gguf configurations: loopback, free ports, stopped on exit."""

    def __init__(self, logs: Path, timeout_s: float):
        self.logs, self.timeout_s = logs, timeout_s
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def start(self, name: str, server: dict) -> str:
        import socket
        import urllib.request

        with closing(socket.socket()) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        log = self.logs / f"server-{name}.log"
        f = open(log, "ab")
        p = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", server["gguf"],
                              "--host", "127.0.0.1", "--port", str(port), "--model_alias", server["alias"],
                              *server["args"]],
                             stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.procs.append((p, f))
        deadline = time.time() + self.timeout_s
        while True:
            if p.poll() is not None:
                tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
                raise SweepError(f"the llama.cpp server of {name} exited with {p.returncode}: "
                                 f"{tail[0][:200] if tail else 'no output'} (log: {log})")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                    json.loads(r.read())
                return url
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise SweepError(f"the llama.cpp server of {name} did not answer /v1/models in "
                                     f"{self.timeout_s:.0f} s (log: {log})") from None
                time.sleep(0.5)

    def close(self) -> None:
        for p, f in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            f.close()
        self.procs.clear()


# ---------------------------------------------------------------- the sweep

def lock(out: Path):
    """One sweep per folder at a time (released by the kernel when the holder dies)."""
    import fcntl

    f = open(out / ".sweep.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SweepError(f"another sweep is running in {out}") from None
    return f


def leftover_runs(out: Path) -> list[int]:
    """Processes on this machine running `search run` into out/runs: an earlier sweep's runs outlive a
    kill -9 only briefly (a Ray worker notices its driver is gone within seconds), never on purpose."""
    needle = (str(out / "runs") + os.sep).encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:4] == [b"-m", b"search", b"run"] and any(a.startswith(needle) for a in args):
            pids.append(int(proc.name))
    return pids


def triage(cells, out: Path, journal: Path, past: list[dict]) -> tuple[list, list, dict]:
    """(cells to run with their mode, cells done, iterations stored per run)."""
    last_end = {r["run"]: r for r in past if r.get("event") == "end"}
    todo, done, counts = [], [], {}
    for cell in cells:
        folder = out / "runs" / cell.name
        state, n = run_state(folder)
        if state == "invalid":
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for suffix in ("", "-journal", "-wal", "-shm"):
                src = folder / f"run.sqlite{suffix}"
                if src.exists():
                    src.rename(folder / f"run.sqlite{suffix}.invalid-{stamp}")
            records.append(journal, {"event": "invalid_store", "run": cell.name, "time": time.time(),
                                     "moved_to": str(folder / f"run.sqlite.invalid-{stamp}")})
            state, n = "missing", 0
        counts[cell.name] = min(n, cell.iterations)
        end = last_end.get(cell.name)
        finished = state == "started" and (n >= cell.iterations or (
            end is not None and end.get("rc") == 0 and end.get("flags") == dict(cell.flags)
            and end.get("iterations") == n))
        if finished:
            done.append(cell)
        else:
            todo.append((cell, "resume" if state == "started" else "fresh", n))
    return todo, done, counts


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"


def sweep(cfg: SweepConfig) -> dict:
    """Run (or continue) the sweep; see the module docstring. Returns {"runs", "ran", "done", "compare"}."""
    if cfg.executor not in ("local", "ray"):
        raise SweepError(f"--executor must be local or ray, not {cfg.executor!r}")
    if cfg.parallel < 0:
        raise SweepError("--parallel must be >= 0 (0: every core)")
    spec = load_spec(cfg.spec, cfg.executor, cfg.address, cfg.evaluators, cfg.configurations)
    out = Path(cfg.out).absolute()  # the runs' --out, also where a Ray task's working directory differs
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "sweep.jsonl"
    with lock(out):
        wait_for_leftovers(out)
        try:
            past = records.read(journal, required=("event",), what="sweep record")
        except records.JournalError as exc:
            raise SweepError(str(exc)) from None
        print(f"config: {cfg}", file=sys.stderr)
        records.append(journal, {"event": "sweep", "time": time.time(), "config": dataclasses.asdict(cfg),
                                 "spec": spec.raw, "runs": len(spec.cells), "versions": records.versions("torch")})
        todo, done, counts = triage(spec.cells, out, journal, past)
        ran, failed = execute(cfg, spec, todo, len(done), counts, out, journal)
        compared = {}
        for ev in spec.evaluators:  # only evaluators whose runs all finished: a partial compare misleads
            cells = [c for c in spec.cells if c.ev == ev]
            if not any(c.name in failed for c in cells):
                compared[ev] = compare_runs(out, ev, cells, journal)
    if failed:
        first = next(iter(failed))
        raise SweepError(f"{len(failed)} of {len(spec.cells)} runs failed (first: {first}: {failed[first]}); "
                         f"logs in {out / 'logs'}; run the sweep again to retry them")
    return {"runs": len(spec.cells), "ran": ran, "done": len(spec.cells) - len(failed), "compare": compared}


def wait_for_leftovers(out: Path, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while (pids := leftover_runs(out)) and time.time() < deadline:
        time.sleep(0.5)
    if pids:
        raise SweepError(f"runs of an earlier sweep still write into {out / 'runs'} (pids "
                         f"{', '.join(map(str, pids[:5]))}): stop them, then run the sweep again")


def execute(cfg: SweepConfig, spec: Spec, todo: list, done: int, counts: dict, out: Path,
            journal: Path) -> tuple[list[str], dict]:
    """Serve the gguf models, run the cells of todo (cell, mode, iterations stored) `parallel` at a time
    with one progress bar, journal each start and end; stop servers and runs on any exit.
    Returns (runs that ran, {failed run: its log's last line})."""
    from tqdm import tqdm

    parser, logs = run_parser(), out / "logs"
    logs.mkdir(exist_ok=True)
    servers, executor = LlamaServers(logs, cfg.server_timeout_s), None
    bar = tqdm(total=sum(c.iterations for c in spec.cells), initial=sum(counts.values()), desc="sweep",
               unit="it", disable=not cfg.progress, mininterval=1.0, dynamic_ncols=True)
    ran, failed, pending, running = [], {}, list(todo), {}

    def postfix():
        bar.set_postfix_str(f"runs {done}/{len(spec.cells)}" + (f", failed {len(failed)}" if failed else ""))

    try:
        urls = {name: servers.start(name, s) for name, s in spec.servers.items()
                if any(c.config == name for c, _, _ in todo)}
        executor = LocalExecutor(cfg.parallel) if cfg.executor == "local" else RayExecutor(cfg.parallel, cfg.address)
        env = child_env(max(1, (os.cpu_count() or 1) // executor.parallel) if cfg.executor == "local" else 1)
        postfix()
        while pending or running:
            while pending and len(running) < executor.parallel:
                cell, mode, n = pending.pop(0)
                served = {"llm_url": urls[cell.config]} if cell.config in urls else None
                argv = ["run", *cell.argv(parser, out, served), *(["--resume"] if mode == "resume" else [])]
                pid = executor.submit(cell.name, argv, str(logs / f"{cell.name}.log"), env)
                records.append(journal, {"event": "start", "run": cell.name, "mode": mode, "iterations": n,
                                         "argv": argv, "pid": pid, "time": time.time()})
                running[cell.name] = (cell, time.time())
            time.sleep(0.5)
            finished = executor.poll()
            for name, (cell, _) in running.items():  # progress: iterations stored so far
                now = stored_iterations(out / "runs" / name)
                if now is not None and min(now, cell.iterations) > counts[name]:
                    bar.update(min(now, cell.iterations) - counts[name])
                    counts[name] = min(now, cell.iterations)
            for name, rc in finished:
                cell, t0 = running.pop(name)
                n = stored_iterations(out / "runs" / name) or 0
                records.append(journal, {"event": "end", "run": name, "rc": rc, "iterations": n,
                                         "flags": dict(cell.flags), "seconds": time.time() - t0, "time": time.time()})
                ran.append(name)
                if rc == 0:
                    done += 1
                    bar.write(f"done {name}: {n} iterations in {time.time() - t0:.0f} s")
                else:
                    failed[name] = _last_line(logs / f"{name}.log")
                    bar.write(f"failed {name} (exit {rc}): {failed[name]}")
                postfix()
    finally:
        bar.close()
        if executor is not None:
            executor.close()
        servers.close()
    return ran, failed


def compare_runs(out: Path, ev: str, cells: list[Cell], journal: Path) -> str:
    from search.compare import compare

    dest = out / f"compare-{ev}"
    compare([str(out / "runs" / c.name) for c in cells], str(dest))
    records.append(journal, {"event": "compare", "evaluator": ev, "out": str(dest), "time": time.time()})
    return str(dest)
