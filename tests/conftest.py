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
