"""Every non-LLM strategy (`search.strategies`) searches a whole Channel-Bench-Macro-shaped table, with
and without a FLOPs budget: no strategy crashes (a budget once stopped `--strategy gp` with Optuna's
"constraint names must be the same for all trials"), every iteration is stored, the budget holds for
every evaluated candidate of a strategy that knows costs before evaluating, and one rng seed gives one
sequence of proposals.

The table is synthetic and complete (all 16,384 keys of `cbm-mobilenet`): accuracy additive in the
slot indices plus a small deterministic jitter, FLOPs additive too, so a budget cuts the space in
about half; parameter counts are real (the table evaluator holds a candidate's against the table's):
the network's count is a quadratic polynomial of its widths, fitted exactly on 60 configurations built
on the meta device and checked on 10 more.
"""
import hashlib
import itertools
import json

import pytest

from search.loop import SearchConfig
from search.runner import load_run, run
from search.strategies import STRATEGIES
from search.strategies.traits import takes_scorer, uses_llm

SPACE = "cbm-mobilenet"
BUDGET = 1_000_000  # FLOPs: about half of the synthetic space


def params_of_every_key():
    """{key: parameter count} for all 16,384 keys, from a quadratic fit of 60 meta-device builds."""
    import random
    import re

    import numpy as np

    from corpus.spaces import SPACES, widths_of
    from mutator.probe import build, load
    from mutator.seeds import seed_source

    info = SPACES[SPACE]

    def count(key):
        src = re.sub(r"^WIDTHS = \[[^\]]*\]$", f"WIDTHS = {widths_of(key, SPACE)}", seed_source(info["seed"]),
                     count=1, flags=re.M)
        return sum(p.numel() for p in build(load(src), {"in_shape": [1, 3, 32, 32], "classes": 10}, "meta").parameters())

    def features(key):
        w = widths_of(key, SPACE)
        return [1.0, *w, *(w[i] * w[j] for i in range(7) for j in range(i, 7))]

    rng = random.Random(0)
    keys = ["".join(rng.choice("1234") for _ in range(7)) for _ in range(70)]
    counts = np.array([count(k) for k in keys], float)
    coef = np.linalg.lstsq(np.array([features(k) for k in keys[:60]]), counts[:60], rcond=None)[0]
    fit = np.array([features(k) for k in keys[60:]]) @ coef
    assert np.abs(fit - counts[60:]).max() < 0.5, "the parameter count is not a quadratic of the widths"
    every = ["".join(str(i + 1) for i in idx) for idx in itertools.product(range(4), repeat=7)]
    return dict(zip(every, np.rint(np.array([features(k) for k in every]) @ coef).astype(int).tolist()))


@pytest.fixture(scope="module")
def full_table(tmp_path_factory):
    from corpus.spaces import SPACES

    params = params_of_every_key()
    table = {}
    for idx in itertools.product(range(4), repeat=7):
        key = "".join(str(i + 1) for i in idx)
        jitter = int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) / 16 ** 6
        mean = 85 + sum((1 + s % 3) * i for s, i in enumerate(idx)) / 4 + jitter / 5
        table[key] = {"acc": [mean - 0.1, mean, mean + 0.1], "mean": mean, "std": 0.1,
                      "flops": 600_000 + 30_000 * sum(i * (1 + s % 2) for s, i in enumerate(idx)),
                      "params": params[key]}
    path = tmp_path_factory.mktemp("full") / SPACES[SPACE]["file"]
    path.write_text(json.dumps(table))
    return path, table


def search(tmp_path, table_file, strategy, rng_seed=0, budget=None, iterations=8):
    out = tmp_path / f"{strategy}-{rng_seed}-{budget}"
    cfg = SearchConfig(strategy=strategy, evaluator=f"table:{SPACE}", seed=SPACE, iterations=iterations,
                       rng_seed=rng_seed, benchmark_file=str(table_file), max_flops=budget, out=str(out))
    run(cfg, progress=False)
    return load_run(str(out))[1]


# the strategies that need nothing but the table (an LLM proposer or a scorer model is tested elsewhere)
NAMES = sorted(s for s in STRATEGIES if not uses_llm(s) and not takes_scorer(s))


def test_every_baseline_strategy_is_registered():
    assert set(NAMES) >= {"random", "mutation", "largest", "evolution", "tpe", "gp", "surrogate"}


@pytest.mark.parametrize("budget", [pytest.param(None, marks=pytest.mark.slow), BUDGET], ids=["unconstrained", "budget"])
@pytest.mark.parametrize("strategy", NAMES)
def test_a_strategy_searches_the_table_within_its_limits(tmp_path, full_table, strategy, budget):
    path, table = full_table
    iters = search(tmp_path, path, strategy, budget=budget)
    assert len(iters) == 8
    keys = [r["metrics"]["table_key"] for r in iters if r["status"] == "ok"]
    assert keys and len(set(keys)) == len(keys)  # evaluated candidates are new configurations
    if budget and strategy != "mutation":  # the others know a configuration's cost before proposing it:
        # no proposal is over the budget (a budget they do not see shows as `constraint` iterations)
        assert [r["status"] for r in iters] == ["ok"] * 8, [(r["status"], r["error"]) for r in iters]
        assert all(table[k]["flops"] <= budget for k in keys), [table[k]["flops"] for k in keys]
    if strategy == "largest":  # its first proposal: the widest configuration within the limits
        first = iters[0]["metrics"]["table_key"]
        fits = [k for k, e in table.items() if not budget or e["flops"] <= budget]
        assert sum(map(int, first)) == max(sum(map(int, k)) for k in fits)


@pytest.mark.parametrize("strategy", ["gp", *(pytest.param(s, marks=pytest.mark.slow) for s in ("tpe", "surrogate", "evolution"))])
def test_one_rng_seed_one_sequence_of_proposals(tmp_path, full_table, strategy):
    path, _ = full_table
    a = [r["metrics"].get("table_key") for r in search(tmp_path / "a", path, strategy, rng_seed=4, budget=BUDGET, iterations=7)]
    b = [r["metrics"].get("table_key") for r in search(tmp_path / "b", path, strategy, rng_seed=4, budget=BUDGET, iterations=7)]
    c = [r["metrics"].get("table_key") for r in search(tmp_path / "c", path, strategy, rng_seed=5, budget=BUDGET, iterations=7)]
    assert a == b and a != c


@pytest.mark.parametrize("strategy", ["largest", "random"])
def test_a_strategy_that_reads_costs_gets_them_in_a_code_space_without_limits(tmp_path, monkeypatch, strategy):
    """`largest` ranks its greedy steps by accuracy gained per FLOP (and `scored` writes FLOPs and params into its
    prompts): in a code space the costs come from sandboxed pre-checks, which the runner once made only where a
    limit asked for them, so in a run without limits `largest` saw no FLOPs at all. `random` reads none."""
    import re

    import search.runner as runner
    from search.strategies.traits import reads_costs

    assert reads_costs("largest") and reads_costs("scored") and not reads_costs("random")
    checked = []

    def fake_pre_checker(cfg, spec, ev, closers):
        def measure(code):
            checked.append(code)
            return {"status": "ok", "error": None, "flops": len(code), "params": 1}
        return measure

    monkeypatch.setattr(runner, "pre_checker", fake_pre_checker)

    def evaluate(code):
        widths = [int(v) for v in re.findall(r"\d+", code)[:3]]
        return {"status": "ok", "accuracy": 0.5 + sum(widths) / 10_000, "flops": len(code), "params": 1}

    cfg = SearchConfig(strategy=strategy, seed="lenet", iterations=3, improver_llm="rule", out=str(tmp_path / "r"))
    run(cfg, evaluate=evaluate, progress=False)
    iters = load_run(str(tmp_path / "r"))[1]
    assert len(iters) == 3
    assert bool(checked) == (strategy == "largest")
    if strategy == "largest":  # the widest grid point first, without a pre-check of every configuration of the
        # space (the enumeration once asked each one's cost: hours of sandboxed builds on vgg-small's space)
        assert iters[0]["raw_answer"].endswith("(widest that fits)") and len(checked) < 60


@pytest.mark.parametrize("flag, value", [("--max-flops", "0"), ("--max-flops", "-1"), ("--max-params", "nan"),
                                         ("--max-latency-ms", "inf")])
def test_a_limit_that_is_not_a_positive_number_is_a_one_line_error(tmp_path, full_table, capsys, flag, value):
    """`--max-flops 0` was read as "no limit" (a falsy budget) and -1 as a budget nothing fits: both ran."""
    from search.__main__ import main

    path, _ = full_table
    assert main(["run", "--strategy", "random", "--evaluator", f"table:{SPACE}", "--benchmark-file", str(path),
                 flag, value, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {flag} must be a number > 0") and "\n" not in err
    assert not (tmp_path / "r").exists()
