"""The prefer task (DPO on preference pairs of a family's networks): the data set from a corpus (pairs across
accuracy strata, the better one chosen, held-out networks in no training pair), DPO training through
`finetune train` on a tiny model, the preference-accuracy eval, and one-line errors for bad inputs."""
import json
import math

import pytest

from conftest import assert_one_line_error, run_module
from finetune.pairs import DatasetConfig, FinetuneError
from finetune.prefer import (PREFER_SYSTEM, answer_logprobs, build_prefer, draw_pairs, preference_metrics,
                             strata)
from finetune.score import family_key, widths_text
from test_finetune import make_tiny_model, write_corpus
from test_score_task import KEYS, built_row, table_row


@pytest.fixture(scope="module")
def prefer_rows():
    """Two families: 12 Channel-Bench-Macro table rows (cifar10) and 8 built seed0 variants, plus a failed row
    and a zero-cost-only one (neither is paired)."""
    rows = [table_row(k) for k in KEYS] + [built_row(i) for i in range(8)]
    return rows + [built_row(20, status="timeout"), {**built_row(21), "accuracy": None}]


@pytest.fixture(scope="module")
def prefer_corpus(prefer_rows, tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("prefer") / "c", prefer_rows)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(folder)
    return folder


def build(corpus, **kw):
    return build_prefer(DatasetConfig(corpus=str(corpus), task="prefer", **{"eval_fraction": 0.25, "seed": 1, **kw}))


# -- the data set ----------------------------------------------------------------------------------

def test_strata_are_quartiles_and_ties_share_one():
    rows = [{"accuracy": a} for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    assert strata(rows) == [0, 0, 1, 1, 2, 2, 3, 3]
    tied = [{"accuracy": a} for a in (0.1, 0.2, 0.2, 0.2, 0.5, 0.6, 0.7, 0.8)]
    assert strata(tied) == [0, 0, 0, 0, 2, 2, 3, 3]  # the three 0.2s: the stratum of the first
    assert strata([{"accuracy": 0.1}, {"accuracy": 0.9}]) == [0, 2]
    import random

    every = draw_pairs(rows, 1000, random.Random(0))
    assert len(every) == (64 - 4 * 4) // 2 == 24  # all pairs across strata, none within one
    assert all(strata(rows)[b] > strata(rows)[w] for b, w in every)
    big = [{"accuracy": i / 2000} for i in range(2000)]  # sampled (not enumerated) above 200k cross pairs
    drawn = draw_pairs(big, 300, random.Random(0))
    assert len(set(drawn)) == 300 and all(strata(big)[b] > strata(big)[w] for b, w in drawn)


def test_prefer_pairs_cross_strata_better_is_chosen_and_splits_do_not_share_networks(prefer_corpus, prefer_rows):
    dd, info = build(prefer_corpus)
    by_id = {r["id"]: r for r in prefer_rows}
    families: dict[str, list[dict]] = {}
    for r in prefer_rows:
        if r["status"] == "ok" and r["accuracy"] is not None:
            families.setdefault(family_key(r), []).append(r)
    level = {}
    for fam in families.values():
        fam.sort(key=lambda r: (r["accuracy"], r["id"]))
        level.update({r["id"]: s for r, s in zip(fam, strata(fam))})
    assert len(families) == 2 and info["families"] == {k: len(v) for k, v in families.items()}
    assert len(dd["train"]) > 10 and len(dd["eval"]) > 0 and info["pairs"] == len(dd["train"]) + len(dd["eval"])
    assert info["pairs"] <= info["pair_cap"] == 4 * 20
    for split in ("train", "eval"):
        for ex in dd[split]:
            better, worse = by_id[ex["chosen_id"]], by_id[ex["rejected_id"]]
            assert family_key(better) == family_key(worse) == ex["family"]
            assert level[better["id"]] > level[worse["id"]]  # across strata, the better from the higher
            assert ex["chosen_accuracy"] == better["accuracy"] > worse["accuracy"] == ex["rejected_accuracy"]
            assert [m["role"] for m in ex["prompt"]] == ["system", "user"] and ex["prompt"][0]["content"] == PREFER_SYSTEM
            assert [m["role"] for m in ex["chosen"]] == [m["role"] for m in ex["rejected"]] == ["assistant"]
            ref = next(r for r in families[ex["family"]] if r["id"] == info["references"][ex["family"]]["id"])
            assert ex["chosen"][0]["content"] == widths_text(better, ref)
            assert ex["rejected"][0]["content"] == widths_text(worse, ref) != ex["chosen"][0]["content"]
    cbm = next(ex for ex in dd["train"] if ex["family"].startswith("cbm-resnet"))
    user = cbm["prompt"][1]["content"]
    assert user.startswith('Family: Channel-Bench-Macro ResNet space (seed "cbm-resnet")\nData: cifar10, benchmark table\n')
    assert "Reference: widths 128 128 128 256 256 256 256; accuracy 80.0%" in user and "relative" in user
    assert all(t.startswith("x") for t in cbm["chosen"][0]["content"].split())
    # held-out networks: in eval pairs only, and the eval pairs use nothing else
    nets = lambda d: set(d["chosen_sha256"]) | set(d["rejected_sha256"])  # noqa: E731
    assert nets(dd["train"]) and nets(dd["eval"]) and not nets(dd["train"]) & nets(dd["eval"])
    # no failed or unlabelled row is ever paired
    paired = set(dd["train"]["chosen_id"]) | set(dd["train"]["rejected_id"]) | set(info["eval_sources"])
    assert {"s0-20", "s0-21"}.isdisjoint(paired)


def test_same_seed_same_pairs_other_seed_other_pairs_and_sample_caps(prefer_corpus):
    pairs = lambda d: [(r["chosen_id"], r["rejected_id"]) for r in d]  # noqa: E731
    a, _ = build(prefer_corpus)
    again, _ = build(prefer_corpus)
    other, _ = build(prefer_corpus, seed=2)
    assert pairs(a["train"]) == pairs(again["train"]) and pairs(a["eval"]) == pairs(again["eval"])
    assert set(pairs(a["train"])) != set(pairs(other["train"]))
    capped, info = build(prefer_corpus, sample=12)
    assert len(capped["train"]) + len(capped["eval"]) == 12 == info["pair_cap"]
    whole, _ = build(prefer_corpus, eval_fraction=0.0)
    assert len(whole["eval"]) == 0 and len(whole["train"]) > len(a["train"])


def test_dataset_cli_writes_the_card(prefer_corpus, tmp_path):
    import datasets

    out = tmp_path / "d"
    res = run_module("finetune", "dataset", "--task", "prefer", "--corpus", prefer_corpus, "--out", out,
                     "--eval-fraction", 0.25, "--rng-seed", 1)
    assert res.returncode == 0, res.stderr[-3000:]
    dd = datasets.load_from_disk(str(out))
    info = json.loads((out / "finetune_dataset.json").read_text())
    assert info["task"] == "prefer" and info["train"] == len(dd["train"]) and info["eval"] == len(dd["eval"])
    assert info["config"]["seed"] == 1 and info["strata"] == 4 and info["ok_rows"] == 20
    assert f"wrote {info['train']} train and {info['eval']} eval preference pairs" in res.stdout
    assert {"prompt", "chosen", "rejected", "chosen_id", "rejected_id", "chosen_accuracy", "rejected_accuracy",
            "family"} <= set(dd["train"].column_names)


# -- log-probabilities, training, eval --------------------------------------------------------------------

def test_answer_logprobs_are_batch_independent_sums(tiny_model, prefer_corpus):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    dd, _ = build(prefer_corpus)
    rows = dd["train"].select(range(5))
    prompts, answers = list(rows["prompt"]) * 2, list(rows["chosen"]) + list(rows["rejected"])
    one = answer_logprobs(model, tok, prompts, answers, batch_size=1)
    many = answer_logprobs(model, tok, prompts, answers, batch_size=4)
    assert all(x < 0 and math.isfinite(x) for x in one)
    assert max(abs(a - b) for a, b in zip(one, many)) < 1e-3  # right padding changes nothing
    # the sum over the answer's tokens (and its end of turn), by hand for the first
    head = tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompts[0] + answers[0], tokenize=True, return_dict=True)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0], -1)
    want = sum(float(logp[t - 1, full[t]]) for t in range(len(head), len(full)))
    assert abs(one[0] - want) < 1e-3
    m = preference_metrics([-1.0, -2.0, -3.0, -1.0], [-2.0, -1.0, -4.0, -1.0])
    assert m == {"n": 4, "preference_accuracy": 0.5, "mean_margin": 0.25, "median_margin": 0.5}


@pytest.fixture(scope="module")
def prefer_adapter(prefer_corpus, tiny_model, tmp_path_factory):
    """`finetune train --task prefer` on the corpus (the CLI in this process, 2 DPO steps)."""
    from finetune.__main__ import main

    out = tmp_path_factory.mktemp("prefer-run") / "adapter"
    assert main(["train", "--task", "prefer", "--corpus", str(prefer_corpus), "--model", str(tiny_model),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
                 "--logging-steps", "1", "--save-steps", "1", "--eval-limit", "0", "--eval-fraction", "0.25",
                 "--rng-seed", "1", "--lr", "1e-3"]) == 0
    return out


def test_train_task_prefer_writes_an_adapter_and_a_run_card(prefer_adapter):
    assert (prefer_adapter / "adapter_config.json").exists() and (prefer_adapter / "adapter_model.safetensors").exists()
    card = json.loads((prefer_adapter / "run_card.json").read_text())
    assert card["task"] == card["config"]["task"] == "prefer" and card["loss"] == "dpo"
    assert card["steps"] == 2 and card["config"]["beta"] == 0.1 and card["data_config"]["seed"] == 1
    assert [h["step"] for h in card["loss_history"] if "loss" in h] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in card["loss_history"] if "loss" in h)
    assert abs(card["loss_history"][0]["loss"] - math.log(2)) < 1e-3  # DPO starts at log 2: policy == reference
    assert (prefer_adapter / "loss.png").exists() and (prefer_adapter / "checkpoint-2").is_dir()


def test_train_task_prefer_resumes_from_its_checkpoint(prefer_adapter, prefer_corpus, tiny_model, tmp_path):
    import shutil

    from finetune.train import TrainConfig, main_train

    out = tmp_path / "again"
    shutil.copytree(prefer_adapter, out)
    assert main_train(TrainConfig(corpus=str(prefer_corpus), model=str(tiny_model), out=str(out), task="prefer",
                                  max_steps=3, batch_size=4, lora_r=4, lora_alpha=8, logging_steps=1, save_steps=1,
                                  eval_limit=0, eval_fraction=0.25, seed=1, lr=1e-3, resume=True)) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["steps"] == 3 and card["resumed_from_step"] == 2 and card["task"] == "prefer"


def test_eval_task_prefer_compares_base_and_adapter(prefer_adapter, prefer_corpus, tiny_model, tmp_path, capsys):
    from finetune.__main__ import main

    report = tmp_path / "eval.json"
    # no --task: the adapter's; the held-out pairs: the split it was tuned with, rebuilt from the corpus
    assert main(["eval", "--model", str(tiny_model), "--adapter", str(prefer_adapter), "--corpus", str(prefer_corpus),
                 "--n", "6", "--batch-size", "8", "--out", str(report)]) == 0
    stdout = capsys.readouterr().out
    assert "pref. accuracy" in stdout and "mean margin" in stdout and "adapter" in stdout
    doc = json.loads(report.read_text())
    assert doc["task"] == "prefer" and set(doc["results"]) == {"base", "adapter"}
    assert doc["held_out"]["seed"] == 1 and doc["held_out"]["eval_fraction"] == 0.25
    dd, _ = build(prefer_corpus)
    want = [(r["chosen_id"], r["rejected_id"]) for r in dd["eval"]][:6]
    for name, res in doc["results"].items():
        s, pairs = res["summary"], res["pairs"]
        assert s["n"] == len(pairs) == len(want) and [(p["chosen_id"], p["rejected_id"]) for p in pairs] == want
        assert s["preference_accuracy"] == round(sum(p["margin"] > 0 for p in pairs) / len(pairs), 4)
        assert abs(s["mean_margin"] - sum(p["margin"] for p in pairs) / len(pairs)) < 1e-3
    # the adapter moved the log-probabilities (trained 2 steps at a high rate)
    assert [p["margin"] for p in doc["results"]["base"]["pairs"]] != [p["margin"] for p in doc["results"]["adapter"]["pairs"]]


def test_prefer_bad_inputs_are_one_line_exit_2(prefer_corpus, tmp_path, tiny_model):
    assert_one_line_error(run_module("finetune", "dataset", "--task", "rank", "--corpus", prefer_corpus,
                                     "--out", tmp_path / "o"), "unknown --task 'rank' (known: improve, score, prefer)")
    unlabelled = write_corpus(tmp_path / "zc", [{**built_row(i), "accuracy": None} for i in range(3)])
    assert_one_line_error(run_module("finetune", "dataset", "--task", "prefer", "--corpus", unlabelled,
                                     "--out", tmp_path / "o"), "has no labelled rows")
    singles = write_corpus(tmp_path / "one", [table_row(KEYS[0]), built_row(0)])  # two families of one row each
    assert_one_line_error(run_module("finetune", "dataset", "--task", "prefer", "--corpus", singles,
                                     "--out", tmp_path / "o"), "no preference pairs: every family has fewer than two")
    from finetune.tasks import load_pairs

    with pytest.raises(FinetuneError, match="--beta must be positive"):
        from finetune.train import TrainConfig, prepare

        prepare(TrainConfig(corpus=str(prefer_corpus), model=str(tiny_model), out=str(tmp_path / "r"), task="prefer",
                            beta=0.0), progress=False)
    with pytest.raises(FinetuneError, match="--llm-url: the prefer task's eval needs"):
        from finetune.evaluate import EvalConfig
        from finetune.tasks import main_eval

        main_eval(EvalConfig(model=str(tiny_model), corpus=str(prefer_corpus), task="prefer", llm_url="http://x"))
    # a data set folder of another task is refused for --task prefer
    score = tmp_path / "score"
    assert run_module("finetune", "dataset", "--task", "score", "--corpus", prefer_corpus, "--out", score).returncode == 0
    with pytest.raises(FinetuneError, match="--task prefer: data set .* is for the score task"):
        load_pairs(str(score), 4, 0.1, 0, task="prefer")


def test_fast_cpu_tunes_in_bf16_autocast_and_the_card_says_so(prefer_corpus, tiny_model, tmp_path, monkeypatch):
    import torch

    from accelerate.state import AcceleratorState

    from finetune.__main__ import main
    from finetune.train import TrainConfig, prepare, sft_config

    if torch.cuda.is_available():
        pytest.skip("--fast-cpu is for CPU training (CUDA uses half precision always)")
    common = dict(corpus=str(prefer_corpus), model=str(tiny_model), task="prefer", batch_size=4, lora_r=4,
                  lora_alpha=8, eval_limit=0, eval_fraction=0.25, seed=1, max_steps=1)
    sft = sft_config(TrainConfig(out=str(tmp_path / "s"), fast_cpu="on", **common), "completion_only")
    assert sft.bf16 and not sft.fp16 and sft.use_cpu  # the score and improve tasks (SFT) take the flag too

    def trainer(**kw):  # accelerate keeps one precision per process: reset, as a fresh `finetune train` starts
        AcceleratorState._reset_state(reset_partial_state=True)
        return prepare(TrainConfig(**common, **kw), progress=False)[0]

    on = trainer(out=str(tmp_path / "p-on"), fast_cpu="on")  # one trainer at a time: the state is shared
    assert on.args.bf16 and on.accelerator.mixed_precision == "bf16" and on.accelerator.native_amp  # autocast
    assert next(on.model.parameters()).dtype == torch.float32  # the weights stay fp32
    off = trainer(out=str(tmp_path / "p-off"))  # default: off
    assert not off.args.bf16 and off.accelerator.mixed_precision == "no"
    AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setattr("corpus.evaluator.cpu_has_bf16", lambda: False)  # auto follows the CPU's instructions
    auto, _ = prepare(TrainConfig(out=str(tmp_path / "p-auto"), fast_cpu="auto", **common), progress=False)
    assert not auto.args.bf16

    AcceleratorState._reset_state(reset_partial_state=True)
    out = tmp_path / "run"
    assert main(["train", "--task", "prefer", "--corpus", str(prefer_corpus), "--model", str(tiny_model),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
                 "--logging-steps", "1", "--eval-limit", "0", "--eval-fraction", "0.25", "--rng-seed", "1",
                 "--fast-cpu", "on"]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["config"]["fast_cpu"] == "on" and json.loads((out / "train_config.json").read_text())["fast_cpu"] == "on"
    assert all(math.isfinite(h["loss"]) for h in card["loss_history"] if "loss" in h)
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and {t.dtype for t in weights.values()} == {torch.float32}  # fp32 master weights saved
    assert_one_line_error(run_module("finetune", "train", "--task", "prefer", "--corpus", prefer_corpus, "--model",
                                     tiny_model, "--out", tmp_path / "x", "--fast-cpu", "maybe"), "--fast-cpu")
    with pytest.raises(FinetuneError, match="--fast-cpu must be auto, on or off"):
        prepare(TrainConfig(out=str(tmp_path / "y"), fast_cpu="fast", **common), progress=False)
