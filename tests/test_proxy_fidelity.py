"""benchmarks/proxy_fidelity.py (issue 30): the report's statistics from rows with known answers, and its
one-line errors. No training: the rows are synthetic."""
import json
import sys

import pytest
from benchmark_module import load_benchmark


@pytest.fixture(scope="module")
def pf():
    return load_benchmark("proxy_fidelity")


def rows(noise: dict, n: int = 12, seeds=(0, 1, 2)) -> dict:
    """n networks whose reference accuracy rises with the index; proxy = reference - 10 points + noise[tag]
    alternating in sign with the seed (std over 3 seeds known exactly)."""
    out = {}
    for i in range(n):
        ref = 0.80 + 0.005 * i
        out[("fam", f"n{i}", "reference", 0, "reference")] = {"status": "ok", "accuracy": ref, "train_seconds": 10.0}
        for tag, eps in noise.items():
            for s in seeds:
                out[("fam", f"n{i}", "proxy", s, tag)] = {"status": "ok", "accuracy": ref - 0.10 + eps * (s - 1),
                                                          "train_seconds": 1.0 if tag == "default" else 2.0}
    return out


def test_a_noiseless_proxy_ranks_as_the_reference_and_noise_is_its_std(pf):
    table = {r["tag"]: r for r in pf.stats(rows({"default": 0.0, "noisy": 0.01}), [0, 1, 2])}
    d, n = table["default"], table["noisy"]
    assert d["networks"] == n["networks"] == 12 and d["failed"] == 0
    assert d["tau_one"] == pytest.approx(1.0) and d["rho_one"] == pytest.approx(1.0) and d["top_one"] == 1.0
    assert d["std_median"] == pytest.approx(0.0)
    assert n["std_median"] == pytest.approx(1.0)  # +-0.01 around the mean: std 1 point (ddof 1)
    assert n["tau_mean"] == pytest.approx(1.0)  # the mean of the seeds cancels this noise exactly
    assert d["proxy_s"] == 1.0 and n["proxy_s"] == 2.0 and d["ref_s"] == 10.0


def test_a_failed_or_missing_run_leaves_its_network_out(pf):
    r = rows({"default": 0.0})
    r[("fam", "n0", "proxy", 1, "default")] = {"status": "timeout", "accuracy": None, "train_seconds": None}
    del r[("fam", "n1", "proxy", 2, "default")]
    (row,) = pf.stats(r, [0, 1, 2])
    assert row["networks"] == 10 and row["failed"] == 1


def test_cost_names_an_unmeasured_recipe_in_one_line(pf, tmp_path, monkeypatch, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "fashion-mnist", "proxies": {"default": {}}}))
    monkeypatch.setattr(sys, "argv", ["proxy_fidelity.py", "--out", str(tmp_path), "--cost", "1", "--tags", "steps300"])
    assert pf.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tags: steps300 not measured in") and "\n" not in err
    monkeypatch.setattr(sys, "argv", ["proxy_fidelity.py", "--out", str(tmp_path / "none"), "--cost", "1"])
    assert pf.main() == 2
    assert "holds no config.json" in capsys.readouterr().err


def test_the_decision_applies_the_protocols_rules(pf):
    base = {"lr": 0.1, "batch_size": 0, "min_steps": 150}
    cfg = {"proxies": {"default": base, "quiet": {**base, "batch_size": 32, "ema": 0.0},
                       "costly": {**base, "min_steps": 600}, "fast": {**base, "channels_last": True, "ema": 0.0},
                       "fastbad": {**base, "bf16": True}}}
    r = rows({"default": 0.01, "quiet": 0.005, "costly": 0.005, "fast": 0.011, "fastbad": 0.02}, n=21)
    costs = {"fam": {"quiet": {"vs_default": 1.3}, "costly": {"vs_default": 3.9}}}
    got = {d["tag"]: d for d in pf.decide(r, cfg, [0, 1, 2], costs)}
    assert got["quiet"]["rule"] == "noise cut" and got["quiet"]["verdict"] == "passes"
    assert got["costly"]["verdict"] == "fails" and "cost 3.90x > 1.5x" in got["costly"]["why"][0]
    assert got["fast"]["rule"] == "CPU option (no-worse)" and got["fast"]["verdict"] == "passes"  # +0.1 std: within 0.2
    assert got["fastbad"]["verdict"] == "fails" and "std 2.00 > 1.00 + 0.2" in got["fastbad"]["why"][0]
    # without a side-by-side cost a noise cut is undecided; a CPU option on fewer than 20 networks too
    assert {d["tag"]: d["verdict"] for d in pf.decide(r, cfg, [0, 1, 2], {})}["quiet"] == "undecided"
    few = rows({"default": 0.01, "fast": 0.011}, n=12)
    (d,) = [d for d in pf.decide(few, {"proxies": {k: cfg["proxies"][k] for k in ("default", "fast")}}, [0, 1, 2], {})]
    assert d["verdict"] == "undecided" and "no family with >= 20 complete networks" in d["why"]
    assert "**passes**" in pf.decision_text(list(got.values()))
    # a family the recipe has not reached yet is said
    other = {("other",) + k[1:]: v for k, v in rows({"default": 0.01}).items()}
    (q,) = [d for d in pf.decide({**r, **other}, {"proxies": {k: cfg["proxies"][k] for k in ("default", "quiet")}},
                                 [0, 1, 2], costs)]
    assert q["verdict"] == "passes where measured, not measured on other"


def test_a_recipe_plus_cpu_options_is_judged_against_that_recipe(pf):
    base = {"lr": 0.1, "batch_size": 0, "min_steps": 150}
    quiet = {**base, "batch_size": 32, "min_steps": 300}
    cfg = {"proxies": {"default": base, "quiet": quiet, "quietfast": {**quiet, "channels_last": True, "bf16": True},
                       "quietbad": {**quiet, "bf16": True}}}
    # the default's std is 2 points: against it both would pass; against `quiet` (0.5) only quietfast does
    r = rows({"default": 0.02, "quiet": 0.005, "quietfast": 0.006, "quietbad": 0.008}, n=21)
    got = {d["tag"]: d for d in pf.decide(r, cfg, [0, 1, 2], {})}
    assert got["quiet"]["against"] == "default" and got["quiet"]["rule"] == "noise cut"
    assert got["quietfast"]["against"] == "quiet" and got["quietfast"]["rule"] == "CPU option (no-worse)"
    assert got["quietfast"]["verdict"] == "passes" and got["quietfast"]["families"]["fam"]["std_default"] == \
        pytest.approx(0.5)
    assert got["quietbad"]["verdict"] == "fails" and "std 0.80 > 0.50 + 0.2" in got["quietbad"]["why"][0]
    assert "| quietfast | CPU option (no-worse) | quiet | fam |" in pf.decision_text(list(got.values()))
    # over one seed there is no std: no family is judged, nothing crashes (a `--seeds 2` command's last report)
    assert all(d["verdict"] == "undecided" for d in pf.decide(r, cfg, [0], {}))
