"""The corpus profiler: counting rules, data readers, failure statuses, resume, the CLI."""
import gzip
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import ROOT, TINY_VGG, assert_one_line_error, run_module
from corpus.data import DataError, read_idx, read_raw, stratified_indices
from corpus.measure import count_flops, count_params, latency_ms
from corpus.train import GpuData, Recipe, augment, evaluate, schedule, train

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")


# -- counting rules ---------------------------------------------------------------------------------

def test_flops_match_closed_form():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),
                          nn.Flatten(), nn.Linear(16 * 14 * 14, 10))
    flops, unsupported = count_flops(model, (1, 1, 28, 28))
    conv1 = 3 * 3 * 1 * 8 * 28 * 28           # one multiply-add = one flop
    conv2 = 3 * 3 * (8 // 2) * 16 * 14 * 14   # grouped: in/groups inputs per output
    fc = 16 * 14 * 14 * 10
    assert flops == conv1 + conv2 + fc
    assert count_params(model) == (9 * 8 + 8) + (9 * 4 * 16 + 16) + (16 * 14 * 14 * 10 + 10)


def test_flops_report_unsupported_ops_instead_of_guessing():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.special.erfcx(x).sum((2, 3))

    flops, unsupported = count_flops(Odd(), (1, 3, 8, 8))
    assert flops == 0 and unsupported


def test_latency_is_a_positive_median_and_grows_with_batch():
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
    threads = torch.get_num_threads()
    # one thread (as a sweep profiles, OMP_NUM_THREADS=1): on a busy CPU an op split over 2 threads waits whole time
    # slices for the descheduled one (seen: median 48 ms at batch 1 against 9 ms at batch 32)
    torch.set_num_threads(1)
    try:
        small = latency_ms(model, (1, 3, 32, 32), 1, runs=30)
        large = latency_ms(model, (1, 3, 32, 32), 32, runs=30)
    finally:
        torch.set_num_threads(threads)
    assert 0 < small < large


# -- data -------------------------------------------------------------------------------------------

def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.tobytes())


def test_idx_reader_and_truncation(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    write_idx(tmp_path / "x.gz", a)
    assert (read_idx(tmp_path / "x.gz") == a).all()
    raw = gzip.open(tmp_path / "x.gz").read()
    with gzip.open(tmp_path / "y.gz", "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "y.gz")


def test_cifar10_local_folder(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 6) for i in range(1, 6)], ("test_batch", 4)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    (xtr, ytr, xte, yte), src = read_raw("cifar10", str(tmp_path))
    assert xtr.shape == (30, 3, 32, 32) and xte.shape == (4, 3, 32, 32) and ytr.dtype == np.int64
    first = pickle.load(open(d / "data_batch_1", "rb"))
    assert (xtr[0].reshape(-1) == first[b"data"][0]).all()


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_raw("cifar10", str(tmp_path))
    with pytest.raises(DataError, match="unknown data set"):
        read_raw("imagenet-22k")


def test_stratified_subset_keeps_class_proportions():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    idx = stratified_indices(labels, 100, seed=1)
    assert len(idx) == 100 and len(set(idx)) == 100
    assert np.bincount(labels[idx]).tolist() == [60, 30, 10]
    assert (stratified_indices(labels, 100, seed=1) == idx).all()


def test_augment_is_per_sample_and_identity_without_padding_or_flip():
    x = torch.randint(0, 255, (64, 1, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, False, g), x)
    y = augment(x, 2, True, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    same = [(y[i] == x[i]).all().item() for i in range(64)]
    assert 0 < sum(same) < 64  # some samples moved, not all the same way


def test_proxy_training_learns_a_separable_problem():
    torch.manual_seed(0)
    n = 512
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    x[y == 1, :, :, :4] = 200  # class 1: bright left half
    data = GpuData(x, y, "cpu")
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    res = train(model, data, Recipe(epochs=8, batch_size=64, min_steps=0, flip=False, crop=False), "cpu")
    assert res["steps"] == 64 and res["train_seconds"] > 0
    assert evaluate(model, data) > 0.95


def test_default_recipe_trains_a_small_subset_for_enough_steps():
    # the old default (batch 256, one epoch) gave 8 steps on --train-limit 2000: accuracy at chance
    assert schedule(2000, Recipe()) == (32, 150)
    assert schedule(1000, Recipe()) == (32, 150)
    assert schedule(8000, Recipe()) == (64, 150)
    assert schedule(60000, Recipe()) == (256, 234)  # the full set: exactly one epoch, as before
    assert schedule(60000, Recipe(epochs=2)) == (256, 468)
    assert schedule(2000, Recipe(batch_size=256)) == (256, 150)  # an explicit batch is kept
    assert schedule(2000, Recipe(batch_size=256, min_steps=0)) == (256, 7)
    assert schedule(20, Recipe()) == (20, 150)  # never a batch larger than the data
    for n in (100, 500, 1000, 2000, 4000, 8000, 16000, 60000):
        bs, steps = schedule(n, Recipe())
        assert steps >= 150 and 32 <= bs <= 256 and bs * 32 <= max(n, 32 * 32) and bs & (bs - 1) == 0
    with pytest.raises(ValueError):
        schedule(100, Recipe(batch_size=-1))


def test_default_recipe_beats_chance_on_a_tiny_ten_class_subset():
    # 320 noisy images, 10 classes (a bright 2x2 square at a class-specific place), scored on 1,000 held-out
    # ones: the default recipe learns it; one step of batch 256, the old default here, stays near chance (0.1)
    def images(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 10
        x = torch.randint(0, 160, (n, 1, 12, 12), dtype=torch.uint8, generator=g)
        for k in range(10):
            r, c = 2 + 6 * (k // 5), 2 * (k % 5)
            x[y == k, :, r:r + 2, c:c + 2] = 220
        return x, y

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(8 * 6 * 6, 10))

    data = GpuData(*images(320, 0), "cpu")
    test = GpuData(*images(1000, 1), "cpu", data.mean, data.std)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only contend on a shared machine
    try:
        model, old = net(), net()
        res = train(model, data, Recipe(crop=False, flip=False), "cpu")
        train(old, data, Recipe(batch_size=256, min_steps=0, crop=False, flip=False), "cpu")
    finally:
        torch.set_num_threads(threads)
    assert res["steps"] == 150 and res["batch_size"] == 32
    assert evaluate(model, test) > 0.9
    assert evaluate(old, test) < 0.4


# -- the profiler, end to end -----------------------------------------------------------------------

def bad_model(forward_extra: str = "", init_extra: str = "", classes: str = "out_shape[0]") -> str:
    return textwrap.dedent(f"""
        import os, torch, torch.nn as nn

        class Net(nn.Module):
            def __init__(self, in_shape, out_shape, prm, device):
                super().__init__()
                {init_extra or 'pass'}
                self.conv = nn.Conv2d(in_shape[1], 8, 3, padding=1)
                self.fc = nn.Linear(8, {classes})

            def forward(self, x):
                {forward_extra or 'pass'}
                return self.fc(self.conv(x).mean((2, 3)))
    """)


BAD = {
    "build_error": bad_model(init_extra="raise ValueError('no')"),
    "shape_error": bad_model(classes="7"),
    "train_error": bad_model(forward_extra="if self.training: raise RuntimeError('only in training')"),
    "nan": bad_model(forward_extra="x = x * float('nan')"),
    "oom": bad_model(forward_extra="if self.training: torch.empty(1 << 42)"),
    "timeout": bad_model(forward_extra="while self.training: pass"),
    "crash": bad_model(forward_extra="if self.training: os._exit(9)"),
    "sysexit": bad_model(forward_extra="if self.training: raise SystemExit(0)"),
}


def write_variants(folder: Path, sources: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.jsonl", "w") as f:
        for name, src in sources.items():
            (folder / f"{name}.py").write_text(src)
            f.write(json.dumps({"id": name, "parent": "test", "file": f"{name}.py", "widths": [8]}) + "\n")


@needs_fashion
def test_tiny_corpus_on_fashion_mnist_with_every_failure_status(tmp_path):
    import datasets

    variants = tmp_path / "variants"
    res = run_module("mutator", "generate", "--seed", tmp_path / "seed.py", "--num", 2, "--out", variants) \
        if (tmp_path / "seed.py").write_text(TINY_VGG) else None
    assert res.returncode == 0, res.stderr
    with open(variants / "manifest.jsonl", "a") as f:
        for name, src in BAD.items():
            (variants / f"{name}.py").write_text(src)
            f.write(json.dumps({"id": name, "parent": "bad", "file": f"{name}.py", "widths": [8]}) + "\n")
    out = tmp_path / "corpus"
    # one thread per worker: on a busy 2-core machine two threads made a 30-step training 30x slower and a good
    # network ran into the 40 s limit that the `timeout` network must reach
    res = run_module("corpus", "build", "--variants", variants, "--dataset", "fashion-mnist", "--out", out,
                     "--train-limit", 512, "--timeout-s", 40, "--min-steps", 30, env={"NASFORGE_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    ds = datasets.load_from_disk(str(out))
    rows = {r["id"]: r for r in ds}
    assert len(rows) == 2 + len(BAD)
    for name in BAD:
        assert rows[name]["status"] == ("train_error" if name == "sysexit" else name), rows[name]
        assert rows[name]["accuracy"] is None
    good = [r for r in rows.values() if r["parent"] != "bad"]
    for r in good:
        assert r["status"] == "ok", r["error"]
        assert 0.1 < r["accuracy"] <= 1 and r["flops"] > 0 and r["params"] > 0
        assert r["latency_ms"] > 0 and r["latency_batch_ms"] > 0 and r["train_seconds"] > 0
        assert r["code"] == (variants / f"{r['id']}.py").read_text()
        assert json.loads(r["recipe"])["train_limit"] == 512 and "torch" in json.loads(r["versions"])
    card = (out / "README.md").read_text()
    assert "one fused multiply-add counts as one flop" in card
    assert "at least\n`min_steps` (default 150) optimizer steps" in card
    assert "This corpus: 512 training images, batch 32, 30 optimizer steps (1.88 passes" in card
    assert "proxy training: 512 training images, batch 32, 30 optimizer steps" in res.stderr
    # show: summary + plot
    res = run_module("corpus", "show", out)
    assert res.returncode == 0 and "best rows" in res.stdout
    assert (out / "accuracy_vs_flops.png").stat().st_size > 1000
    # resume with nothing new to do
    res = run_module("corpus", "build", "--variants", variants, "--dataset", "fashion-mnist", "--out", out,
                     "--train-limit", 512)
    assert res.returncode == 0 and f"{2 + len(BAD)} already in the corpus" in res.stdout


@needs_fashion
def test_build_resumes_after_kill_9_without_losing_or_duplicating_rows(tmp_path):
    import datasets

    variants = tmp_path / "variants"
    write_variants(variants, {f"v{i}": bad_model(init_extra=f"self.k = {i}") for i in range(5)})
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "corpus", "build", "--variants", str(variants), "--dataset", "fashion-mnist",
           "--out", str(out), "--train-limit", "4096"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / "rows.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = journal.read_text().count("\n")
    assert 2 <= before < 5
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    ids = [json.loads(l)["id"] for l in journal.read_text().splitlines()]
    assert sorted(ids) == [f"v{i}" for i in range(5)]
    assert len(datasets.load_from_disk(str(out))) == 5


@needs_fashion
def test_profile_one_file_prints_a_json_row(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(TINY_VGG)
    res = run_module("corpus", "profile", f, "--dataset", "fashion-mnist", "--train-limit", 256)
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["flops"] > 0 and row["id"] == "m"


def test_bad_input_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_module("corpus", "build", "--variants", empty, "--dataset", "fashion-mnist",
                                     "--out", tmp_path / "o"), "no manifest.jsonl")
    (empty / "manifest.jsonl").write_text("")
    assert_one_line_error(run_module("corpus", "build", "--variants", empty, "--dataset", "fashion-mnist",
                                     "--out", tmp_path / "o"), "lists no variants")
    write_variants(tmp_path / "v", {"a": TINY_VGG})
    assert_one_line_error(run_module("corpus", "build", "--variants", tmp_path / "v", "--dataset", "imagenet",
                                     "--out", tmp_path / "o"), "unknown data set 'imagenet'")
    assert_one_line_error(run_module("corpus", "build", "--variants", tmp_path / "v", "--dataset", "cifar10",
                                     "--data-dir", empty, "--out", tmp_path / "o"), "cifar-10-batches-py")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{not json")
    assert_one_line_error(run_module("corpus", "show", broken), "not a readable corpus")
    assert_one_line_error(run_module("corpus", "show", tmp_path / "nope"), "no such corpus folder")
    assert_one_line_error(run_module("corpus", "profile", tmp_path / "nope.py", "--dataset", "fashion-mnist"),
                          "no such file")
    (tmp_path / "syntax.py").write_text("def (:\n")
    assert_one_line_error(run_module("corpus", "profile", tmp_path / "syntax.py", "--dataset", "fashion-mnist"),
                          "syntax error")


@needs_fashion
def test_ray_executor_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    import datasets

    write_variants(tmp_path / "v", {"a": TINY_VGG, "b": BAD["nan"]})
    out = tmp_path / "c"
    res = run_module("corpus", "build", "--variants", tmp_path / "v", "--dataset", "fashion-mnist", "--out", out,
                     "--train-limit", 256, "--executor", "ray", env={"RAY_ADDRESS": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["id"]: r["status"] for r in datasets.load_from_disk(str(out))}
    assert rows == {"a": "ok", "b": "nan"}


@needs_fashion
def test_with_seed_profiles_the_seed_as_its_familys_reference(tmp_path):
    """`corpus build --with-seed` adds the seed network's own row (id: the seed's label) to a corpus of its
    variants, also to one built without it (only the seed is profiled then): the score and prefer tasks then
    describe the family against the seed, as `search run --strategy scored` does; without it the reference is
    the median-FLOPs variant."""
    import datasets

    from finetune.score import references

    seed = tmp_path / "seed.py"
    seed.write_text(TINY_VGG)
    variants = tmp_path / "variants"
    assert run_module("mutator", "generate", "--seed", seed, "--num", 3, "--out", variants).returncode == 0
    out = tmp_path / "corpus"
    common = ("corpus", "build", "--variants", variants, "--dataset", "fashion-mnist", "--out", out,
              "--train-limit", 256, "--min-steps", 10)
    res = run_module(*common, env={"NASFORGE_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    rows = datasets.load_from_disk(str(out)).to_list()
    assert len(rows) == 3 and [kind for _, kind in references(rows).values()] == ["median"]
    made = run_module("finetune", "dataset", "--task", "score", "--corpus", out, "--out", tmp_path / "s1")
    assert made.returncode == 0 and "warning: 1 family has no row of the seed network" in made.stdout + made.stderr
    res = run_module(*common, "--with-seed", env={"NASFORGE_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 already in the corpus" in res.stdout
    rows = datasets.load_from_disk(str(out)).to_list()
    mine = next(r for r in rows if r["id"] == str(seed))
    manifest = [json.loads(line) for line in (variants / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and mine["status"] == "ok" and mine["code"] == TINY_VGG and mine["parent"] == str(seed)
    assert mine["widths"] == manifest[0]["seed_widths"] and mine["accuracy"] is not None
    [(ref, kind)] = references(rows).values()
    assert kind == "seed" and ref["id"] == str(seed)
    made = run_module("finetune", "dataset", "--task", "score", "--corpus", out, "--out", tmp_path / "s2")
    assert made.returncode == 0 and "(seed " in made.stdout and "warning" not in made.stdout + made.stderr
    seed.unlink()  # the seed is gone (another machine): a one-line error naming the flag
    assert_one_line_error(run_module(*common, "--with-seed", "--out", tmp_path / "c2"), "--with-seed: no such file")
