"""Shape repair, one coupling kind per test: broken source before, repaired source after.

The repair handler runs in-process here (the sources are ours); the CLI tests run it sandboxed.
"""
import json
import textwrap

import pytest
import torch

from mutator.probe import build, load
from mutator.repair import RepairResult, repair_handler
from tests.conftest import assert_one_line_error, run_module

SPEC = {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": None}


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def fix(source, spec=SPEC, parent=None) -> RepairResult:
    out = repair_handler({"source": source, "spec": spec, "parent": parent})
    json.dumps(out)  # the handler's answer crosses the sandbox as JSON
    return RepairResult.from_dict(out, source)


def forward_cpu(source, spec=SPEC):
    model = build(load(source), spec, "cpu").eval()
    with torch.no_grad():
        return tuple(model(torch.randn(*spec["in_shape"])).shape)


def check_pair(before, after, spec=SPEC, parent=None) -> RepairResult:
    res = fix(src(before), spec, parent)
    assert res.status == "repaired", res.reason
    assert res.source == src(after)
    assert forward_cpu(res.source, spec) == (spec["in_shape"][0], spec["classes"])
    return res


HEADER = """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
"""


def test_next_conv_batchnorm_and_linear_follow_a_changed_width():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.c1 = nn.Conv2d(3, 32, 3, padding=1)
            self.b1 = nn.BatchNorm2d(32)
            self.c2 = nn.Conv2d(32, 96, 3, padding=1)  # was 64: the user's change
            self.b2 = nn.BatchNorm2d(64)
            self.c3 = nn.Conv2d(64, 128, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(128 * 2 * 2, num_classes)

        def forward(self, x):
            x = F.relu(self.b1(self.c1(x)))
            x = F.relu(self.b2(self.c2(x)))
            return self.fc(torch.flatten(self.pool(self.c3(x)), 1))
    """
    after = before.replace("nn.BatchNorm2d(64)", "nn.BatchNorm2d(96)").replace(
        "nn.Conv2d(64, 128", "nn.Conv2d(96, 128")
    res = check_pair(before, after)
    assert [str(c) for c in res.changes] == [
        "line 11: 64 -> 96  (b2.num_features 64 -> 96)",
        "line 12: 64 -> 96  (c3.in_channels 64 -> 96)",
    ]


def test_linear_in_features_follows_the_last_conv():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.c1 = nn.Conv2d(3, 40, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.fc = nn.Linear(32 * 4 * 4, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.c1(x)), 1))
    """
    res = check_pair(before, before.replace("nn.Linear(32 * 4 * 4", "nn.Linear(40 * 4 * 4"))
    assert res.changes[0].feeds == "fc.in_features 512 -> 640"


def test_residual_block_both_sides_follow_the_changed_side():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 3, padding=1)
            self.bn0 = nn.BatchNorm2d(32)
            self.conv = nn.Conv2d(32, 48, 3, padding=1)
            self.bn = nn.BatchNorm2d(32)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x):
            x = F.relu(self.bn0(self.stem(x)))
            x = F.relu(x + self.bn(self.conv(x)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
    """
    after = before.replace("(3, 32, 3", "(3, 48, 3").replace("BatchNorm2d(32)", "BatchNorm2d(48)").replace(
        "Conv2d(32, 48", "Conv2d(48, 48").replace("Linear(32", "Linear(48")
    res = check_pair(before, after)
    assert "stem.out_channels 32 -> 48" in {c.feeds for c in res.changes}
    assert all(c.line != 10 or c.col != 32 for c in res.changes)  # the user's 48 is never touched


def test_lenet_view_and_linear_follow_conv2():
    before = HEADER + """
    class LeNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 24, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 5 * 5)
            x = F.relu(self.fc1(x))
            return self.fc3(F.relu(self.fc2(x)))
    """
    res = check_pair(before, before.replace("16 * 5 * 5", "24 * 5 * 5"))
    assert [str(c) for c in res.changes] == [
        "line 11: 16 -> 24  (fc1.in_features 400 -> 600)",
        "line 18: 16 -> 24  (forward: x = x.view(-1, 16 * 5 * 5))",
    ]


def test_small_widths_are_repaired_too():
    before = HEADER + """
    class LeNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(self.conv2(self.conv1(x)), 1)
            return self.fc(torch.flatten(x, 1))
    """
    check_pair(before, before.replace("Conv2d(6, 16", "Conv2d(8, 16"))


def test_parent_names_the_users_widths():
    parent = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.a = nn.Conv2d(3, 32, 3, padding=1)
            self.b = nn.Conv2d(32, 32, 3, padding=1)
            self.c = nn.Conv2d(32, 32, 3, padding=1)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x):
            x = self.a(x)
            x = x + self.b(x)
            x = x + self.c(x)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
    """
    # an edit that changed most of the 32s and forgot two: without the parent the rarer value
    # (32) would look like the edit; with it, the 64s are the user's
    before = parent.replace("(3, 32, 3", "(3, 64, 3").replace("Conv2d(32, 32", "Conv2d(64, 64")
    before = before.replace("self.c = nn.Conv2d(64, 64", "self.c = nn.Conv2d(64, 32")
    after = before.replace("self.c = nn.Conv2d(64, 32", "self.c = nn.Conv2d(64, 64").replace(
        "Linear(32", "Linear(64")
    check_pair(before, after, parent=src(parent))


def test_already_fine_is_unchanged():
    source = src(HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.c = nn.Conv2d(3, 16, 3)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c(x), 1), 1))
    """)
    res = fix(source)
    assert (res.status, res.source, res.changes) == ("unchanged", source, ())


UNREPAIRABLE = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.c1 = nn.Conv2d(3, 48, 3)
            self.c2 = nn.Conv2d(int("32"), 16, 3)  # no integer literal to solve
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(self.c2(self.c1(x)), 1)
            return self.fc(torch.flatten(x, 1))
"""


@pytest.mark.parametrize("source, reason", [
    (UNREPAIRABLE, "c2.in_channels gets 48 channels, and no literal sets it"),
    (UNREPAIRABLE.replace("super().__init__()", "super().__init__()\n            raise ValueError('not today')"),
     "does not build: ValueError (line 8): not today"),
], ids=["no-literal", "does-not-build"])
def test_unrepairable_fails_with_a_reason(source, reason):
    source = src(source)
    res = fix(source)
    assert res.status == "failed" and res.source == source and not res.changes
    assert res.reason == reason


def test_syntax_error_and_sandbox_failures_are_failed_records():
    res = fix("def broken(:\n")
    assert res.status == "failed" and res.reason.startswith("syntax error")
    res = RepairResult.from_dict({"status": "timeout", "error": "took longer than 5 s"}, "x = 1\n")
    assert (res.status, res.reason) == ("failed", "repair timeout: took longer than 5 s")


# -- the command, sandboxed -------------------------------------------------------------------------

LENET_BROKEN = src("""
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 32, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(-1, 16 * 5 * 5))))
""")


def test_cli_repairs_and_writes_the_file(tmp_path):
    (tmp_path / "broken.py").write_text(LENET_BROKEN)
    res = run_module("mutator", "repair", tmp_path / "broken.py", "--out", tmp_path / "fixed.py")
    assert res.returncode == 0, res.stderr[-2000:]
    fixed = (tmp_path / "fixed.py").read_text()
    assert fixed == LENET_BROKEN.replace("16 * 5 * 5", "32 * 5 * 5")
    assert ": 16 -> 32  (fc1.in_features 400 -> 800)" in res.stdout
    assert forward_cpu(fixed) == (1, 10)
    # an already fine file is written unchanged
    res = run_module("mutator", "repair", tmp_path / "fixed.py", "--out", tmp_path / "again.py")
    assert res.returncode == 0 and "nothing changed" in res.stdout
    assert (tmp_path / "again.py").read_text() == fixed


def test_cli_exit_2_with_one_line_errors(tmp_path):
    out = tmp_path / "out.py"
    res = run_module("mutator", "repair", tmp_path / "missing.py", "--out", out)
    assert_one_line_error(res, "no such file")
    (tmp_path / "syntax.py").write_text("class Net(:\n")
    assert_one_line_error(run_module("mutator", "repair", tmp_path / "syntax.py", "--out", out), "syntax error")
    (tmp_path / "plain.py").write_text("import torch\nx = 1\n")
    assert_one_line_error(run_module("mutator", "repair", tmp_path / "plain.py", "--out", out),
                          "no nn.Module class")
    (tmp_path / "nofix.py").write_text(LENET_BROKEN.replace("nn.Linear(16 * 5 * 5, 120)", "None"))
    assert_one_line_error(run_module("mutator", "repair", tmp_path / "nofix.py", "--out", out), "no repair")
    assert not out.exists()
