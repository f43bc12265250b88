"""benchmarks/proxy_fidelity.py (issue 30): the report's statistics from rows with known answers, and its
one-line errors. No training: the rows are synthetic."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pf():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", ROOT / "benchmarks" / "proxy_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("proxy_fidelity", mod)
    spec.loader.exec_module(mod)
    return mod


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
