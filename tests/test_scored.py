"""`--strategy scored`: a language model scores a pool of new configurations per iteration, a ridge head
recalibrates its scores on the run's own rows, and an acquisition with an exploration share and FLOPs
niches picks one. On the synthetic complete table of test_strategies (accuracy additive in the slot
indices), with scripted scorers: one that reads the prompt's width ratios (informative) and one that
answers the same number for every network (uninformative, as the base SmolLM2 does)."""
import math
import re

import pytest

from search.loop import SearchConfig
from search.runner import load_run, run
from test_strategies import BUDGET, SPACE, full_table  # noqa: F401  (the module-scoped table fixture)


class WidthReader:
    """Answers the accuracy a network's width ratios suggest (wider is better), as a tuned scorer would."""

    def __init__(self, constant: float | None = None):
        self.calls, self.constant = 0, constant

    def generate(self, messages, temperature=0.0, max_new_tokens=8, seed=None, **kw):
        self.calls += 1
        if self.constant is not None:
            return f"{self.constant:.1f}"
        user = messages[-1]["content"]
        assert "Family: Channel-Bench-Macro" in user and "benchmark table" in user  # as the score task's rows
        ratios = [float(x) for x in re.findall(r"x([0-9.]+)", user.split("widths ")[1].split(";")[0])]
        return f"{80 + 3 * sum(math.log2(r) for r in ratios):.1f}"


def scored(tmp_path, table_file, scorer, name="s", iterations=8, rng_seed=0, budget=None, **kw):
    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE,
                       iterations=iterations, rng_seed=rng_seed, benchmark_file=str(table_file), max_flops=budget,
                       out=str(tmp_path / name), scorer_pool=32, **kw)
    run(cfg, llm=scorer, progress=False)
    return load_run(str(tmp_path / name))[1]


def best_rank(iters, table) -> int:
    order = sorted(table, key=lambda k: -table[k]["mean"])
    rank = {k: i + 1 for i, k in enumerate(order)}
    return min(rank[r["metrics"]["table_key"]] for r in iters if r["status"] == "ok")


def test_an_informative_scorer_finds_better_networks_than_an_uninformative_one(tmp_path, full_table):  # noqa: F811
    path, table = full_table
    # uniform pools (--pool-local 0): the LM's scores are all that differs between the two runs
    good = scored(tmp_path, path, WidthReader(), "good", explore=0.0, pool_local=0.0)
    flat = scored(tmp_path, path, WidthReader(constant=85.0), "flat", explore=0.0, pool_local=0.0)
    assert [r["status"] for r in good] == ["ok"] * 8
    keys = [r["metrics"]["table_key"] for r in good]
    assert len(set(keys)) == 8  # new configurations only
    assert all("LM " in r["raw_answer"] and "FLOPs niche" in r["raw_answer"] for r in good)
    # before the head has STARTUP rows of the run's own, the LM's scores alone decide
    assert best_rank(good[:3], table) < best_rank(flat[:3], table), (best_rank(good[:3], table),
                                                                     best_rank(flat[:3], table))
    assert best_rank(good[:3], table) <= 500  # of 16,384: the width reader knows "wider is better" here


def test_the_niche_bonus_spreads_the_picks_over_flops(tmp_path, full_table):  # noqa: F811
    path, table = full_table
    iters = scored(tmp_path, path, WidthReader(), "niches", iterations=8, explore=0.0, pool_local=0.0)
    flops = sorted(e["flops"] for e in table.values())
    q1 = flops[len(flops) // 4]
    # a pure "widest first" scorer would keep to the top FLOPs; the bonus makes it visit more than one niche
    niches = {re.search(r"FLOPs niche (\d)", r["raw_answer"]).group(1) for r in iters}
    assert len(niches) >= 2, niches
    assert all(table[r["metrics"]["table_key"]]["flops"] > q1 for r in iters[:3])  # it starts where the LM points


def test_budget_exploration_and_one_rng_seed_one_sequence(tmp_path, full_table):  # noqa: F811
    path, table = full_table
    a = scored(tmp_path, path, WidthReader(), "a", budget=BUDGET, rng_seed=3, explore=0.3)
    b = scored(tmp_path, path, WidthReader(), "b", budget=BUDGET, rng_seed=3, explore=0.3)
    assert [r["metrics"]["table_key"] for r in a] == [r["metrics"]["table_key"] for r in b]
    assert all(table[r["metrics"]["table_key"]]["flops"] <= BUDGET for r in a)
    assert any("uniform (exploration)" in r["raw_answer"] for r in a)


def test_the_pool_near_the_best_refines_it(tmp_path, full_table):  # noqa: F811
    """--pool-local 1: after the first (uniform) pool, every pick is one or two slot changes of one of the
    TOP best evaluated configurations before it; --pool-local 0: the pools are uniform (no such pick)."""
    from search.strategies.scored import TOP

    path, _ = full_table
    key = lambda r: r["metrics"]["table_key"]  # noqa: E731  (one digit per slot: its width's index)
    near = scored(tmp_path, path, WidthReader(), "near", iterations=5, explore=0.0, pool_local=1.0)
    far = scored(tmp_path, path, WidthReader(), "far", iterations=5, explore=0.0, pool_local=0.0)
    assert "near the best" not in near[0]["raw_answer"]
    for i, r in enumerate(near[1:], 1):
        assert "near the best" in r["raw_answer"], r["raw_answer"]
        before = sorted(near[:i], key=lambda x: -x["metrics"]["accuracy"])[:TOP]
        assert min(sum(a != b for a, b in zip(key(r), key(x))) for x in before) in (1, 2)
    assert not any("near the best" in r["raw_answer"] for r in far)


def test_a_resumed_run_proposes_what_the_uninterrupted_run_did(tmp_path, full_table):  # noqa: F811
    path, _ = full_table
    whole = scored(tmp_path, path, WidthReader(), "whole", iterations=7)
    scored(tmp_path, path, WidthReader(), "cut", iterations=4)
    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE, iterations=7,
                       benchmark_file=str(path), out=str(tmp_path / "cut"), scorer_pool=32)
    run(cfg, resume=True, llm=WidthReader(), progress=False)
    again = load_run(str(tmp_path / "cut"))[1]
    assert [r["metrics"]["table_key"] for r in again] == [r["metrics"]["table_key"] for r in whole]


def test_another_strategys_proposals_join_the_pool(tmp_path, full_table):  # noqa: F811
    """--pool-from largest: the pool holds largest's next proposals, asked of a `Largest` fed the run's history.
    A scorer with one answer for every network leaves the order of the pool to decide (the first member wins
    ties), so until the head has STARTUP rows the run evaluates exactly what `--strategy largest` would."""
    from search.strategies.scored import STARTUP
    from test_strategies import search as plain

    path, _ = full_table
    key = lambda r: r["metrics"]["table_key"]  # noqa: E731
    alone = plain(tmp_path / "alone", path, "largest", iterations=STARTUP)
    flat = scored(tmp_path, path, WidthReader(constant=85.0), "flat", iterations=STARTUP + 2, explore=0.0,
                  pool_local=0.0, pool_from="largest", pool_from_n=4)
    assert [key(r) for r in flat[:STARTUP]] == [key(r) for r in alone]
    assert all("from largest (" in r["raw_answer"] for r in flat[:STARTUP])
    assert len({key(r) for r in flat}) == len(flat)  # its proposals are new each time
    # a scorer that reads the widths picks one of largest's (the widest) over 28 uniform draws
    wide = scored(tmp_path, path, WidthReader(), "wide", iterations=1, explore=0.0, pool_local=0.0,
                  pool_from="largest", pool_from_n=4)
    assert "from largest (widest that fits)" in wide[0]["raw_answer"] and sum(map(int, key(wide[0]))) >= 27
    # a resumed run proposes what the uninterrupted one did (the other strategy relearns the history)
    whole = scored(tmp_path, path, WidthReader(), "whole", iterations=6, pool_from="surrogate", pool_from_n=3)
    scored(tmp_path, path, WidthReader(), "cut", iterations=3, pool_from="surrogate", pool_from_n=3)
    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE, iterations=6,
                       benchmark_file=str(path), out=str(tmp_path / "cut"), scorer_pool=32, pool_from="surrogate",
                       pool_from_n=3)
    run(cfg, resume=True, llm=WidthReader(), progress=False)
    assert [key(r) for r in load_run(str(tmp_path / "cut"))[1]] == [key(r) for r in whole]
    assert load_run(str(tmp_path / "cut"))[0].group.endswith("+from-surrogate3")


def counted_tiny_model(folder):
    """The tiny random model in process, and the list its forward passes append their input shapes to."""
    from test_finetune import make_tiny_model

    from finetune.llm import make_llm

    make_tiny_model(folder)
    llm = make_llm(str(folder), backend="transformers")
    calls = []
    real = llm.model.forward
    llm.model.forward = lambda *a, **k: calls.append(tuple(k["input_ids"].shape)) or real(*a, **k)
    return llm, calls


def test_a_pool_is_scored_in_one_batched_pass_by_an_in_process_model(tmp_path, full_table):  # noqa: F811
    path, _ = full_table
    llm, calls = counted_tiny_model(tmp_path / "tiny")
    iters = scored(tmp_path, path, llm, "tiny", iterations=2, explore=0.0)
    assert [r["status"] for r in iters] == ["ok", "ok"]
    # the first pool: the prompts' shared prefix once, then the 32 prompts' own rest in one batch, then one
    # token per row per decoding step (at most 5)
    assert calls[0][0] == 1 and calls[0][1] >= 10
    assert calls[1][0] == 32 and calls[1][1] < calls[0][1] + 40
    assert all(c == (32, 1) for c in calls[2:6])


def test_scorer_dtype_bfloat16_casts_the_in_process_model_and_is_its_own_configuration(tmp_path, full_table):  # noqa: F811
    import torch
    from test_finetune import make_tiny_model

    from finetune.llm import make_llm
    from search.loop import SearchError

    path, _ = full_table
    folder = tmp_path / "tiny"
    make_tiny_model(folder)
    llm = make_llm(str(folder), backend="transformers")
    iters = scored(tmp_path, path, llm, "bf16", iterations=2, explore=0.0, scorer_dtype="bfloat16")
    assert [r["status"] for r in iters] == ["ok", "ok"]
    assert all(p.dtype == torch.bfloat16 for p in llm.model.parameters())
    cfg = load_run(str(tmp_path / "bf16"))[0]
    assert cfg.scorer_dtype == "bfloat16" and cfg.group.endswith("@bfloat16")
    assert not SearchConfig(strategy="scored", scorer="x").group.endswith("float32")
    with pytest.raises(SearchError, match="needs the scorer in process"):  # a served (here: scripted) scorer
        scored(tmp_path, path, WidthReader(), "served", iterations=1, scorer_dtype="bfloat16")


class Generator:
    """A scripted Code Generator's model: one answer per prompt from `answer(prompt, temperature)`; records
    every batch (its prompts, temperatures and seed)."""

    def __init__(self, answer):
        self.answer, self.batches = answer, []

    def sample_many(self, prompts, *, temperatures, seed, max_new_tokens, extra=None):
        self.batches.append({"prompts": prompts, "temperatures": temperatures, "seed": seed, "extra": extra})
        return [self.answer(m[-1]["content"], t) for m, t in zip(prompts, temperatures)]

    def generate(self, *a, **k):
        raise AssertionError("the pool's generator answers in one batched pass (sample_many)")


def widest_answer(user, t):
    """Nearly the widest configuration (4444443: the width reader's score stays under 100) at the highest
    temperature; otherwise the narrowest or no list."""
    from corpus.spaces import SPACES

    if t >= 1.3:
        return "widths " + str([c[-1] for c in SPACES[SPACE]["choices"]][:-1] + [SPACES[SPACE]["choices"][-1][-2]])
    return "no idea" if t < 0.8 else str([c[0] for c in SPACES[SPACE]["choices"]])


def test_generator_answers_join_the_pool_in_one_batched_pass(tmp_path, full_table):  # noqa: F811
    path, table = full_table
    gen = Generator(widest_answer)
    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE, iterations=4,
                       benchmark_file=str(path), out=str(tmp_path / "g"), scorer_pool=16, scorer_generate=3,
                       explore=0.0, adapter="gen-adapter")
    run(cfg, llm=WidthReader(), generator_llm=gen, progress=False)
    cfg_, iters, _ = load_run(str(tmp_path / "g"))
    assert cfg_.group == "scored:scripted+gen3:smollm2-135m+gen-adapter"  # its own configuration in compare
    assert len(gen.batches) == 4  # one batched pass per iteration
    assert all(b["temperatures"] == [0.7, 1.0, 1.3] for b in gen.batches)
    assert len({b["seed"] for b in gen.batches}) == 4
    # the near-widest configuration came from the generator, and the scorer picked it at once
    first = iters[0]
    assert first["metrics"]["table_key"] == "4444443"
    assert "generated at T=1.3" in first["raw_answer"]
    assert "generator: 2 of 3 answers new and inside the limits" in first["raw_answer"]
    # after that it is tried: the generator's answers are no longer new, the draws fill the pool
    assert all("generator: 1 of 3" in r["raw_answer"] or "generator: 0 of 3" in r["raw_answer"] for r in iters[1:])
    # prompt 0 is the llm strategy's (the feedback memory), prompts 1.. show exemplars drawn from the run
    last = gen.batches[-1]["prompts"]
    assert all("w0" in m[-1]["content"] for m in last)
    assert len({m[-1]["content"] for m in last}) >= 2


def test_a_prefer_tuned_generator_answers_the_prefer_prompt_relative_to_the_seed(tmp_path, full_table):  # noqa: F811
    from finetune.prefer import PREFER_SYSTEM

    path, table = full_table
    # the seed of the space is 2222222 (every slot its second choice): x2 is the fourth choice, x1.5 the third
    gen = Generator(lambda user, t: "x2 x2 x2 x2 x2 x2 x1.5" if t >= 1.3 else "x3 x1 x1 x1 x1 x1 x1" if t >= 1.0
                    else "no ratios")
    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE, iterations=2,
                       benchmark_file=str(path), out=str(tmp_path / "p"), scorer_pool=8, scorer_generate=3,
                       explore=0.0, generator_prompt="prefer", adapter="prefer-adapter")
    run(cfg, llm=WidthReader(), generator_llm=gen, progress=False)
    cfg_, iters, seed_row = load_run(str(tmp_path / "p"))
    assert cfg_.group == "scored:scripted+gen3-prefer:smollm2-135m+prefer-adapter"
    first = iters[0]
    assert first["metrics"]["table_key"] == "4444443" and "generated at T=1.3" in first["raw_answer"]
    # x3 is no choice of its slot (off by more than 5 %) and "no ratios" none: 1 of 3
    assert "generator: 1 of 3 answers new" in first["raw_answer"]
    msgs = gen.batches[0]["prompts"][0]
    assert msgs[0]["content"] == PREFER_SYSTEM
    assert f"accuracy {100 * seed_row['accuracy']:.1f}%" in msgs[1]["content"] and "benchmark table" in msgs[1]["content"]


def test_prefer_answers_read_as_widths_on_the_slot_choices():
    from finetune.prefer import parse_ratios

    choices = [[16, 32, 48, 64], [64, 128, 192, 256], [128, 256, 384, 512]]
    assert parse_ratios("x0.5 x1 x2", [32, 128, 256], choices) == (16, 128, 512)
    assert parse_ratios("widths: x1.5, x1.49, x1", [32, 128, 256], choices) == (48, 192, 256)  # within 5 %
    assert parse_ratios("x1.3 x1 x1", [32, 128, 256], choices) is None  # 41.6: no choice within 5 %
    assert parse_ratios("x1 x1", [32, 128, 256], choices) is None and parse_ratios(None, [32], None) is None
    assert parse_ratios("x1.5 x0.25", [10, 40], None) == (15, 10)


def test_a_lost_generator_leaves_the_pool_to_the_draws(tmp_path, full_table):  # noqa: F811
    from finetune.llm import LLMServerError

    path, _ = full_table

    def down(user, t):
        raise LLMServerError("connection refused")

    cfg = SearchConfig(strategy="scored", scorer="scripted", evaluator=f"table:{SPACE}", seed=SPACE, iterations=2,
                       benchmark_file=str(path), out=str(tmp_path / "d"), scorer_pool=8, scorer_generate=2,
                       explore=0.0)
    run(cfg, llm=WidthReader(), generator_llm=Generator(down), progress=False)
    iters = load_run(str(tmp_path / "d"))[1]
    assert [r["status"] for r in iters] == ["ok", "ok"]
    assert all("generator: llm_error connection refused" in r["raw_answer"] for r in iters)


def test_an_in_process_model_samples_a_ladder_in_one_batched_pass(tmp_path):
    from finetune.llm import sample_many

    llm, calls = counted_tiny_model(tmp_path / "tiny")
    prompts = [[{"role": "system", "content": "Answer with widths."},
                {"role": "user", "content": "Width slots: w0 w1. Tried: " + "[8, 16] " * i}] for i in range(3)]
    a = sample_many(llm, prompts, temperatures=[0.7, 1.0, 1.3], seed=5, max_new_tokens=6)
    assert len(a) == 3 and all(isinstance(x, str) for x in a)
    # the common prefix once, then every row's own rest in one batch, then one token per row per step
    assert calls[0][0] == 1 and calls[1][0] == 3 and calls[1][1] < calls[0][1] and all(c == (3, 1) for c in calls[2:])
    calls.clear()
    assert sample_many(llm, prompts, temperatures=[0.7, 1.0, 1.3], seed=5, max_new_tokens=6) == a  # seeded
    assert calls[0][0] == 3  # the same parent again: its prefix's cache is reused, not run again
    # near temperature 0 the shared-prefix layout (masks, positions) answers what greedy generate does
    cold = sample_many(llm, prompts, temperatures=[1e-4] * 3, seed=0, max_new_tokens=6)
    assert cold == [llm.generate(m, temperature=0.0, max_new_tokens=6) for m in prompts]
    # a row its grammar leaves no token ends with what it has (no NaN draw), the others go on
    import torch

    def starve_row_1(seq, scores):
        scores = scores.clone()
        scores[1] = -torch.inf
        return scores
    llm._processors = lambda extra: [starve_row_1]
    starved = sample_many(llm, prompts, temperatures=[1e-4] * 3, seed=0, max_new_tokens=6)
    assert starved[1] == "" and starved[0] == cold[0] and starved[2] == cold[2]
    with pytest.raises(ValueError, match="3 prompts, 2 temperatures"):
        sample_many(llm, prompts, temperatures=[0.7, 1.0], seed=5)


@pytest.mark.parametrize("argv, why", [
    (["--strategy", "scored"], "--strategy scored scores candidates with a model: give --scorer MODEL"),
    (["--strategy", "tpe", "--scorer", "smollm2-135m"], "--scorer scores candidates for --strategy scored, not tpe"),
    (["--strategy", "scored", "--scorer", "x", "--scorer-pool", "0"], "--scorer-pool must be >= 1"),
    (["--strategy", "scored", "--scorer", "x", "--pool-local", "1.5"], "--pool-local must be between 0 and 1"),
    (["--strategy", "scored", "--scorer", "x", "--scorer-dtype", "float16"], "--scorer-dtype"),
    (["--strategy", "random", "--scorer-generate", "4"], "--scorer-generate adds generator answers to a scored pool"),
    (["--strategy", "scored", "--scorer", "x", "--scorer-generate", "-1"], "--scorer-generate must be >= 0"),
    (["--strategy", "scored", "--scorer", "x", "--scorer-generate", "2", "--generator-ladder", "0,1"],
     "--generator-ladder must be temperatures in (0, 5]"),
    (["--strategy", "scored", "--scorer", "x", "--scorer-generate", "2", "--answer-format", "diff"],
     "the generator's answers join a pool of width lists: --answer-format widths, not diff"),
    (["--strategy", "scored", "--scorer", "x", "--adapter", "a"], "(or add --scorer-generate N: its generator)"),
    (["--strategy", "scored", "--scorer", "x", "--generator-prompt", "free"], "--generator-prompt"),
    (["--strategy", "scored", "--scorer", "x", "--pool-from", "llm"], "--pool-from must be one of evolution, gp,"),
    (["--strategy", "scored", "--scorer", "x", "--pool-from", "scored"], "--pool-from must be one of"),
    (["--strategy", "tpe", "--pool-from", "largest"], "--pool-from adds another strategy's proposals to a scored"),
    (["--strategy", "scored", "--scorer", "x", "--pool-from", "largest", "--pool-from-n", "0"],
     "--pool-from-n must be >= 1"),
])
def test_scorer_flags_are_checked_with_one_line(tmp_path, argv, why, capsys):
    from search.__main__ import main

    assert main(["run", *argv, "--evaluator", f"table:{SPACE}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and why in err and "\n" not in err
    assert not (tmp_path / "r").exists()
