"""Fine-tuning pairs in every answer format (widths / diff / code, source or summary context): true
answers that round-trip, the prompt renderer, minimal diffs, and train / eval on a tiny model."""
import hashlib
import json
import random

import pytest

from conftest import run_module
from finetune.formats import apply_diff, diff_text, parse_answer
from finetune.pairs import DatasetConfig, build_pairs, describe_all, diff_blocks
from finetune.formats import prompt_messages
from finetune.prompts import extract_code
from mutator import seeds
from test_finetune import fake_row, make_tiny_model, write_corpus

SPEC = {"in_shape": [1, 1, 28, 28], "classes": 10, "class_name": None}  # fashion-mnist, as spec_for says


@pytest.fixture(scope="module")
def lenet_rows():
    """Six real lenet variants (realised by the mutator from the seed) with made-up-but-consistent
    metrics: more width, more accuracy and more FLOPs, so every pair has true goals."""
    from mutator.calls import analyze, realize
    from mutator.sandbox import WorkerPool

    source = seeds.seed_source("lenet")
    with WorkerPool(1, timeout_s=300) as pool:
        a = analyze(pool, source, SPEC)
        assert a.ok, a.error
        base = [int(w) for w in a.seed_widths]
        lists = [[max(8, (round(w * f) // 8) * 8) for w in base] for f in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)]
        variants = realize(pool, source, SPEC, a, lists)
    rows = []
    for i, v in enumerate(variants):
        assert v.ok, v.error
        r = fake_row(f"lenet-{i}", "lenet", 8, acc=0.5 + 0.05 * i, flops=100_000 * (i + 1), latency=0.2 + 0.1 * i)
        r.update(code=v.source, sha256=hashlib.sha256(v.source.encode()).hexdigest(), widths=list(v.widths),
                 params=v.params)
        rows.append(r)
    return rows


@pytest.fixture(scope="module")
def lenet_corpus(lenet_rows, tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("lenet") / "c", lenet_rows)


@pytest.fixture(scope="module")
def all_formats(lenet_corpus):
    """{(format, context): (DatasetDict, info)} built from the same corpus and seed."""
    return {(f, c): build_pairs(DatasetConfig(corpus=str(lenet_corpus), answer_format=f, context=c,
                                              pairs_per_parent=3, eval_fraction=0.2))
            for f, c in (("widths", "source"), ("widths", "summary"), ("diff", "source"), ("code", "source"))}


def test_pairs_in_every_format_are_the_same_pairs_with_true_answers(all_formats, lenet_rows):
    by_id = {r["id"]: r for r in lenet_rows}
    keys = None
    for (fmt, ctx), (dd, info) in all_formats.items():
        assert info["answer_format"] == fmt and info["context"] == ctx and info["skipped"] == {}, info
        assert len(dd["train"]) and len(dd["eval"])
        got = [(r["source_id"], r["target_id"], r["goal"]) for split in ("train", "eval") for r in dd[split]]
        assert keys is None or got == keys  # the format changes the text, never which pairs
        keys = got
        for r in dd["train"]:
            src, tgt = by_id[r["source_id"]], by_id[r["target_id"]]
            user, answer = r["messages"][1]["content"], r["messages"][2]
            assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
            if fmt == "widths":
                assert json.loads(answer["content"]) == tgt["widths"]
                assert (f"now {json.dumps(src['widths'])}" in user) == (ctx == "summary")  # compact slots
                assert (f"now {src['widths'][1]};" in user) == (ctx == "source")  # one line per slot
                assert ("```python" in user) == (ctx == "source")
            elif fmt == "diff":
                assert apply_diff(src["code"], answer["content"]).code == tgt["code"]
            else:
                assert extract_code(answer["content"]) == tgt["code"]
    # the summary prompt is a fraction of the source prompt
    chars = {k: sum(len(m["content"]) for m in dd["train"][0]["messages"]) for k, (dd, _) in all_formats.items()}
    assert chars[("widths", "summary")] < chars[("widths", "source")] / 2 < chars[("code", "source")]


def test_widths_answer_realised_gives_the_target(all_formats, lenet_rows):
    from mutator.calls import analyze, realize
    from mutator.sandbox import WorkerPool

    by_id = {r["id"]: r for r in lenet_rows}
    dd, _ = all_formats[("widths", "summary")]
    nets = describe_all([by_id[i] for i in sorted(set(dd["train"]["source_id"]))])
    with WorkerPool(1, timeout_s=300) as pool:
        for r in list(dd["train"])[:4]:
            src, tgt, net = by_id[r["source_id"]], by_id[r["target_id"]], nets[r["source_id"]]
            ans = parse_answer("widths", r["messages"][-1]["content"], slots=net.slots)
            assert ans.ok and list(ans.widths) == tgt["widths"]
            v = realize(pool, src["code"], SPEC, net.analysis, [list(ans.widths)])[0]
            assert v.ok, v.error
            assert analyze(pool, v.source, SPEC).seed_widths == tgt["widths"]
            assert v.source == tgt["code"]  # realised from the source, not the seed: the same file


def test_best_of_k_pairs_show_the_tried_networks_as_the_search_does(lenet_corpus, lenet_rows):
    """--targets best --history: the prompt's Tried: list is the search's (widths + outcome vs the
    source, `finetune.prompts.outcome_text`), and the answer is none of them and beats them all."""
    from finetune.prompts import outcome_text

    by_id = {r["id"]: r for r in lenet_rows}
    dd, info = build_pairs(DatasetConfig(corpus=str(lenet_corpus), answer_format="widths", context="summary",
                                         pairs_per_parent=3, eval_fraction=0, targets="best", best_of=4, history=3))
    assert info["targets"] == "best" and info["skipped"] == {} and info["tried_shown"] > 0
    shown = 0
    for r in dd["train"]:
        src, tgt, tried = by_id[r["source_id"]], by_id[r["target_id"]], [by_id[t] for t in json.loads(r["tried"])]
        user = r["messages"][1]["content"]
        assert all(t["accuracy"] < tgt["accuracy"] for t in tried) and tgt["accuracy"] > src["accuracy"]
        for t in tried:
            assert f"{json.dumps(t['widths'])} {outcome_text(t, src)}" in user
        assert ("Tried:\n" in user) == bool(tried) and ("not a tried list" in user) == bool(tried)
        assert json.loads(r["messages"][2]["content"]) == tgt["widths"]
        shown += len(tried)
    assert shown == info["tried_shown"]


def test_pairs_without_a_true_answer_are_counted_not_written(lenet_rows, tmp_path):
    rows = [dict(r) for r in lenet_rows]
    rows[0]["widths"] = rows[0]["widths"][:-1]  # corpus widths that disagree with the network
    corpus = write_corpus(tmp_path / "c", rows)
    dd, info = build_pairs(DatasetConfig(corpus=str(corpus), pairs_per_parent=5, eval_fraction=0))
    assert "source widths_mismatch" in info["skipped"] and "target widths do not match the source's slots" in info["skipped"]
    assert "lenet-0" not in set(dd["train"]["source_id"]) | set(dd["train"]["target_id"])
    assert sum(info["skipped"].values()) + len(dd["train"]) == 6 * 5
    with pytest.raises(Exception, match="needs --answer-format widths"):
        build_pairs(DatasetConfig(corpus=str(corpus), answer_format="diff", context="summary"))


def test_prompt_renderer_is_pure_and_one_per_format(all_formats, lenet_rows):
    src = lenet_rows[0]
    goal = {"kind": "raise_accuracy"}
    code = prompt_messages("code", "source", src["code"], src, goal)
    diff = prompt_messages("diff", "source", src["code"], src, goal)
    assert code == prompt_messages("code", "source", src["code"], src, goal)
    assert "complete modified source" in code[1]["content"] and "<<<<<<< SEARCH" in diff[1]["content"]
    assert src["code"].rstrip() in code[1]["content"] and src["code"].rstrip() in diff[1]["content"]
    with pytest.raises(ValueError, match="needs the network's width slots"):
        prompt_messages("widths", "source", src["code"], src, goal)
    with pytest.raises(ValueError, match="unknown answer format"):
        prompt_messages("yaml", "source", src["code"], src, goal)
    # the dataset's prompt is exactly the renderer's output: the search can build the same prompt
    dd, _ = all_formats[("widths", "summary")]
    r = dd["train"][0]
    net = describe_all([next(x for x in lenet_rows if x["id"] == r["source_id"])])[r["source_id"]]
    s = next(x for x in lenet_rows if x["id"] == r["source_id"])
    assert prompt_messages("widths", "summary", s["code"], s, json.loads(r["goal"]), slots=net.slots,
                           summary=net.summary) == r["messages"][:2]
    assert "w0" in r["messages"][1]["content"] and "allowed" in r["messages"][1]["content"]


def test_diff_blocks_are_minimal_and_round_trip():
    cbm = seeds.seed_source("cbm-resnet")
    old = "WIDTHS = [128, 128, 128, 256, 256, 256, 256]"
    assert old in cbm
    new = cbm.replace(old, "WIDTHS = [64, 128, 192, 256, 512, 256, 128]")
    assert diff_blocks(cbm, new) == [(old, "WIDTHS = [64, 128, 192, 256, 512, 256, 128]")]  # one line, no context
    # a changed line that occurs twice gets the context that makes its SEARCH text unique
    src = "def f():\n    x = 1\n    return x\n\n\ndef g():\n    x = 1\n    return 2 * x\n"
    tgt = src.replace("    x = 1\n    return 2", "    x = 3\n    return 2")
    (search, replace), = diff_blocks(src, tgt)
    assert search == "    x = 1\n    return 2 * x" and replace == "    x = 3\n    return 2 * x"
    assert apply_diff(src, diff_text(diff_blocks(src, tgt))).code == tgt
    # random line edits (changes, inserts, deletes, blank lines) of every built-in seed: exact round trip
    rng = random.Random(0)
    for name in seeds.SEEDS:
        text = seeds.seed_source(name)
        lines = text.rstrip("\n").split("\n")
        for _ in range(20):
            out = list(lines)
            for _ in range(rng.randint(1, 5)):
                i, op = rng.randrange(len(out)), rng.random()
                if op < 0.5:
                    out[i] = out[i].replace("1", "2") or "x = 1"
                elif op < 0.7:
                    out.insert(i, f"    y = {rng.randint(0, 9)}")
                elif op < 0.85:
                    del out[i]
                else:
                    out.insert(i, "")
            target = "\n".join(out) + "\n"
            blocks = diff_blocks(text, target)
            back = apply_diff(text, diff_text(blocks))
            assert (back.code if blocks else text) == target and back.fuzzy == 0, (name, diff_text(blocks))


# -- train and eval on a tiny model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(folder)
    return folder


@pytest.mark.parametrize("given", ["corpus", "pairs folder"])
def test_train_widths_summary_on_a_tiny_model(tiny_model, lenet_corpus, tmp_path, given):
    out, fmt = tmp_path / "adapter", ["--answer-format", "widths", "--context", "summary"]
    corpus = lenet_corpus
    if given == "pairs folder":  # built in widths/summary; train's format flags are then unused
        corpus = tmp_path / "pairs"
        res = run_module("finetune", "dataset", "--corpus", lenet_corpus, "--out", corpus, *fmt, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        fmt = []
    res = run_module("finetune", "train", "--corpus", corpus, "--model", tiny_model, "--out", out, *fmt,
                     "--max-steps", 2, "--batch-size", 2,
                     "--lora-r", 4, "--lora-alpha", 8, "--logging-steps", 1, "--eval-limit", 0, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trained 2 steps" in res.stdout
    card = json.loads((out / "run_card.json").read_text())
    assert card["answer_format"] == "widths" and card["context"] == "summary" and card["steps"] == 2
    assert (card["config"]["answer_format"], card["config"]["context"]) == ("widths", "summary")
    assert all(h["loss"] > 0 for h in card["loss_history"] if "loss" in h)
    assert (out / "adapter_model.safetensors").exists()


def test_eval_reports_valid_and_goal_rates_per_format(tiny_model, lenet_corpus, lenet_rows, tmp_path):
    report = tmp_path / "eval.json"
    res = run_module("finetune", "eval", "--model", tiny_model, "--corpus", lenet_corpus, "--n", 2,
                     "--answer-format", "widths,diff,code", "--context", "summary", "--max-new-tokens", 8,
                     "--eval-fraction", 0.2, "--out", report, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "valid (runs)" in res.stdout and "meets the goal" in res.stdout
    doc = json.loads(report.read_text())
    assert set(doc["results"]) == {"base/widths", "base/diff", "base/code"}
    for name, r in doc["results"].items():
        s = r["summary"]
        assert r["format"] == name.split("/")[1] and s["prompts"] == 2 and len(r["answers"]) == 2
        assert s["valid_rate"] == s["runs"] / 2 and s["goal_rate"] == s["goal_met"] / 2
        # a random tiny model writes nothing valid: each failure is counted with the parser's reason
        assert sum(s["failures"].values()) == 2 - s["runs"]
    assert doc["results"]["base/widths"]["context"] == "summary" and doc["results"]["base/diff"]["context"] == "source"


def test_judge_accepts_the_true_answer_in_every_format(all_formats, lenet_rows):
    """Scripted answers (the pairs' own targets): parsed, realised / applied, valid, goal met."""
    from finetune.evaluate import EvalConfig, judge

    by_id = {r["id"]: r for r in lenet_rows}
    by_sha = {r["sha256"]: r for r in lenet_rows}
    settings = {"dataset": "fashion-mnist", "same_recipe_as_corpus": True}
    cfg = EvalConfig(model="", corpus="")
    for fmt, ctx in (("widths", "summary"), ("diff", "source"), ("code", "source")):
        rows = list(all_formats[(fmt, ctx)][0]["eval"])[:2]
        pairs = [{"source_id": r["source_id"], "target_id": r["target_id"], "goal": json.loads(r["goal"])} for r in rows]
        nets = describe_all([by_id[p["source_id"]] for p in pairs]) if fmt == "widths" else None
        answers = [r["messages"][-1]["content"] for r in rows]
        recs = judge(answers, pairs, by_id, by_sha, settings, cfg, fmt, fmt, nets)
        assert all(r["parsed"] and r["runs"] and r["goal_met"] for r in recs), recs
        assert [r["metrics_from"] for r in recs] == [f"corpus row {p['target_id']}" for p in pairs]
        bad = judge(["[1, 2]", "nothing"], pairs, by_id, by_sha, settings, cfg, fmt, fmt, nets)
        assert not any(r["parsed"] for r in bad) and all(r["error"] for r in bad)


def test_the_improve_eval_rebuilds_the_split_the_adapter_was_tuned_with():
    """An adapter tuned on a pairs folder built with its own --rng-seed / --eval-fraction: eval rebuilds the
    held-out pairs with those, not with the train command's flags (which would hold out tuned-on networks)."""
    from finetune.evaluate import EvalConfig, split_settings

    cfg = EvalConfig(model="m", corpus="c")
    card = {"config": {"pairs_per_parent": 4, "eval_fraction": 0.1, "seed": 0},
            "data_config": {"pairs_per_parent": 2, "eval_fraction": 0.25, "seed": 7, "answer_format": "widths"}}
    assert split_settings(card, cfg) == {"pairs_per_parent": 2, "eval_fraction": 0.25, "seed": 7}
    old_card = {"config": {"pairs_per_parent": 4, "eval_fraction": 0.1, "seed": 3}}  # before data_config
    assert split_settings(old_card, cfg) == {"pairs_per_parent": 4, "eval_fraction": 0.1, "seed": 3}
    assert split_settings({}, EvalConfig(model="m", corpus="c", seed=5))["seed"] == 5  # no adapter: the flags
