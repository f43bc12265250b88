"""Metrics a candidate cannot fake cheaply (issue 28, part 4): FLOPs counted on the forward pass that
produced the predictions, cross-checked with fvcore; parameters counted after training; the test labels
kept out of the candidate's process, its predictions scored by the parent. Each hostile network here
beat the profiler before: a cheap path while traced, a convolution inside a custom autograd Function,
parameters added during training, test labels read from the evaluator's memory."""
import gzip
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from corpus.measure import ForwardFlops

N_TRAIN, N_TEST, CLASSES = 256, 200, 10
RECIPE = {"batch_size": 32, "min_steps": 0, "epochs": 1, "crop": False, "flip": False}  # 8 steps


def _idx(path, arr):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
                + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A prepared 28x28 ten-class set in its own cache, through `corpus.data.prepare`. The test labels are
    random: no network can predict them, so an accuracy far above chance means it read them."""
    import os

    from corpus.data import prepare

    base = tmp_path_factory.mktemp("honest")
    raw = base / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    _idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (N_TRAIN, 28, 28)))
    _idx(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, CLASSES, N_TRAIN))
    _idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (N_TEST, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, CLASSES, N_TEST))
    old = os.environ.get("NASFORGE_CACHE")
    os.environ["NASFORGE_CACHE"] = str(base / "cache")
    try:
        yield str(prepare("mnist", str(raw)))
    finally:
        if old is None:
            os.environ.pop("NASFORGE_CACHE", None)
        else:
            os.environ["NASFORGE_CACHE"] = old


def payload(source, data_path, **more):
    return {"source": source, "data_path": data_path, "classes": CLASSES, "recipe": RECIPE, "device": "cpu",
            "latency": "none", **more}


def run(source, data_path, **more):
    """The pipeline in this process, scored as the parent does."""
    from corpus.evaluator import score
    from corpus.pipeline import evaluate

    p = payload(source, data_path, **more)
    return score(evaluate(p), p)


NET = textwrap.dedent("""
    import sys, torch, torch.nn as nn, torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.wide = nn.Conv2d(1, 64, 3, padding=1)
            self.fc = nn.Linear(64, out_shape[0])
            self.cheap = nn.Linear(1, out_shape[0])

        def counted(self):
    {counted}

        def forward(self, x):
            if self.counted():
                return self.cheap(x.mean((1, 2, 3))[:, None])
            return self.fc(F.relu(self.wide(x)).mean((2, 3)))
""")
WIDE_MACS = 9 * 64 * 28 * 28 + 64 * CLASSES  # the wide path, one sample
# 1. cheap while fvcore traces it (or the latency timer calls it)
TRACING = NET.format(counted=textwrap.indent(textwrap.dedent("""
    if torch.jit.is_tracing():
        return True
    f = sys._getframe(1)
    while f is not None:
        if f.f_globals.get('__name__', '').startswith(('fvcore', 'corpus.measure')):
            return True
        f = f.f_back
    return False"""), " " * 8))
# 2. wide only where the trainer or the test-set forward calls it (the caller's frame), cheap everywhere else
TRAIN_ONLY = NET.format(counted=textwrap.indent(textwrap.dedent("""
    f = sys._getframe(1)
    while f is not None:
        if f.f_globals.get('__name__') == 'corpus.train':
            return False
        f = f.f_back
    return True"""), " " * 8))


@pytest.mark.parametrize("source", [TRACING, TRAIN_ONLY], ids=["is_tracing", "caller_frame"])
def test_a_network_that_runs_cheap_while_counted_gets_its_true_flops_and_fails_the_budget(tiny_mnist, source):
    from corpus.measure import count_flops
    from mutator.probe import build, load

    model = build(load(source), {"in_shape": [1, 1, 28, 28], "classes": CLASSES}, "cpu")
    assert count_flops(model, (1, 1, 28, 28))[0] == CLASSES  # fvcore alone: the cheap path
    row = run(source, tiny_mnist)
    assert row["status"] == "ok", row
    assert row["flops"] == pytest.approx(WIDE_MACS, rel=0.01)
    assert row["flops_check"] != "ok"
    over = run(source, tiny_mnist, limits={"flops": 100_000})
    assert over["status"] == "constraint" and over["accuracy"] is None, over


AUTOGRAD = textwrap.dedent("""
    import torch, torch.nn as nn, torch.nn.functional as F

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return F.conv2d(x, w, padding=1)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return (torch.nn.grad.conv2d_input(x.shape, w, g, padding=1),
                    torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1))

    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.w = nn.Parameter(torch.randn(64, 1, 3, 3) * 0.1)
            self.fc = nn.Linear(64, out_shape[0])

        def forward(self, x):
            return self.fc(F.relu(Conv.apply(x, self.w)).mean((2, 3)))
""")


def test_a_convolution_inside_a_custom_autograd_function_is_counted(tiny_mnist):
    from corpus.measure import count_flops
    from mutator.probe import build, load

    model = build(load(AUTOGRAD), {"in_shape": [1, 1, 28, 28], "classes": CLASSES}, "cpu")
    flops, unsupported = count_flops(model, (1, 1, 28, 28))
    assert flops == 64 * CLASSES and "prim::PythonOp.Conv" in unsupported  # fvcore alone: the classifier
    row = run(AUTOGRAD, tiny_mnist)
    assert row["status"] == "ok", row
    assert row["flops"] == WIDE_MACS  # fvcore saw only the classifier (640) and a prim::PythonOp
    assert row["flops_check"].startswith("fvcore counts 640")
    assert run(AUTOGRAD, tiny_mnist, limits={"flops": 100_000})["status"] == "constraint"


GROWS = textwrap.dedent("""
    import torch, torch.nn as nn

    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8, out_shape[0])

        def forward(self, x):
            if self.training and not hasattr(self, 'extra'):
                self.extra = nn.Linear(512, 512)   # 262,656 parameters the pre-training count never saw
            return self.fc(self.conv(x).mean((2, 3)))
""")


def test_parameters_added_during_training_are_counted_and_fail_a_parameter_limit(tiny_mnist):
    small = 8 * 9 + 8 + 8 * CLASSES + CLASSES
    row = run(GROWS, tiny_mnist)
    assert row["status"] == "ok" and row["params"] == small + 512 * 512 + 512
    assert row["params_check"] == f"{small:,} parameters before training, {row['params']:,} after"
    over = run(GROWS, tiny_mnist, limits={"params": 10_000})
    assert over["status"] == "constraint" and "parameters > limit" in over["error"], over


def test_an_honest_network_keeps_fvcores_count_and_checks_ok(tiny_mnist):
    from conftest import TINY_VGG
    from corpus.measure import count_flops
    from mutator.probe import build, load

    row = run(TINY_VGG, tiny_mnist, limits={"flops": 1e7, "params": 1e5})
    model = build(load(TINY_VGG), {"in_shape": [1, 1, 28, 28], "classes": CLASSES}, "cpu")
    assert row["status"] == "ok" and row["flops_check"] == "ok" and row["params_check"] == "ok"
    assert row["flops"] == count_flops(model, (1, 1, 28, 28))[0]  # one multiply-add = one flop, as before
    assert 0 <= row["accuracy"] <= 1 and "predictions" not in row


def test_dispatch_count_halves_flop_counter_mode_and_sees_attention():
    import torch.nn.functional as F

    q = torch.randn(2, 4, 16, 8)
    with ForwardFlops() as f:
        F.scaled_dot_product_attention(q, q, q)
        torch.nn.functional.linear(torch.randn(3, 5), torch.randn(7, 5))
    assert f.macs == 2 * 4 * 16 * 16 * (8 + 8) + 3 * 5 * 7


# -- the test labels ------------------------------------------------------------------------------

def test_prepared_file_holds_no_test_labels_and_the_sandbox_cannot_read_them(tiny_mnist):
    from corpus.data import labels_path, load_prepared, load_test_labels, prepare
    from mutator.sandbox import read_paths

    assert "y_test" not in torch.load(tiny_mnist, weights_only=True)
    assert "y_test" not in load_prepared(tiny_mnist)
    assert len(load_test_labels(tiny_mnist)) == N_TEST
    readable = read_paths()
    lp = str(labels_path(tiny_mnist))
    assert not any(lp == p or lp.startswith(p + "/") for p in readable)
    assert any(tiny_mnist.startswith(p + "/") for p in readable)
    # a cache written before the split (labels inside) is split on the next prepare
    d = torch.load(tiny_mnist, weights_only=True)
    d["y_test"] = load_test_labels(tiny_mnist)
    torch.save(d, tiny_mnist)
    labels_path(tiny_mnist).unlink()
    assert str(prepare("mnist", str(Path(tiny_mnist).parents[2] / "raw"))) == tiny_mnist
    assert "y_test" not in torch.load(tiny_mnist, weights_only=True) and labels_path(tiny_mnist).exists()


def _row(**kw):
    return {"status": "ok", "error": None, "flops": 10, "params": 10, **kw}


def test_predictions_are_validated_and_scored_by_the_parent(tiny_mnist):
    import base64

    from corpus.data import load_test_labels
    from corpus.evaluator import score
    from corpus.pipeline import encode_predictions

    labels = load_test_labels(tiny_mnist)
    p = payload("", tiny_mnist)
    good = score(_row(accuracy=0.01, predictions=encode_predictions(labels, CLASSES)), p)
    assert good["accuracy"] == 1.0 and "predictions" not in good
    wrong = encode_predictions((labels + 1) % CLASSES, CLASSES)
    assert score(_row(accuracy=1.0, predictions=wrong), p)["accuracy"] == 0  # its own number is ignored
    bad = {
        "short": encode_predictions(labels[:-1], CLASSES),
        "range": base64.b64encode(bytes([CLASSES]) * N_TEST).decode(),
        "not64": "%%%%",
        "missing": None,
    }
    for name, text in bad.items():
        row = score(_row(accuracy=1.0, predictions=text), p)
        assert row["status"] == "invalid_result" and row["accuracy"] is None and row["flops"] is None, (name, row)
    # a row without training carries no accuracy, whatever it says
    assert score(_row(accuracy=1.0), {**p, "train": False})["accuracy"] is None
    # the schema at the pool's boundary: base64 text only
    from mutator.results import validate_row

    assert validate_row(_row(predictions=["x"]))["status"] == "invalid_result"
    assert validate_row(_row(predictions="ab\ncd"))["status"] == "invalid_result"


THIEF = textwrap.dedent("""
    import gc, glob, inspect, os, sys
    import torch, torch.nn as nn

    N_TEST, CLASSES = {n}, {k}

    def steal():
        '''The test labels: an int64 tensor of N_TEST class indices that is not the training labels, from the
        frames above, from every object the collector knows, from any file this process can open.'''
        found = []
        f = sys._getframe(1)
        while f is not None:
            found += list(f.f_locals.values())
            f = f.f_back
        for frame in inspect.stack():
            found += list(frame.frame.f_locals.values())
        found += gc.get_objects()
        for o in list(found):
            try:  # a mapping may raise on reading (a library's lazy registry): skip it
                found += list(o.values()) if isinstance(o, dict) else []
            except Exception:
                pass
        for o in list(found):
            try:
                found.append(getattr(o, 'y', None))
            except Exception:
                pass
        cache = os.environ.get('NASFORGE_CACHE', '/nowhere')
        for path in glob.glob(cache + '/**/*.pt', recursive=True) + glob.glob(cache + '/../**/*.pt', recursive=True):
            try:
                d = torch.load(path, weights_only=True)
                found += list(d.values()) if isinstance(d, dict) else [d]
            except Exception:
                pass
        for o in found:
            if isinstance(o, torch.Tensor) and o.dtype == torch.int64 and o.shape == (N_TEST,) \\
                    and int(o.min()) >= 0 and int(o.max()) < CLASSES:
                return o.clone()
        return None

    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8, out_shape[0])
            self.seen = 0
            self.labels = None

        def forward(self, x):
            out = self.fc(self.conv(x).mean((2, 3)))
            if self.training or len(x) == 1:
                return out
            if self.labels is None:
                self.labels = steal()
            if self.labels is None:
                return out
            y = self.labels[self.seen:self.seen + len(x)]
            self.seen += len(x)
            return torch.nn.functional.one_hot(y, CLASSES).float() * 100
""").format(n=N_TEST, k=CLASSES)


def test_a_network_that_hunts_for_the_test_labels_finds_none(tiny_mnist):
    from corpus.data import load_prepared
    from corpus.evaluator import call
    from corpus.train import Recipe, evaluate, split_data
    from mutator.probe import build, load
    from mutator.sandbox import WorkerPool

    # the control: where the labels are in its process (as before), the thief scores 100 %
    _, labelled = split_data(load_prepared(tiny_mnist, with_test_labels=True), Recipe(), "cpu")
    thief = build(load(THIEF), {"in_shape": [1, 1, 28, 28], "classes": CLASSES}, "cpu")
    assert evaluate(thief, labelled) == 1.0
    del labelled, thief

    with WorkerPool(1, timeout_s=120, memory_mb=3000, threads_per_worker=1) as pool:
        row = call(pool, payload(THIEF, tiny_mnist))
    assert row["status"] == "ok", row
    assert row["accuracy"] < 0.5  # random labels: chance is 0.1; the labels in hand give 1.0
