"""Zero-cost proxies (finite, seeded, known orderings), build --zero-cost-only, the predictor CLI."""
import io
import json
import math
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import TINY_VGG, assert_one_line_error, run_module
from corpus.__main__ import main as corpus_main
from corpus.build import BuildConfig, _lacks, write_dataset
from corpus.zerocost import PROXIES, random_batch, score_source, scores

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")


def cli(*args):
    """`python -m corpus ARGS` in this process (no interpreter start-up): returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = corpus_main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def mlp(width=64, depth=1, act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(16, width), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


class FunctionalRelu(nn.Module):
    """ReLU only through F.relu: module hooks would miss it, the function mode must not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(16, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.b(F.relu(self.a(x.flatten(1))))


FN_RELU = textwrap.dedent("""
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(in_shape[1], 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2)
            self.fc = nn.Linear(16, out_shape[0])

        def forward(self, x):
            return self.fc(F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))
""")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets: one thread is fastest, and far faster than several on a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def batch():
    return random_batch((1, 1, 4, 4), classes=10, batch=64, seed=0)


def test_every_proxy_is_finite_and_deterministic_with_a_seed(batch):
    a = scores(mlp(), *batch, seed=3)
    b = scores(mlp(), *batch, seed=3)
    assert a.pop("zc_seconds") > 0 and b.pop("zc_seconds") > 0
    assert a == b and a["zc_error"] is None
    assert all(isinstance(a[k], float) and math.isfinite(a[k]) for k in PROXIES), a


def test_scoring_leaves_weights_buffers_grads_and_rng_untouched():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    scores(model, *random_batch((1, 1, 4, 4), 10), seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_synflow_grows_with_width_and_depth(batch):
    s = {(w, d): scores(mlp(w, d), *batch)["zc_synflow"] for w, d in [(8, 1), (64, 1), (64, 3)]}
    assert s[(8, 1)] < s[(64, 1)] < s[(64, 3)]


def test_naswot_ranks_more_distinct_activation_codes_higher_and_dead_relus_lowest(batch):
    narrow, wide = scores(mlp(64), *batch)["zc_naswot"], scores(mlp(256), *batch)["zc_naswot"]
    assert narrow < wide
    dead = mlp(256)
    with torch.no_grad():
        dead[1].bias.fill_(-1e3)  # every ReLU off for every sample: one shared code, |K_H| = 0
    s = scores(dead, *batch)
    assert s["zc_naswot"] is None and "K_H is singular" in s["zc_error"]
    assert scores(FunctionalRelu(), *batch)["zc_naswot"] is not None
    s = scores(mlp(64, act=nn.Tanh), *batch)  # no ReLU: no score rather than a made-up one
    assert s["zc_naswot"] is None and "no ReLU" in s["zc_error"]


def test_zeroed_network_scores_zero_snip_grad_norm_grasp(batch):
    model = mlp(64, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    s = scores(model, *batch)
    assert s["zc_snip"] == 0 and s["zc_grad_norm"] == 0 and s["zc_grasp"] == 0
    assert s["zc_synflow"] is None and "synflow" in s["zc_error"]  # ln 0: recorded, not invented


def test_snip_and_grad_norm_rank_a_live_net_above_a_scaled_down_one(batch):
    small = mlp(64)
    with torch.no_grad():
        for p in small.parameters():
            p.mul_(0.01)
    live, tiny = scores(mlp(64), *batch), scores(small, *batch)
    assert live["zc_snip"] > tiny["zc_snip"] and live["zc_grad_norm"] > tiny["zc_grad_norm"]


def test_score_source_builds_lemur_code_and_is_seeded():
    a = score_source(TINY_VGG, (1, 1, 12, 12), 10, batch=8, seed=1)
    b = score_source(TINY_VGG, (1, 1, 12, 12), 10, batch=8, seed=1)
    c = score_source(TINY_VGG, (1, 1, 12, 12), 10, batch=8, seed=2)
    a.pop("zc_seconds"), b.pop("zc_seconds"), c.pop("zc_seconds")
    assert a == b and a != c and a["zc_error"] is None
    assert a["params"] > 0 and a["flops"] > 0 and all(a[k] is not None for k in PROXIES)


def test_resume_needs_what_the_run_asks_for():
    # (journal row mode, run mode) -> profiled again?
    assert not _lacks({}, "off") and _lacks({}, "on") and _lacks({}, "only")
    assert not _lacks({"zero_cost": "on"}, "off") and not _lacks({"zero_cost": "on"}, "only")
    assert _lacks({"zero_cost": "only"}, "off") and _lacks({"zero_cost": "only"}, "on")
    assert not _lacks({"zero_cost": "only"}, "only")


@needs_fashion
def test_build_zero_cost_only_writes_the_columns_in_seconds(tmp_path):
    import datasets

    from test_corpus import BAD, write_variants

    write_variants(tmp_path / "v", {"vgg": TINY_VGG, "fnrelu": FN_RELU, "broken": BAD["build_error"]})
    out = tmp_path / "c"
    args = ["build", "--variants", tmp_path / "v", "--dataset", "fashion-mnist", "--out", out, "--zero-cost-only",
            "--zero-cost-batch", 32]
    res = run_module("corpus", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["id"]: r for r in datasets.load_from_disk(str(out))}
    assert rows["broken"]["status"] == "build_error" and rows["broken"]["zc_synflow"] is None
    for name in ("vgg", "fnrelu"):
        r = rows[name]
        assert r["status"] == "ok" and r["zero_cost"] == "only" and r["accuracy"] is None, r["error"]
        assert r["train_seconds"] is None and r["flops"] > 0 and r["zc_error"] is None
        assert all(math.isfinite(r[k]) for k in PROXIES) and r["zc_seconds"] < 30
    assert "`only` (proxies and no training" in (out / "README.md").read_text()
    res = cli(*args)  # resume: the rows have what the run asks for
    assert res.returncode == 0 and "3 already in the corpus" in res.stdout


@needs_fashion
def test_profile_computes_proxies_only_when_asked():
    from corpus.data import prepare
    from corpus.pipeline import evaluate as profile
    from corpus.train import Recipe
    from test_corpus import BAD

    payload = {"source": BAD["train_error"], "data_path": str(prepare("fashion-mnist")), "classes": 10,
               "recipe": Recipe(train_limit=64, batch_size=32).to_dict()}
    off, on = profile({**payload, "zero_cost": "off"}), profile({**payload, "zero_cost": "on"})
    assert off["status"] == on["status"] == "train_error"
    assert "zc_synflow" not in off and on["zc_synflow"] is not None  # synflow runs in eval mode
    assert "grad_norm" in on["zc_error"]  # the train-mode proxies hit the model's error: recorded


def synthetic_corpus(folder: Path, n=60, zero_cost=True, seed=0):
    """A corpus whose accuracy is a noisy increasing function of zc_snip and unrelated to zc_grasp."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        snip = float(rng.uniform(0, 10))
        row = {"id": f"n{i}", "sha256": f"{i:064x}", "code": "", "status": "ok", "recipe": "{}",
               "accuracy": 0.5 + 0.04 * snip + float(rng.normal(0, 0.02)), "params": int(rng.integers(1e3, 1e5)),
               "flops": int(rng.integers(1e5, 1e7))}
        if zero_cost:
            row.update(zero_cost="on", zc_snip=snip, zc_grasp=float(rng.normal()), zc_synflow=snip + float(rng.normal()),
                       zc_naswot=None if i % 7 == 0 else float(rng.normal()), zc_grad_norm=float(rng.normal()))
        rows.append(row)
    rows.append({"id": "failed", "sha256": "f" * 64, "code": "", "status": "nan", "recipe": "{}"})
    cfg = BuildConfig(variants="", dataset="fashion-mnist", out=str(folder))
    folder.mkdir(parents=True)
    write_dataset(folder, rows, cfg, {}, {})
    return folder


def test_predictor_fit_eval_cli_and_api(tmp_path):
    corpus = synthetic_corpus(tmp_path / "c")
    model = tmp_path / "m" / "pred.joblib"
    res = cli("predictor", "fit", "--corpus", corpus, "--out", model, "--holdout", 0.25)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = {l.split("|")[1].strip(): l for l in res.stdout.splitlines() if l.startswith("| ")}
    assert {"predictor", "zc_snip", "zc_naswot", "zc_grasp", "params", "flops"} <= set(lines)
    rho = lambda name: float(lines[name].split("|")[3])
    assert rho("predictor") > 0.8 and rho("zc_snip") > 0.8 and abs(rho("zc_grasp")) < 0.6
    meta = json.loads(Path(str(model) + ".json").read_text())
    assert meta["n_train"] + meta["n_held_out"] == 60 and "zc_snip" in meta["features"]
    res2 = cli("predictor", "eval", "--corpus", corpus, "--model", model, "--by", "zero_cost")
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert "zero_cost = on" in res2.stdout
    assert res2.stdout.splitlines()[2] == res.stdout.splitlines()[2]  # same held-out rows, same predictor line

    from corpus.predictor import load_predictor

    pred = load_predictor(str(model))
    low, high = pred.predict([{"zc_snip": 1.0, "zc_synflow": 1.0}, {"zc_snip": 9.0, "zc_synflow": 9.0}])
    assert low < high and pred.predict([]) == []


def test_predictor_bad_input_is_one_line_exit_2(tmp_path):
    corpus = synthetic_corpus(tmp_path / "c")
    plain = synthetic_corpus(tmp_path / "plain", zero_cost=False)
    model = tmp_path / "pred.joblib"
    fit = lambda *a: cli("predictor", "fit", "--out", model, *a)
    ev = lambda *a: cli("predictor", "eval", "--corpus", corpus, *a)
    assert_one_line_error(fit("--corpus", plain), "no zero-cost columns")
    assert_one_line_error(fit("--corpus", tmp_path / "nope"), "no such corpus folder")
    assert_one_line_error(fit("--corpus", corpus, "--features", "zc_snip,bogus"), "unknown feature column(s) bogus")
    assert_one_line_error(fit("--corpus", corpus, "--holdout", 1.5), "--holdout must be between 0 and 1")
    assert_one_line_error(ev("--model", tmp_path / "missing.joblib"), "no such model file")
    assert fit("--corpus", corpus).returncode == 0
    model.write_bytes(model.read_bytes()[:100])
    assert_one_line_error(ev("--model", model), "does not match its sidecar")
    Path(str(model) + ".json").write_text("{")
    assert_one_line_error(ev("--model", model), "not a predictor sidecar")
