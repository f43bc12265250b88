"""The score task (a tuned LM as a scorer of candidates): the data set from a corpus (one short prompt per
labelled row, relative to the family's reference, the accuracy as the answer), `parse_score`, batched
template-constrained `predict_scores`, the rank metrics, and the CLI end to end on a tiny model."""
import hashlib
import json
import re

import pytest

from conftest import assert_one_line_error, run_module
from finetune.pairs import DatasetConfig, FinetuneError
from finetune.score import (SCORE_SYSTEM, build_score, parse_score, predict_scores, references, score_messages,
                            score_metrics, score_rows, score_texts)
from test_finetune import fake_row, make_tiny_model, write_corpus

CBM = "cbm-resnet"
CHOICES = [[64, 128, 192, 256]] * 3 + [[128, 256, 384, 512]] * 4  # corpus.spaces' cbm-resnet
KEYS = ["2222222", "1111111", "4444444", "1234123", "4321432", "2222333", "3333222", "1212121", "2121212",
        "3434343", "4343434", "1111222"]


def table_row(key: str) -> dict:
    """A row as `python -m corpus from-table` writes it (every corpus column; the table's metrics)."""
    from corpus.build import COLUMNS

    widths = [CHOICES[i][int(c) - 1] for i, c in enumerate(key)]
    code = f"# cbm-resnet {key}\nWIDTHS = {widths}\n"
    acc = 80 + 0.7 * KEYS.index(key)  # distinct at one decimal
    row = dict.fromkeys(COLUMNS)
    row.update({"id": f"{CBM}-{key}", "parent": CBM, "code": code, "sha256": hashlib.sha256(code.encode()).hexdigest(),
                "widths": widths, "status": "ok", "accuracy": acc / 100, "flops": 1000 * sum(widths),
                "params": 10 * sum(w * w for w in widths), "device_name": f"table:{CBM}", "dataset": "cifar10",
                "recipe": json.dumps({"source": "Channel-Bench-Macro table (CIFAR-10, 3 seeds, mean accuracy)",
                                      "space": CBM}), "flops_unsupported": []})
    return row


def built_row(i: int, **kw) -> dict:
    """A row as `python -m corpus build` writes it for a mutator variant (the seed itself is not among them)."""
    from corpus.build import COLUMNS

    row = dict.fromkeys(COLUMNS)
    row.update(fake_row(f"s0-{i}", "seed0", 8 * (i + 1), acc=0.6 + 0.01 * i, flops=10_000 * (i + 1), **kw))
    row.update(flops_unsupported=[], class_name="Net")
    return row


@pytest.fixture(scope="module")
def score_corpus_rows():
    rows = [table_row(k) for k in KEYS] + [built_row(i) for i in range(8)]
    rows += [built_row(20, status="timeout"), {**built_row(21), "accuracy": None}]  # failed; zero-cost only
    return rows


@pytest.fixture(scope="module")
def score_corpus(score_corpus_rows, tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("score") / "c", score_corpus_rows)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(folder)
    return folder


# -- the data set ----------------------------------------------------------------------------------

def test_score_dataset_has_one_example_per_labelled_row_and_holds_out_networks(score_corpus, score_corpus_rows):
    dd, info = build_score(DatasetConfig(corpus=str(score_corpus), task="score", eval_fraction=0.25, seed=1))
    labelled = [r for r in score_corpus_rows if r["status"] == "ok" and r["accuracy"] is not None]
    assert len(dd["train"]) + len(dd["eval"]) == len(labelled) == info["rows"] == 20
    assert len(dd["eval"]) == round(0.25 * 20) and info["eval"] == len(dd["eval"])
    assert not set(dd["train"]["sha256"]) & set(dd["eval"]["sha256"])
    assert sorted(list(dd["train"]["id"]) + list(dd["eval"]["id"])) == sorted(r["id"] for r in labelled)
    # the same flags give the same split; another seed another one
    again, _ = build_score(DatasetConfig(corpus=str(score_corpus), task="score", eval_fraction=0.25, seed=1))
    other, _ = build_score(DatasetConfig(corpus=str(score_corpus), task="score", eval_fraction=0.25, seed=2))
    assert list(again["eval"]["id"]) == list(dd["eval"]["id"]) and set(other["eval"]["id"]) != set(dd["eval"]["id"])
    # the card: task, prompt shape, rows, split, references
    assert info["task"] == "score" and info["train"] == len(dd["train"]) and "held out" in info["split"]
    assert info["prompt"]["system"] == SCORE_SYSTEM and "relative" in info["prompt"]["shape"]
    assert info["references"] == {f"{CBM} on cifar10, benchmark table": {"id": f"{CBM}-2222222", "kind": "seed"},
                                  "seed0 on fashion-mnist, 1 epoch on 256 images": {"id": "s0-4", "kind": "median"}}
    by_id = {r["id"]: r for r in labelled}
    for split in ("train", "eval"):
        for ex in dd[split]:
            msgs = ex["messages"]
            assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
            assert re.fullmatch(r"\d{1,3}\.\d", msgs[2]["content"])
            assert msgs[2]["content"] == f"{100 * by_id[ex['id']]['accuracy']:.1f}"
            assert ex["accuracy"] == by_id[ex["id"]]["accuracy"]


def test_score_prompt_says_widths_flops_and_params_relative_to_the_reference(score_corpus_rows):
    refs = {k.split()[0]: v for k, v in references(score_corpus_rows).items()}
    seed, kind = refs[CBM]
    assert kind == "seed" and seed["widths"] == [128] * 3 + [256] * 4
    row = next(r for r in score_corpus_rows if r["id"] == f"{CBM}-1234123")
    user = score_messages(row, seed)[1]["content"]
    assert user.splitlines() == [
        'Family: Channel-Bench-Macro ResNet space (seed "cbm-resnet")',  # the seed's own one-line description
        "Data: cifar10, benchmark table",
        (f"Vs reference: widths x0.5 x1 x1.5 x2 x0.5 x1 x1.5; FLOPs x{row['flops'] / seed['flops']:.2f}; "
         f"params x{row['params'] / seed['params']:.2f}")]
    assert "x1 x1 x1 x1 x1 x1 x1; FLOPs x1; params x1" in score_messages(seed, seed)[1]["content"]
    # a family that is not a built-in seed: its name and class; a proxy recipe: epochs and images
    built = next(r for r in score_corpus_rows if r["id"] == "s0-1")
    user = score_messages(built, refs["seed0"][0])[1]["content"]
    assert user.startswith("Family: seed0 (class Net)\nData: fashion-mnist, 1 epoch on 256 images\n")
    assert "widths x0.4; FLOPs x0.4; params x0.4" in user
    # short: about 100 tokens with SmolLM2's tokenizer and chat template for a 7-slot space
    assert sum(len(m["content"]) for m in score_messages(row, seed)) < 240
    # the same seed measured with another recipe is another family, with its own reference
    longer = [{**r, "id": f"{r['id']}-long", "recipe": json.dumps({"epochs": 3.0, "train_limit": 0}),
               "flops": 2 * r["flops"]} for r in score_corpus_rows if r["parent"] == "seed0" and r["accuracy"] is not None]
    both = references(score_corpus_rows + longer)
    assert both["seed0 on fashion-mnist, 3 epochs on all images"][0]["id"] == "s0-4-long" and len(both) == 3
    unknown = score_messages({"parent": "p", "widths": None, "flops": None}, seed)[1]["content"]
    assert "widths unknown; FLOPs x?; params x?" in unknown


def test_sample_draws_a_subset_without_moving_the_references(score_corpus, score_corpus_rows):
    a = score_rows(score_corpus_rows, sample=6, seed=3)
    assert len(a) == 6 and a == score_rows(score_corpus_rows, sample=6, seed=3)
    assert {r["id"] for r in a} != {r["id"] for r in score_rows(score_corpus_rows, sample=6, seed=4)}
    full = {r["id"]: r for r in score_rows(score_corpus_rows)}
    assert all(r == full[r["id"]] for r in a)  # the same prompts: references come from every row
    assert len(score_rows(score_corpus_rows, sample=1000)) == 20
    dd, info = build_score(DatasetConfig(corpus=str(score_corpus), task="score", sample=6, seed=3, eval_fraction=0.2))
    assert len(dd["train"]) + len(dd["eval"]) == 6 == info["rows"] and info["sample"] == 6


def test_parse_score():
    for text, want in (("87.3", 87.3), ("87.3%", 87.3), (" 92", 92.0), ("100.0", 100.0), ("0.5", 0.5),
                       ("Accuracy: 91.25 percent", 91.25), ("87.3<|im_end|>", 87.3)):
        assert parse_score(text) == want, text
    for text in ("", None, "abc", "101.0", "1000", "-", "..", "n/a"):
        assert parse_score(text) is None, text


# -- prediction and metrics -------------------------------------------------------------------------

def test_predict_scores_is_batched_constrained_and_keeps_the_order(tiny_model, score_corpus_rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    refs = {k.split()[0]: v for k, v in references(score_corpus_rows).items()}
    rows = [r for r in score_corpus_rows if r["status"] == "ok" and r["accuracy"] is not None]
    prompts = [score_messages(r, refs[r["parent"]][0]) for r in rows[:5]] + \
        [score_messages(rows[0], refs[rows[0]["parent"]][0])] + [score_messages(r, refs[r["parent"]][0]) for r in rows[-3:]]
    texts = score_texts(model, tok, prompts, batch_size=4)
    assert len(texts) == len(prompts)
    # only digits and '.', a complete answer on the DD.D template (0.0 to 100.0) in at most 5 tokens
    assert all(re.fullmatch(r"(?:0|[1-9]\d?)\.\d|100\.0", t) for t in texts), texts
    assert all(len(tok(t)["input_ids"]) <= 5 for t in texts)
    preds = predict_scores(model, tok, prompts, batch_size=4)
    assert len(preds) == len(prompts) and all(isinstance(p, float) and 0 <= p <= 100 for p in preds)
    assert preds == [parse_score(t) for t in texts]
    assert preds[0] == preds[5] and texts[0] == texts[5]  # the same prompt, in another batch and padding


def reference_answers(model, tok, prompts) -> list[str]:
    """`model.generate` with the template processor, one prompt at a time, no cache shared."""
    import torch
    from transformers import LogitsProcessorList

    from finetune.score import _number_pieces, score_template

    eos = {tok.eos_token_id, model.generation_config.eos_token_id} - {None}
    out = []
    for m in prompts:
        ids = tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        x = torch.tensor([list(ids)])
        with torch.inference_mode():
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False,
                                 logits_processor=LogitsProcessorList([score_template(tok, x.shape[1], eos)]),
                                 pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
        out.append("".join(_number_pieces(tok).get(t, "") for t in gen[0, x.shape[1]:].tolist()))
    return out


def test_shared_prefix_scoring_gives_generates_answers(tiny_model, score_corpus_rows):
    """The pool's common prefix run once and its cache copied to every row (left padding after it, positions
    counted without the padding) answers as `generate` does on each prompt alone; so does every row run whole;
    prompts with nothing in common (two system messages) are scored too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.score import common_prefix

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    refs = {k.split()[0]: v for k, v in references(score_corpus_rows).items()}
    rows = [r for r in score_corpus_rows if r["status"] == "ok" and r["accuracy"] is not None][:7]
    prompts = [score_messages(r, refs[r["parent"]][0]) for r in rows]
    enc = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
           for m in prompts]
    assert common_prefix([list(e) for e in enc]) >= 10  # system + family line: worth sharing
    want = reference_answers(model, tok, prompts)
    assert score_texts(model, tok, prompts, batch_size=3) == want
    assert score_texts(model, tok, prompts, batch_size=3, share_prefix=False) == want
    other = [[{"role": "system", "content": "Another system line."}, prompts[0][1]]] + prompts[1:3]
    assert common_prefix([[1, 2, 3], [1, 2]]) == 1 and common_prefix([[5], [5]]) == 0 and common_prefix([]) == 0
    assert score_texts(model, tok, other, batch_size=2) == reference_answers(model, tok, other)


def test_metrics_of_scripted_predictors(score_corpus_rows):
    from finetune.llm.scripted import ScriptedLLM
    from finetune.score import llm_score_texts

    examples = score_rows(score_corpus_rows)
    truth = {e["messages"][1]["content"]: e["messages"][2]["content"] for e in examples}
    prompts = [e["messages"][:2] for e in examples]
    measured = [100 * e["accuracy"] for e in examples]
    perfect = ScriptedLLM(lambda m: truth[m[1]["content"]])  # any backend: answers through generate()
    got = score_metrics([parse_score(t) for t in llm_score_texts(perfect, prompts)], measured)
    assert got["spearman"] == got["kendall"] == 1.0 and got["top_k_overlap"] == 1.0 and got["mae_points"] < 0.05
    backwards = ScriptedLLM(lambda m: f"{150 - float(truth[m[1]['content']]):.1f}")
    got = score_metrics([parse_score(t) for t in llm_score_texts(backwards, prompts)], measured)
    assert got["spearman"] == got["kendall"] == -1.0 and got["top_k_overlap"] == 0.0
    assert score_metrics([parse_score(t) for t in llm_score_texts(ScriptedLLM(["no idea"]), prompts)],
                         measured)["parsed_share"] == 0.0
    measured = [60.0 + 1.5 * i for i in range(20)]
    perfect = score_metrics(list(measured), measured)
    assert perfect["spearman"] == perfect["kendall"] == 1.0 and perfect["top_k_overlap"] == 1.0
    assert perfect["k"] == 4 and perfect["parsed_share"] == 1.0 and perfect["mae_points"] == 0.0
    rev = score_metrics(list(reversed(measured)), measured)
    assert rev["spearman"] == rev["kendall"] == -1.0 and rev["top_k_overlap"] == 0.0
    half = score_metrics([m if i % 2 else None for i, m in enumerate(measured)], measured)
    assert half["parsed"] == 10 and half["parsed_share"] == 0.5 and half["spearman"] == 1.0
    flat = score_metrics([70.0] * 20, measured)
    assert flat["spearman"] is None and flat["kendall"] is None  # undefined, not a number
    assert score_metrics(measured[:50] * 3, measured * 3)["k"] == 10  # N // 5, at most 10


# -- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def score_folder(score_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("score-ds") / "d"
    res = run_module("finetune", "dataset", "--task", "score", "--corpus", score_corpus, "--out", out,
                     "--eval-fraction", 0.3, "--rng-seed", 2)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_dataset_cli_task_score(score_folder):
    import datasets

    out, res = score_folder
    dd = datasets.load_from_disk(str(out))
    info = json.loads((out / "finetune_dataset.json").read_text())
    assert info["task"] == "score" and info["config"]["seed"] == 2 and len(dd["eval"]) == 6 == info["eval"]
    assert "wrote 14 train and 6 eval score examples from 20 of 20 labelled rows" in res.stdout


def test_train_task_score_loss_is_on_the_answer_only(score_folder, tiny_model, tmp_path):
    from finetune.train import TrainConfig, prepare

    out, _ = score_folder
    trainer, facts = prepare(TrainConfig(corpus=str(out), model=str(tiny_model), out=str(tmp_path / "run"),
                                         max_steps=1), progress=False)
    assert facts["data_info"]["task"] == "score" and facts["mode"] == "completion_only"
    ex = trainer.train_dataset[0]
    first = next(k for k, l in enumerate(ex["labels"]) if l != -100)
    answer = trainer.processing_class.decode(ex["input_ids"][first:])
    assert re.fullmatch(r"\d{1,3}\.\d<\|im_end\|>\n", answer), answer
    with pytest.raises(FinetuneError, match="--task improve: data set .* is for the score task"):
        prepare(TrainConfig(corpus=str(out), model=str(tiny_model), out=str(tmp_path / "r2"), task="improve"),
                progress=False)


def test_eval_cli_task_score(score_folder, score_corpus, tiny_model, tmp_path, capsys):
    from finetune.__main__ import main

    out, _ = score_folder
    report = tmp_path / "eval.json"
    # the CLI in this process (a subprocess would spend most of this test's time importing torch again)
    assert main(["eval", "--task", "score", "--model", str(tiny_model), "--corpus", str(out), "--n", "5",
                 "--batch-size", "64", "--out", str(report)]) == 0
    stdout = capsys.readouterr().out
    assert "Spearman rho" in stdout and "Kendall tau" in stdout and "top-1 overlap" in stdout
    doc = json.loads(report.read_text())
    assert doc["task"] == "score" and set(doc["results"]) == {"base"}
    s = doc["results"]["base"]["summary"]
    assert s["n"] == 5 and s["k"] == 1 and len(doc["results"]["base"]["answers"]) == 5
    assert {"parsed_share", "spearman", "kendall", "top_k_overlap", "mae_points"} <= set(s)
    assert all(re.fullmatch(r"[\d.]*", a["text"]) for a in doc["results"]["base"]["answers"])


@pytest.fixture(scope="module")
def score_adapter(score_corpus, tiny_model, tmp_path_factory):
    """An adapter tuned (in this process, 2 steps) on the score task built from the corpus."""
    from finetune.train import TrainConfig, main_train

    out = tmp_path_factory.mktemp("score-run") / "adapter"
    assert main_train(TrainConfig(corpus=str(score_corpus), model=str(tiny_model), out=str(out), task="score",
                                  sample=16, eval_fraction=0.25, seed=5, max_steps=2, batch_size=4, lora_r=4,
                                  lora_alpha=8, logging_steps=1, eval_limit=0)) == 0
    return out


def test_eval_cli_compares_base_and_a_score_adapter(score_adapter, score_corpus, tiny_model, tmp_path, capsys):
    card = json.loads((score_adapter / "run_card.json").read_text())
    assert card["task"] == card["config"]["task"] == "score" and card["pairs"]["train"] + card["pairs"]["eval"] == 16
    assert card["data_config"]["sample"] == 16 and card["data_config"]["seed"] == 5
    report = tmp_path / "eval.json"
    # no --task: the adapter's; the held-out rows: the split it was tuned with, rebuilt from the corpus
    from finetune.__main__ import main

    assert main(["eval", "--model", str(tiny_model), "--adapter", str(score_adapter), "--corpus", str(score_corpus),
                 "--n", "10", "--batch-size", "64", "--out", str(report)]) == 0  # the CLI, in this process
    assert "Spearman rho" in capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert doc["task"] == "score" and set(doc["results"]) == {"base", "adapter"}
    assert doc["held_out"]["sample"] == 16 and doc["held_out"]["seed"] == 5
    held = {a["id"] for a in doc["results"]["base"]["answers"]}
    assert len(held) == 4 and held == {a["id"] for a in doc["results"]["adapter"]["answers"]}
    train_ids = set(build_score(DatasetConfig(corpus=str(score_corpus), task="score", sample=16, seed=5,
                                              eval_fraction=0.25))[0]["train"]["id"])
    assert not held & train_ids
    assert all(r["summary"]["parsed_share"] == 1.0 for r in doc["results"].values())  # constrained: always parses
    from finetune.evaluate import EvalConfig
    from finetune.tasks import main_eval

    with pytest.raises(FinetuneError, match="--task improve: adapter .* is for the score task"):
        main_eval(EvalConfig(model=str(tiny_model), adapter=str(score_adapter), corpus=str(score_corpus), task="improve"))


def test_eval_in_bfloat16_scores_with_the_adapter_merged(score_adapter, score_corpus, tiny_model, tmp_path):
    import torch

    from finetune.evaluate import EvalConfig
    from finetune.llm import LLMError, make_llm
    from finetune.tasks import main_eval

    report = tmp_path / "bf16.json"
    assert main_eval(EvalConfig(model=str(tiny_model), adapter=str(score_adapter), corpus=str(score_corpus),
                                n=10, batch_size=64, out=str(report), dtype="bfloat16")) == 0
    doc = json.loads(report.read_text())
    assert doc["config"]["dtype"] == "bfloat16" and set(doc["results"]) == {"base", "adapter"}
    assert all(r["summary"]["parsed_share"] == 1.0 for r in doc["results"].values())
    llm = make_llm(str(tiny_model), str(score_adapter), backend="transformers")
    before = llm.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    llm.for_inference("bfloat16")
    merged = llm.model.model.layers[0].self_attn.q_proj.weight
    assert not hasattr(llm.model, "peft_config") and merged.dtype == torch.bfloat16
    assert not torch.equal(merged.float(), before.to(torch.bfloat16).float())  # the adapter's update is in it
    with pytest.raises(LLMError, match="merged"):
        llm.with_adapter(str(score_adapter))
    with pytest.raises(LLMError, match="dtype must be one of"):
        make_llm(str(tiny_model), backend="transformers").for_inference("float16")


def test_score_bad_inputs_are_one_line_exit_2(score_corpus, tmp_path, tiny_model):
    import datasets

    assert_one_line_error(run_module("finetune", "dataset", "--task", "rank", "--corpus", score_corpus,
                                     "--out", tmp_path / "o"), "unknown --task 'rank' (known: improve, score, prefer)")
    unlabelled = write_corpus(tmp_path / "zc", [{**built_row(i), "accuracy": None} for i in range(3)])
    assert_one_line_error(run_module("finetune", "dataset", "--task", "score", "--corpus", unlabelled,
                                     "--out", tmp_path / "o"), "has no labelled rows")
    empty = tmp_path / "empty"
    cols = ("id", "parent", "code", "status")
    datasets.Dataset.from_dict({c: [] for c in cols}, features=datasets.Features(
        {c: datasets.Value("string") for c in cols})).save_to_disk(str(empty))
    assert_one_line_error(run_module("finetune", "eval", "--task", "score", "--model", tiny_model, "--corpus", empty),
                          "is empty")
    assert_one_line_error(run_module("finetune", "dataset", "--corpus", score_corpus, "--out", tmp_path / "o",
                                     "--sample", 3), "--sample applies to --task score")
