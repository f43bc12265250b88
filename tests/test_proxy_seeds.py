"""`--proxy-seeds K` (issue 30): a network's accuracy as the mean of K training runs under rng seeds
S..S+K-1, one policy (`corpus.evaluator.evaluate_seeds`) for `corpus profile`, `corpus build` and
`search run`; the seed policy in every row and in the dataset card."""
import json
import statistics
import textwrap

import pytest

from conftest import assert_one_line_error, run_module
from corpus.evaluator import evaluate_seeds, seed_columns
from corpus.evaluators import EVALUATORS, register_evaluator
from search.cli import given_flags, run_parser
from search.llm import ScriptedLLM
from search.loop import SearchConfig, SearchError, check_config
from search.runner import load_run, run
from search.store import RunStore
from test_corpus import needs_fashion, write_variants

FAST = ("--train-limit", 512, "--min-steps", 30, "--timeout-s", 120)  # 30 steps of 32 images: seconds a run
# one thread per sandboxed worker: on a busy CPU an op split over 2 threads waits whole time slices for the
# descheduled one (measured here: 30 steps of the tiny network 3.8 s on 2 threads, 0.12 s on one)


def tiny(extra: str = "pass") -> str:
    return textwrap.dedent(f"""
        import torch, torch.nn as nn

        class Net(nn.Module):
            def __init__(self, in_shape, out_shape, prm, device):
                super().__init__()
                {extra}
                self.conv = nn.Conv2d(in_shape[1], 8, 3, padding=1)
                self.fc = nn.Linear(8, out_shape[0])

            def forward(self, x):  # on 7x7 pooled images: next to nothing to compute
                return self.fc(torch.relu(self.conv(nn.functional.avg_pool2d(x, 4))).mean((2, 3)))
    """)


# torch.initial_seed() is the recipe's seed: corpus.pipeline seeds torch with it before building the network
ODD = tiny("if torch.initial_seed() % 2: raise RuntimeError(f'odd seed {torch.initial_seed()}')")
POLICY = ("proxy_seeds", "accuracy_std", "accuracies")


# -- the policy, on scripted runs -------------------------------------------------------------------

def scripted(rows_by_seed: dict):
    seen = []

    def run_one(payload):
        seen.append(payload["recipe"]["seed"])
        return dict(rows_by_seed[payload["recipe"]["seed"]])
    return run_one, seen


def test_the_policy_mean_std_first_failure_and_single_runs():
    ok = {s: {"status": "ok", "error": None, "accuracy": a, "train_seconds": 1.5, "flops": 100 + s}
          for s, a in ((5, 0.5), (6, 0.625), (7, 0.75))}
    payload = {"data_path": "x", "recipe": {"seed": 5, "train_limit": 512}}
    run_one, seen = scripted(ok)
    row = evaluate_seeds(run_one, payload, 3)
    assert seen == [5, 6, 7] and payload["recipe"]["seed"] == 5  # the caller's payload is not changed
    assert row["accuracy"] == 0.625 and row["accuracies"] == [0.5, 0.625, 0.75] and row["proxy_seeds"] == 3
    assert row["accuracy_std"] == statistics.stdev([0.5, 0.625, 0.75]) and row["train_seconds"] == 4.5
    assert row["flops"] == 105  # every other measurement: the first run's
    # K = 1: the run's row unchanged, plus the policy's columns
    run_one, seen = scripted(ok)
    row = evaluate_seeds(run_one, payload, 1)
    assert seen == [5] and {k: v for k, v in row.items() if k not in POLICY} == ok[5]
    assert (row["proxy_seeds"], row["accuracy_std"], row["accuracies"]) == (1, None, None)
    # a later seed's failure is the row: its status, its error naming the seed
    bad = {**ok, 6: {"status": "train_error", "error": "RuntimeError: no", "accuracy": None}}
    run_one, seen = scripted(bad)
    row = evaluate_seeds(run_one, payload, 3)
    assert seen == [5, 6] and row["status"] == "train_error" and row["accuracy"] is None
    assert row["error"] == "rng seed 6 (proxy seed 2 of 3): RuntimeError: no" and row["accuracies"] is None
    # a first run that is not ok (a limit's constraint) and a request that trains nothing run once
    run_one, seen = scripted({5: {"status": "constraint", "error": "2e+06 FLOPs > limit 1e+06"}})
    assert evaluate_seeds(run_one, payload, 3)["status"] == "constraint" and seen == [5]
    for untrained in ({**payload, "zero_cost": "only"}, {**payload, "train": False}):
        run_one, seen = scripted(ok)
        assert evaluate_seeds(run_one, untrained, 3)["accuracy_std"] is None and seen == [5]
    # stored rows: checked, and a row from before the columns existed is one seed
    assert seed_columns({"status": "ok", "accuracy": 0.5}) == {"proxy_seeds": 1, "accuracy_std": None,
                                                               "accuracies": None}
    assert seed_columns({"status": "nan", "proxy_seeds": 2, "accuracy_std": 0.1, "accuracies": [0.1, 0.2]}) == \
        {"proxy_seeds": 2, "accuracy_std": None, "accuracies": None}


# -- bad K: one line, exit 2 ------------------------------------------------------------------------

def test_bad_k_is_a_one_line_error(tmp_path):
    write_variants(tmp_path / "v", {"a": tiny()})
    assert_one_line_error(run_module("corpus", "build", "--variants", tmp_path / "v", "--dataset", "fashion-mnist",
                                     "--out", tmp_path / "o", "--proxy-seeds", 0), "--proxy-seeds must be >= 1")
    assert not (tmp_path / "o").exists()
    (tmp_path / "m.py").write_text(tiny())
    assert_one_line_error(run_module("corpus", "profile", tmp_path / "m.py", "--dataset", "fashion-mnist",
                                     "--proxy-seeds", -1), "--proxy-seeds must be >= 1")
    assert_one_line_error(run_module("corpus", "profile", tmp_path / "m.py", "--evaluator", "table:cbm-resnet",
                                     "--proxy-seeds", 2), "trains nothing")
    assert_one_line_error(run_module("search", "run", "--strategy", "mutation", "--out", tmp_path / "r",
                                     "--proxy-seeds", 0), "--proxy-seeds must be >= 1")
    assert not (tmp_path / "r").exists()
    # a table evaluator trains nothing: K > 1 is refused (K = 1 is its plain lookup)
    with pytest.raises(SearchError, match=r"^--proxy-seeds 2 averages training runs: --evaluator table:cbm-resnet "
                                          r"trains nothing"):
        check_config(SearchConfig(strategy="random", evaluator="table:cbm-resnet", proxy_seeds=2))
    check_config(SearchConfig(strategy="random", evaluator="table:cbm-resnet", proxy_seeds=1))


# -- corpus profile and corpus build, trained for real ----------------------------------------------

def profiled(path, *flags) -> dict:
    """`corpus profile`'s row: its own parser and function (`cmd_profile` prints this row), in this
    process (a process start-up costs as much as the tiny network's training on a busy CPU)."""
    from corpus.__main__ import make_parser
    from corpus.profiler import profile_file

    return profile_file(make_parser().parse_args(["profile", str(path), "--dataset", "fashion-mnist",
                                                  *map(str, FAST), *map(str, flags)]))


@needs_fashion
def test_profile_k2_is_the_mean_of_the_two_single_seed_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("NASFORGE_THREADS", "1")  # corpus.evaluator.worker_threads (see FAST)
    f = tmp_path / "m.py"
    f.write_text(tiny())
    one, two = profiled(f, "--rng-seed", 3), profiled(f, "--rng-seed", 4)
    both = profiled(f, "--rng-seed", 3, "--proxy-seeds", 2)
    for r in (one, two, both):
        assert r["status"] == "ok", r
    a, b = one["accuracy"], two["accuracy"]
    assert both["accuracies"] == [a, b]  # the same requests: each seed's run is reproduced exactly
    assert both["accuracy"] == (a + b) / 2 and both["accuracy_std"] == statistics.stdev([a, b])
    assert both["proxy_seeds"] == 2 and both["flops"] == one["flops"] and both["params"] == one["params"]
    assert both["train_seconds"] > one["train_seconds"] / 2
    assert json.loads(both["recipe"])["seed"] == 3  # the row's recipe is the first seed's
    # K = 1: today's row, plus the policy's columns
    assert (one["proxy_seeds"], one["accuracy_std"], one["accuracies"]) == (1, None, None)
    assert set(one) == set(both)


@needs_fashion
def test_build_k2_columns_card_a_failing_seed_an_old_journal_and_resume(tmp_path):
    import datasets

    variants = tmp_path / "v"
    write_variants(variants, {"a": tiny(), "odd": ODD, "old": tiny("self.k = 3")})
    out = tmp_path / "c"
    out.mkdir()
    old = {"id": "old", "parent": "test", "code": tiny("self.k = 3"), "sha256": "0" * 64, "widths": [8],
           "status": "ok", "error": None, "accuracy": 0.5, "train_seconds": 1.0, "dataset": "fashion-mnist",
           "recipe": "{}", "versions": "{}", "profiled_at": "2025-01-01T00:00:00", "zero_cost": "off"}
    (out / "rows.jsonl").write_text(json.dumps(old) + "\n")  # journalled before the seed policy's columns
    cmd = ("corpus", "build", "--variants", variants, "--dataset", "fashion-mnist", "--out", out, *FAST,
           "--proxy-seeds", 2, "--workers", 2)  # 2 workers of one thread each (see FAST)
    res = run_module(*cmd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "profiled 2 variants" in res.stdout and "1 already in the corpus" in res.stdout
    rows = {r["id"]: r for r in datasets.load_from_disk(str(out))}
    r = rows["a"]
    assert r["status"] == "ok" and r["proxy_seeds"] == 2 and len(r["accuracies"]) == 2, r
    assert r["accuracy"] == sum(r["accuracies"]) / 2 and r["accuracy_std"] == statistics.stdev(r["accuracies"])
    assert r["train_seconds"] > 0 and r["flops"] > 0 and r["latency_ms"] > 0
    # seed 0 builds it, seed 1 does not: the network fails, with the failing run's status and error
    odd = rows["odd"]
    assert odd["status"] == "build_error" and odd["accuracy"] is None and odd["accuracies"] is None
    assert odd["error"].startswith("rng seed 1 (proxy seed 2 of 2): ") and "odd seed 1" in odd["error"]
    assert (rows["old"]["proxy_seeds"], rows["old"]["accuracy_std"], rows["old"]["accuracies"]) == (1, None, None)
    journal = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert all(set(POLICY) <= set(r) for r in journal[1:]) and journal[0] == old
    card = (out / "README.md").read_text()
    assert "## Seed policy\nEvery network of this corpus is trained with the same rng seeds 0..1" in card
    assert "common random numbers" in card and "`accuracy` is the mean over the 2 runs" in card
    assert "1 with proxy_seeds 1" in card  # the old journal's row, counted
    # resume (the command's own function, in this process): the journal, new columns and old row alike,
    # replays; nothing is profiled again, the dataset is written again the same
    from corpus.build import BuildConfig, build

    res = build(BuildConfig(variants=str(variants), dataset="fashion-mnist", out=str(out), train_limit=512,
                            min_steps=30, proxy_seeds=2), progress=False)
    assert (res["profiled"], res["skipped"], res["rows"]) == (0, 3, 3)
    again = {r["id"]: r for r in datasets.load_from_disk(str(out))}
    assert again == rows


# -- search run ----------------------------------------------------------------------------------------

SEED = "WIDTH = 16\nclass Net:\n    pass\n"


class SeededToy:
    """A toy evaluator that trains (`trains`): per rng seed, accuracy = (WIDTH + seed) / 100, under the seed
    policy it is handed (`proxy_seeds`, an option of every run's evaluator)."""

    trains, lookup_only, spaced, table, table_space = True, False, False, False, None
    made: list = []

    @classmethod
    def from_spec(cls, spec, recipe: dict, proxy_seeds: int = 1, **options):
        ev = cls(recipe, proxy_seeds)
        cls.made.append(ev)
        return ev

    def __init__(self, recipe: dict, k: int):
        self.recipe, self.k = recipe, k

    def evaluate(self, cand, limits=None) -> dict:
        import re

        w = int(re.search(r"WIDTH = (\d+)", cand if isinstance(cand, str) else cand.code).group(1))

        def run_one(p):
            return {"status": "ok", "accuracy": (w + p["recipe"]["seed"]) / 100, "flops": w, "train_seconds": 1.0}
        return evaluate_seeds(run_one, {"data_path": "x", "recipe": self.recipe}, self.k)

    def check(self, cand, **_) -> dict:
        return {"status": "ok"}

    def close(self) -> None:
        pass


@pytest.fixture
def seeded_toy():
    register_evaluator("seeded", SeededToy)
    SeededToy.made.clear()
    yield SeededToy
    EVALUATORS.pop("seeded")


def code_with(width: int) -> str:
    return f"```python\nWIDTH = {width}\nclass Net:\n    pass\n```"


def test_search_run_stores_k_and_resumes_with_it(tmp_path, seeded_toy):
    (tmp_path / "seed.py").write_text(SEED)
    assert run_parser().parse_args(["--proxy-seeds", "2"]).proxy_seeds == 2
    assert "proxy_seeds" in given_flags(["run", "--proxy-seeds", "2"])
    assert "proxy_seeds" not in given_flags(["run", "--out", "x", "--resume", "--iterations", "3"])
    base = {"llm": "scripted", "seed": str(tmp_path / "seed.py"), "out": str(tmp_path / "r"),
            "improver_llm": "rule", "answer_format": "code", "evaluator": "seeded", "rng_seed": 10}
    run(SearchConfig(**base, iterations=2, proxy_seeds=2), llm=ScriptedLLM([code_with(w) for w in (20, 30)]),
        progress=False)
    cfg, iters, seed_row = load_run(str(tmp_path / "r"))
    assert cfg.proxy_seeds == 2 and seeded_toy.made[-1].k == 2
    assert seed_row["accuracies"] == [0.26, 0.27] and seed_row["accuracy"] == pytest.approx(0.265)
    assert [r["metrics"]["accuracies"] for r in iters] == [[0.3, 0.31], [0.4, 0.41]]
    assert all(r["metrics"]["proxy_seeds"] == 2 for r in iters)
    # --resume without the flag (the CLI's given flags) keeps the stored K
    run(SearchConfig(**base, iterations=3), resume=True, given={"out", "iterations"},
        llm=ScriptedLLM([code_with(40)]), progress=False)
    cfg, iters, _ = load_run(str(tmp_path / "r"))
    assert cfg.proxy_seeds == 2 and seeded_toy.made[-1].k == 2 and iters[-1]["metrics"]["accuracies"] == [0.5, 0.51]
    # another K on a started run is refused, naming both values
    with pytest.raises(SearchError, match=r"^--proxy-seeds 3 differs from the stored run's 2"):
        run(SearchConfig(**base, iterations=4, proxy_seeds=3), resume=True, given={"out", "iterations", "proxy_seeds"},
            llm=ScriptedLLM([code_with(50)]), progress=False)
    # a run stored before the flag existed resumes with one seed
    store = RunStore(tmp_path / "r", create=False)
    store.set_meta("config", {k: v for k, v in store.meta("config").items() if k != "proxy_seeds"})
    store.close()
    assert load_run(str(tmp_path / "r"))[0].proxy_seeds == 1
