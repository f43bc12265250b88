"""One's own network, end to end (issue 28): a third-party file whose network a factory function
builds, named once with --class-name and carried by every later stage; the checks a user's mistakes
meet on the way (a seed that does not fit the data set, a build where every network failed, a bad
--in-shape), the --class-name hint and rounding divisors in the width analysis."""
import json
import pickle
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_module

ZOO = Path(__file__).parent / "fixtures" / "zoo"

# A CIFAR ResNet as published (3 input channels written into the first conv, a class that needs
# arguments, factory functions that build it), at tiny widths so that training takes seconds.
RESNET8 = textwrap.dedent("""
    import torch.nn as nn
    import torch.nn.functional as F


    def conv3x3(in_planes, out_planes, stride=1):
        return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = conv3x3(in_planes, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))


    class CifarResNet(nn.Module):
        def __init__(self, block, num_blocks, num_classes=10):
            super().__init__()
            self.in_planes = 8
            self.conv1 = conv3x3(3, 8)
            self.bn1 = nn.BatchNorm2d(8)
            self.layer1 = self._make_layer(block, 8, num_blocks[0], 1)
            self.layer2 = self._make_layer(block, 16, num_blocks[1], 2)
            self.layer3 = self._make_layer(block, 32, num_blocks[2], 2)
            self.linear = nn.Linear(32, num_classes)

        def _make_layer(self, block, planes, n, stride):
            layers = []
            for s in [stride] + [1] * (n - 1):
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = F.adaptive_avg_pool2d(out, 1).flatten(1)
            return self.linear(out)


    def cifar10_resnet8():
        return CifarResNet(BasicBlock, [1, 1, 1])


    def cifar100_resnet8():
        return CifarResNet(BasicBlock, [1, 1, 1], num_classes=100)
""")


def write_cifar10(folder: Path, per_batch: int = 24, test: int = 40) -> Path:
    """A tiny CIFAR-10 in the published pickle format (`--data-dir`): 5 x per_batch training images."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(k) for k in rng.integers(0, 10, n)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def write_mnist(folder: Path, train: int = 64, test: int = 32) -> Path:
    """A tiny MNIST in the idx format (`--data-dir`): 1x28x28 images, 10 classes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, n) + labels.tobytes())
    return folder


def write_manifest(folder: Path, rows: dict) -> None:
    """A variants folder as `mutator generate` writes it: {id: (source, manifest fields)}."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.jsonl", "w") as f:
        for vid, (src, extra) in rows.items():
            (folder / f"{vid}.py").write_text(src)
            f.write(json.dumps({"id": vid, "parent": "resnet8", "file": f"{vid}.py", "widths": [8], **extra}) + "\n")


@pytest.fixture
def env(tmp_path):
    """A private data cache: tiny data sets converted here never reach the user's."""
    return {"NASFORGE_CACHE": str(tmp_path / "cache")}


# -- the --class-name hint --------------------------------------------------------------------------

def test_class_name_hint_lists_only_what_builds_without_arguments():
    from mutator.probe import ModelError, build, load, pick_class

    mod = load(RESNET8)
    with pytest.raises(ModelError) as exc:
        pick_class(mod, None)
    hint = str(exc.value)
    assert "pick one with --class-name (cifar10_resnet8, cifar100_resnet8)" in hint, hint
    for needs_arguments in ("CifarResNet", "BasicBlock", "conv3x3"):
        assert needs_arguments not in hint
    # and what it offers does build
    model = build(mod, {"in_shape": [1, 3, 32, 32], "classes": 100, "class_name": "cifar100_resnet8"}, "meta")
    assert model.linear.out_features == 100


def test_hint_without_any_buildable_name_says_to_add_a_factory():
    from mutator.probe import ModelError, load, pick_class

    src = RESNET8.split("\ndef cifar10_resnet8")[0]
    with pytest.raises(ModelError, match="no class or function in the file builds a network without arguments"):
        pick_class(load(src), None)


# -- rounding divisors ------------------------------------------------------------------------------

def test_rounding_divisors_are_found_through_parameters_and_keywords():
    from mutator.literals import find_integers, parse, rounding_divisors

    src = textwrap.dedent("""
        def _make_divisible(v, divisor=8):
            return max(divisor, int(v + divisor / 2) // divisor * divisor)

        class Net:
            def __init__(self, round_nearest=4):
                self.a = _make_divisible(32, round_nearest)
                self.b = _make_divisible(48, divisor=16)
                self.c = _make_divisible(64, 24)
                self.d = (80 + 7) // 8 * 8
    """)
    mod = parse(src)
    found = rounding_divisors(mod)
    flags = [(l.value, (l.line, l.col) in found) for l in find_integers(mod)]
    assert flags == [(8, True), (2, False), (4, True), (32, False), (48, False), (16, True), (64, False), (24, True),
                     (80, False), (7, False), (8, True), (8, False)]  # `// 8` divides, `* 8` multiplies


def test_round_nearest_of_mobilenetv2_is_not_a_width():
    from mutator.analysis import Analyzer

    source = (ZOO / "tv_mobilenetv2.py").read_text()
    a = Analyzer(source, {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": "mobilenet_v2_tiny"}).run()
    line = next(i for i, l in enumerate(source.splitlines(), 1) if "round_nearest=8)" in l)
    rounding = [l for l in a["literals"] if l["line"] == line and l["value"] == 8]
    assert len(rounding) == 1 and rounding[0]["kind"] != "width", rounding
    assert "rounding divisor" in rounding[0]["reason"]
    assert all(line not in g["lines"] for g in a["groups"])
    # the real widths are all still there: the stem, the last channel and the five stage widths
    assert a["seed_widths"] == [16, 256, 8, 16, 24, 32, 48]


# -- --in-shape ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 32), (1, 3, 32, 32, 1), (1, 0, 32, 32), "1,3,a,32", (1, 3, 32, True)])
def test_in_shape_must_be_four_positive_integers(shape):
    from mutator.generate import UserError, check_in_shape

    with pytest.raises(UserError, match="--in-shape needs four positive integers batch,channels,height,width"):
        check_in_shape(shape)
    check_in_shape((1, 3, 32, 32))


def test_in_shape_of_three_numbers_is_one_line_exit_2(tmp_path):
    seed = tmp_path / "resnet8.py"
    seed.write_text(RESNET8)
    res = run_module("mutator", "generate", "--seed", seed, "--class-name", "cifar10_resnet8", "--in-shape", "1,3,32",
                     "--num", 1, "--out", tmp_path / "v")
    assert_one_line_error(res, "--in-shape needs four positive integers batch,channels,height,width like 1,3,32,32, "
                               "got 1,3,32")
    assert not (tmp_path / "v").exists()


# -- corpus build: the seed against the data set, a build where everything failed -------------------

def test_corpus_build_refuses_a_seed_that_does_not_fit_the_data_set(tmp_path, env):
    variants = tmp_path / "v"
    spec = {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": "cifar10_resnet8"}
    write_manifest(variants, {"a": (RESNET8, spec), "b": (RESNET8.replace("16,", "24,"), spec)})
    res = run_module("corpus", "build", "--variants", variants, "--dataset", "mnist",
                     "--data-dir", write_mnist(tmp_path / "mnist"), "--out", tmp_path / "c", env=env)
    assert_one_line_error(res, "resnet8 (cifar10_resnet8): its variants were made for 3x32x32 inputs and 10 classes, "
                               "mnist has 1x28x28 images and 10 classes")
    line = res.stderr.strip().splitlines()[-1]
    assert "conv1.in_channels expects 3 but gets 1" in line and "profile on cifar10 or cifar100" in line, line
    assert not (tmp_path / "c" / "rows.jsonl").exists()  # nothing was profiled


def test_corpus_build_where_every_network_failed_exits_non_zero(tmp_path, env):
    from test_corpus import bad_model

    variants = tmp_path / "v"
    write_manifest(variants, {"seven": (bad_model(classes="7"), {}), "eight": (bad_model(classes="8"), {})})
    res = run_module("corpus", "build", "--variants", variants, "--dataset", "mnist",
                     "--data-dir", write_mnist(tmp_path / "mnist"), "--out", tmp_path / "c", env=env)
    assert res.returncode == 1, res.stderr[-2000:]
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "every network failed (shape_error: 2)" in errors[0], res.stderr[-2000:]
    assert "expected (1, 10)" in errors[0] and "rows.jsonl" in errors[0]
    assert "Traceback" not in res.stderr
    rows = [json.loads(l) for l in (tmp_path / "c" / "rows.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in rows) == ["shape_error", "shape_error"]


def test_progress_postfix_shows_steps_time_and_eta():
    from corpus.build import Ticker

    class Bar:
        def set_postfix_str(self, text, refresh=True):
            self.text = text

    bar = Bar()
    t = Ticker(bar, "512 training images, batch 32, 30 optimizer steps (1.88 passes over the images)", 3,
               every_s=3600)
    try:
        assert t.text(t.t0 + 75) == "ok 0, failed 0, net 1: 30 steps, 1:15 so far"
        t.t0 -= 120  # the first network took two minutes
        t.finished(1, 0)
        assert bar.text.startswith("ok 1, failed 0, net 2: 30 steps, 0:00 so far, 2:00/net, ETA 4:0")
        assert t.text(t.started + 60).endswith("1:00 so far, 3:00/net, ETA 5:00")
    finally:
        t.stop()


# -- the chain --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_factory_function_file_end_to_end(tmp_path, env):
    """mutator generate -> corpus build -> finetune dataset -> search run, --class-name given once to
    generate (and to search run, which takes the seed file itself)."""
    import datasets

    seed = tmp_path / "resnet8.py"
    seed.write_text(RESNET8)
    data = write_cifar10(tmp_path / "cifar")
    variants, corpus, pairs = tmp_path / "v", tmp_path / "c", tmp_path / "pairs"
    res = run_module("mutator", "generate", "--seed", seed, "--class-name", "cifar10_resnet8", "--num", 4,
                     "--out", variants, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = [json.loads(l) for l in (variants / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 4 and {m["class_name"] for m in manifest} == {"cifar10_resnet8"}

    res = run_module("corpus", "build", "--variants", variants, "--dataset", "cifar10", "--data-dir", data,
                     "--out", corpus, "--min-steps", 8, "--batch-size", 16, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(datasets.load_from_disk(str(corpus)))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["class_name"] for r in rows} == {"cifar10_resnet8"}
    assert "`cifar10_resnet8`" in (corpus / "README.md").read_text()

    res = run_module("finetune", "dataset", "--corpus", corpus, "--out", pairs, "--answer-format", "widths",
                     "--eval-fraction", 0.25, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((pairs / "finetune_dataset.json").read_text())
    # every source network analysed (no "source ..." skips); a target outside a source's allowed widths is
    # a documented skip, not a failure
    assert info["train"] > 0 and not any(k.startswith("source") for k in info["skipped"]), info
    prompt = datasets.load_from_disk(str(pairs))["train"][0]["messages"][1]["content"]
    assert "cifar10_resnet8" in prompt  # the source shown is the file, factory and all

    run = tmp_path / "run"
    res = run_module("search", "run", "--strategy", "random", "--seed", seed, "--class-name", "cifar10_resnet8",
                     "--dataset", "cifar10", "--data-dir", data, "--iterations", 1, "--train-limit", 64,
                     "--batch-size", 16, "--out", run, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 iterations in" in res.stdout
    from search.runner import load_run

    cfg, iters, seed_row = load_run(str(run))
    assert cfg.class_name == "cifar10_resnet8" and seed_row["status"] == "ok"
    assert len(iters) == 1 and iters[0]["status"] == "ok", iters[0]["error"]
