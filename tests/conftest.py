import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_VGG = textwrap.dedent("""
    import torch.nn as nn


    def supported_hyperparameters():
        return {'lr', 'momentum'}


    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.device = device
            self.features = nn.Sequential(
                nn.Conv2d(in_shape[1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.fc = nn.Linear(32, out_shape[0])  # classifier

        def forward(self, x):
            return self.fc(self.features(x))
""")


def run_module(module, *args, timeout=900, env=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=e)


def assert_one_line_error(res, needle):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [l for l in res.stderr.splitlines() if l.strip() and not l.startswith(("config:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in res.stderr


@pytest.fixture
def tiny_seed(tmp_path):
    p = tmp_path / "tiny_vgg.py"
    p.write_text(TINY_VGG)
    return p


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for test servers)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_cbm_tables(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """Small tables in Channel-Bench-Macro's published format (`{key: {"acc": [3 seeds], "mean", "std",
    "flops", "params"}}`), one per space, as `NASFORGE_CBM_DIR` holds them (`resnet.json`,
    `mobilenet.json`): the seeds' configuration 2222222 plus `n` random keys. `params` are real (each
    space's seed built at the key's widths on the meta device: the table evaluator checks them);
    accuracies are synthetic (distinct, growing with the widths) and `flops` a stand-in (256 x params),
    enough to test lookups, ranks and comparisons without the 16,384-entry files."""
    import hashlib
    import json
    import random
    import re

    import torch

    from corpus.spaces import SPACES, widths_of
    from mutator.probe import build, load
    from mutator.seeds import seed_source

    folder.mkdir(parents=True, exist_ok=True)
    for space, info in SPACES.items():
        rng = random.Random(seed)
        keys = {"2222222"} | {"".join(rng.choice("1234") for _ in info["choices"]) for _ in range(n)}
        table = {}
        for key in sorted(keys):
            src = re.sub(r"^WIDTHS = \[[^\]]*\]$", f"WIDTHS = {widths_of(key, space)}", seed_source(info["seed"]),
                         count=1, flags=re.M)
            model = build(load(src), {"in_shape": [1, 3, 32, 32], "classes": 10}, "meta")
            params = sum(p.numel() for p in model.parameters())
            jitter = int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) / 16 ** 6  # distinct means
            mean = 85 + sum(map(int, key)) / 4 + jitter / 10
            acc = [mean - 0.1, mean, mean + 0.1]
            table[key] = {"acc": acc, "mean": mean, "std": float(torch.tensor(acc).std()), "flops": 256 * params,
                          "params": params}
        (folder / info["file"]).write_text(json.dumps(table))
    return folder


@pytest.fixture(scope="session")
def tiny_cbm_dir(tmp_path_factory) -> Path:
    return write_cbm_tables(tmp_path_factory.mktemp("cbm"))


def real_cbm_dir() -> Path:
    """The published tables (`NASFORGE_CBM_DIR`, else where `corpus.table` looks); skips without them."""
    from corpus.table import TableError, table_path

    try:
        return table_path("cbm-resnet").parent
    except TableError as exc:
        pytest.skip(f"real Channel-Bench-Macro tables: {exc}")


@pytest.fixture(scope="module", params=["tiny", "real"])
def cbm_dir(request, tiny_cbm_dir) -> Path:
    """Each table test runs on the small built table, and on the published one where it is present."""
    return tiny_cbm_dir if request.param == "tiny" else real_cbm_dir()
