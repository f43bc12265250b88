"""The mutator's command line, run as a user runs it (subprocess, sandboxed workers)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from conftest import TINY_VGG as VGG, assert_one_line_error


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mutator", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


@pytest.fixture
def seed(tmp_path):
    p = tmp_path / "tiny_vgg.py"
    p.write_text(VGG)
    return p


def test_generate_writes_validated_distinct_variants_and_resumes(seed, tmp_path):
    out = tmp_path / "v"
    res = run("generate", "--seed", str(seed), "--num", "6", "--out", str(out), "--in-shape", "1,1,28,28")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        text = (out / r["file"]).read_text()
        import hashlib
        assert hashlib.sha256(text.encode()).hexdigest() == r["sha256"]
        assert r["seed_widths"] == [16, 32] and len(r["widths"]) == 2
        assert all(w % 8 == 0 and w >= 8 for w in r["widths"])
        assert "# classifier" in text and "supported_hyperparameters" in text
    res = run("generate", "--seed", str(seed), "--num", "4", "--out", str(out), "--in-shape", "1,1,28,28")
    assert res.returncode == 0, res.stderr
    rows2 = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows2) == 10 and rows2[:6] == rows
    assert len({tuple(r["widths"]) for r in rows2}) == 10
    assert (out / "config.json").exists()


def test_torn_manifest_line_is_dropped(seed, tmp_path):
    out = tmp_path / "v"
    assert run("generate", "--seed", str(seed), "--num", "2", "--out", str(out)).returncode == 0
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"id": "half')
    assert run("generate", "--seed", str(seed), "--num", "1", "--out", str(out)).returncode == 0
    rows = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3


def test_corrupted_manifest_is_an_error_and_left_alone(seed, tmp_path):
    out = tmp_path / "v"
    out.mkdir()
    (out / "manifest.jsonl").write_text("not json\n")
    assert_one_line_error(run("generate", "--seed", str(seed), "--num", "1", "--out", str(out)),
                          "corrupted manifest")
    assert (out / "manifest.jsonl").read_text() == "not json\n"


def test_check_prints_width_literals(seed):
    res = run("check", str(seed))
    assert res.returncode == 0, res.stderr
    assert "2 width(s)" in res.stdout
    assert "value 16" in res.stdout and "features.0.out_channels" in res.stdout


def test_apply_writes_exact_widths(seed, tmp_path):
    out = tmp_path / "a.py"
    res = run("apply", "--seed", str(seed), "--widths", "24,40", "--out", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "nn.Conv2d(in_shape[1], 24, 3" in text and "nn.Linear(40, out_shape[0])" in text
    assert_one_line_error(run("apply", "--seed", str(seed), "--widths", "24", "--out", str(out)), "has 2 widths")


@pytest.mark.parametrize("content, args, needle", [
    (None, [], "no such file"),
    ("def broken(:\n", [], "syntax error at line 1"),
    ("x = 1\n", [], "no nn.Module class"),
    (VGG, ["--class-name", "Missing"], "no class or function named 'Missing'"),
    (VGG.replace("nn.Linear(32,", "nn.Linear(31,"), [], "fc.in_features expects 31 but gets 32"),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
     "        super().__init__()\n        self.fc = nn.Linear(3, num_classes)\n"
     "    def forward(self, x):\n        return self.fc(x.mean((2, 3)))\n", [], "no width literals"),
    (VGG, ["--in-shape", "1,3,32"], "--in-shape needs four positive integers batch,channels,height,width"),
    (VGG, ["--in-shape", "1,3,0,32"], "got 1,3,0,32"),
    (VGG, ["--in-shape", "1,3,a,32"], "got 1,3,a,32"),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        while True: pass\n", ["--timeout-s", "5"], "no answer within"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, content, args, needle):
    path = tmp_path / "model.py"
    if content is not None:
        path.write_text(content)
    for cmd in (["generate", "--seed", str(path), "--num", "1", "--out", str(tmp_path / "o")],
                ["check", str(path)]):
        assert_one_line_error(run(*cmd, *args), needle)


def test_unknown_seed_name_lists_builtins():
    assert_one_line_error(run("generate", "--seed", "no-such-seed", "--num", "1"), "built-in:")


@pytest.mark.parametrize("argv", [["corpus", "profile", "{t}/v.py", "--seed", "3"],
                                  ["corpus", "from-table", "--space", "cbm-resnet", "--out", "{t}/o", "--seed", "1"],
                                  ["corpus", "predictor", "fit", "--corpus", "{t}/c", "--out", "{t}/m", "--seed", "0"],
                                  ["finetune", "dataset", "--corpus", "{t}/c", "--out", "{t}/o", "--seed", "0"],
                                  ["finetune", "train", "--corpus", "{t}/c", "--out", "{t}/o", "--seed", "0"]])
def test_seed_is_never_an_rng_seed(argv, tmp_path):
    """--seed is the seed network in every command; where it used to be an rng seed it is a one-line error
    naming --rng-seed, before anything runs (nothing written)."""
    from conftest import run_module

    res = run_module(*[a.format(t=tmp_path) for a in argv])
    assert_one_line_error(res, "the rng seed is --rng-seed")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv,needle", [(["search", "run", "--llm", "random"], "--strategy random"),
                                         (["corpus", "show", "c", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
                                         (["finetune", "train", "--corpus"], "expected one argument"),
                                         (["mutator", "generate", "--num", "many"], "invalid int value: 'many'")])
def test_usage_errors_are_one_line(argv, needle):
    """argparse's own errors (unknown flag, bad value, missing argument) are one line, not a usage block."""
    from conftest import run_module

    res = run_module(*argv)
    assert_one_line_error(res, needle)
    assert "usage:" not in res.stderr
