"""corpus.evaluators: the `--evaluator` spec parsed once, the registry, a toy evaluator added from
outside and a search run through it, the frozen Candidate, and a table lookup that builds nothing
when the candidate's widths are known."""
import dataclasses
import re
from pathlib import Path

import pytest

from conftest import ROOT
from corpus.candidate import Candidate, as_candidate
from corpus.evaluators import EVALUATORS, EvaluatorSpec, evaluator_name, parse_evaluator, register_evaluator
from search.llm import ScriptedLLM
from search.loop import SearchConfig, SearchError, check_config
from search.runner import load_run, run

SEED = "WIDTH = 16\nclass Net:\n    pass\n"


class Toy:
    """`--evaluator toy:CAP`: accuracy = min(WIDTH, CAP) / 100, no training, nothing built."""

    trains, lookup_only, spaced, table, table_space = False, False, True, False, None
    made: list = []

    @classmethod
    def from_spec(cls, spec, **options):
        ev = cls(int(spec.space))
        cls.made.append(ev)
        return ev

    def __init__(self, cap: int):
        self.cap, self.seen, self.closed = cap, [], False

    def evaluate(self, cand: Candidate) -> dict:
        self.seen.append(cand)
        w = int(re.search(r"WIDTH = (\d+)", cand.code).group(1))
        return {"status": "ok", "accuracy": min(w, self.cap) / 100, "flops": w * 1000, "params": w * 10}

    def check(self, cand: Candidate) -> dict:
        return {k: v for k, v in self.evaluate(cand).items() if k != "accuracy"}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def toy():
    register_evaluator("toy", Toy)  # the one registry line a new evaluator needs
    Toy.made.clear()
    yield Toy
    EVALUATORS.pop("toy")


def code_with(width: int) -> str:
    return f"```python\nWIDTH = {width}\nclass Net:\n    pass\n```"


def test_a_toy_evaluator_registered_from_outside_runs_a_search(tmp_path, toy):
    (tmp_path / "seed.py").write_text(SEED)
    cfg = SearchConfig(llm="scripted", seed=str(tmp_path / "seed.py"), out=str(tmp_path / "r"), iterations=4,
                       improver_llm="rule", answer_format="code", evaluator="toy:32")
    assert cfg.evaluator_spec == EvaluatorSpec("toy", "32") and not cfg.evaluator_spec.trains
    res = run(cfg, llm=ScriptedLLM([code_with(w) for w in (24, 40, 28, 20)]), progress=False)
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert [r["metrics"]["accuracy"] for r in iters] == [0.24, 0.32, 0.28, 0.20]  # WIDTH 40 capped at 32
    assert seed["accuracy"] == 0.16 and res["best"]["accuracy"] == 0.32
    (ev,) = toy.made
    assert ev.closed and all(isinstance(c, Candidate) for c in ev.seen)
    assert [c.proposer for c in ev.seen] == ["seed"] + ["scripted"] * 4
    assert [c.iteration for c in ev.seen[1:]] == [0, 1, 2, 3] and ev.seen[1].parent is None  # the best so far
    assert ev.seen[1].answer_format == "code" and ev.seen[1].widths is None


def test_the_spec_is_parsed_once_with_the_known_forms_in_its_error(toy):
    assert parse_evaluator("profile") == EvaluatorSpec("profile") and parse_evaluator("profile").trains
    t = parse_evaluator("table:cbm-mobilenet")
    assert (t.kind, t.space, t.table_space, t.lookup_only, t.trains) == \
        ("table", "cbm-mobilenet", "cbm-mobilenet", True, False)
    assert str(t) == "table:cbm-mobilenet" and evaluator_name("table:cbm-mobilenet") == "cbm-mobilenet"
    assert evaluator_name("toy:7") == "7" and evaluator_name("nope") == "nope"
    assert parse_evaluator("toy:7").table_space is None  # a space, but not a benchmark table's
    for bad in ("nope", "profile:x", "table", "table:", "toy"):
        with pytest.raises(ValueError, match=r"^--evaluator must be profile, table:SPACE or toy:SPACE, not "):
            parse_evaluator(bad)
    with pytest.raises(SearchError, match="--evaluator must be"):
        check_config(SearchConfig(evaluator="nope"))
    with pytest.raises(SearchError, match="needs --evaluator table:SPACE"):
        check_config(SearchConfig(evaluator="toy:3", benchmark_file="x.json"))
    with pytest.raises(ValueError):
        register_evaluator("a:b", Toy)


def test_no_evaluator_name_is_compared_outside_the_registry():
    """Everything asks the parsed spec (`corpus.evaluators`) or the evaluator object, never the text."""
    pattern = re.compile(r"""startswith\(\s*["']table:|evaluator\s*[!=]=|[!=]=\s*["'](profile|table)["']|"""
                         r"""["'](profile|table)["']\s*[!=]=|split\(\s*["']:["']""")
    bad = []
    for pkg in ("corpus", "search", "finetune", "mutator", "benchmarks"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f == ROOT / "corpus" / "evaluators.py":
                continue
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if "evaluator" in line.lower() and pattern.search(line) or "table:\")" in line:
                    bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_the_candidate_is_frozen_and_named_by_its_fingerprint():
    c = Candidate(code="x = 1", widths=[1, 2], proposer="random", iteration=3, parent=1)
    assert c.widths == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.code = "y"  # type: ignore[misc]
    d = dataclasses.replace(c, code="y = 2")
    assert c.code == "x = 1" and d.fingerprint != c.fingerprint and d.proposer == "random"
    assert Candidate(code=None, widths=(1, 2)).fingerprint == Candidate(code=None, widths=[1, 2]).fingerprint
    assert Candidate(code=None).fingerprint is None and as_candidate("z = 3") == Candidate(code="z = 3")


class CountingPool:
    def __init__(self):
        self.calls = []

    def call(self, *args, **kw):
        self.calls.append(args[0])
        raise AssertionError(f"a sandbox call for a table lookup: {args[0]}")

    def close(self):
        pass


@pytest.mark.parametrize("space", ["cbm-resnet", "cbm-mobilenet"])
def test_a_table_looks_known_widths_up_without_building_anything(tiny_cbm_dir, space):
    from corpus.evaluators import make_evaluator
    from corpus.spaces import SPACES, widths_of
    from corpus.table import TableEvaluator

    pool = CountingPool()
    ev = TableEvaluator(space, str(tiny_cbm_dir / SPACES[space]["file"]), pool=pool)
    for key in sorted(ev.table)[:5]:
        e = ev.table[key]
        cand = Candidate(code="not even python (", widths=widths_of(key, space), params=e["params"])
        row = ev.evaluate(cand)
        assert row["status"] == "ok" and row["table_key"] == key and row["accuracy"] == pytest.approx(e["mean"] / 100)
        pre = ev.check(cand)
        assert pre["flops"] == e["flops"] and "accuracy" not in pre
        # another structure with the same widths: its parameter count is still held against the table's
        other = ev.evaluate(dataclasses.replace(cand, params=e["params"] + 1))
        assert other["status"] == "out_of_space" and "structure differs" in other["error"]
    assert pool.calls == []  # 0 builds, 0 sandbox calls per lookup
    made = make_evaluator(f"table:{space}", benchmark_file=str(tiny_cbm_dir / SPACES[space]["file"]))
    try:
        assert made.table_space == space and made.lookup_only and not made.trains
    finally:
        made.close()


def test_a_table_run_of_a_strategy_builds_nothing_to_look_its_candidates_up(tmp_path, tiny_cbm_dir, monkeypatch):
    """--strategy random on a table: each candidate is the seed realised by the mutator (its widths and
    parameter count known), so the table analyses only the seed."""
    from corpus.spaces import SPACES
    from corpus.table import TableEvaluator

    analysed, widths = [], TableEvaluator.widths
    monkeypatch.setattr(TableEvaluator, "widths", lambda self, code: analysed.append(code) or widths(self, code))
    space = "cbm-mobilenet"
    cfg = SearchConfig(strategy="random", evaluator=f"table:{space}", iterations=3, rng_seed=3,
                       benchmark_file=str(tiny_cbm_dir / SPACES[space]["file"]), out=str(tmp_path / "r"))
    run(cfg, progress=False)
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert len(iters) == 3 and all(r["metrics"]["table_key"] for r in iters if r["status"] == "ok")
    assert len(analysed) == 1 and not any(r["code"] in analysed for r in iters)


def test_an_analysis_is_asked_of_the_sandbox_once_and_its_memo_cannot_be_changed_by_a_caller():
    """`mutator.calls.analyze` remembers an analysis that succeeded (a run's strategy, evaluator and pre-check
    each analyse the seed); a failed one is asked again; what a caller does to its copy stays with it."""
    from mutator import calls

    class Pool:
        def __init__(self, answers):
            self.answers, self.asked = list(answers), 0

        def call(self, handler, payload, timeout_s=None):
            self.asked += 1
            return self.answers.pop(0)

    ok = {"status": "ok", "groups": [{"value": 16}], "seed_widths": [16], "params": 10}
    src = "class Net: pass  # memo test %s" % id(Pool)
    pool = Pool([{"status": "timeout", "error": "no answer"}, ok])
    assert calls.analyze(pool, src, {"classes": 10}).status == "timeout"
    a = calls.analyze(pool, src, {"classes": 10})
    assert a.ok and pool.asked == 2
    a.seed_widths.append(99)
    a.groups[0]["value"] = 0
    b = calls.analyze(pool, src, {"classes": 10})
    assert pool.asked == 2 and b.seed_widths == [16] and b.groups == [{"value": 16}]
    pool.answers.append(ok)
    calls.analyze(pool, src, {"classes": 100})  # another spec is another analysis
    assert pool.asked == 3
