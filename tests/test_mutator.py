"""Width analysis and repair, one coupling kind per test: source before, widths, source after.

The analysis runs in-process here (the sources are ours); the CLI tests run it sandboxed.
"""
import textwrap

import pytest
import torch

from mutator.analysis import AnalysisError, Analyzer, Realizer
from mutator.probe import build, load

SPEC = {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": None}


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def analyze(source, spec=SPEC, divisor=8):
    return Analyzer(source, spec, divisor).run()


def apply(source, widths, spec=SPEC):
    a = analyze(source, spec)
    out = Realizer(source, spec, a).variant(widths)
    assert out["status"] == "ok", out.get("error")
    return out["source"]


def forward_cpu(source, spec=SPEC):
    model = build(load(source), spec, "cpu").eval()
    with torch.no_grad():
        y = model(torch.randn(*spec["in_shape"]))
    return tuple(y.shape)


def check_pair(before, widths, after, spec=SPEC):
    got = apply(src(before), widths, spec)
    assert got == src(after)
    assert forward_cpu(got, spec) == (spec["in_shape"][0], spec["classes"])


HEADER = """
    import torch
    import torch.nn as nn
"""


def test_conv_bn_linear_flatten_and_forward_literal():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.c1 = nn.Conv2d(3, 32, 3, padding=1)  # keep this comment
            self.b1 = nn.BatchNorm2d(32)
            self.c2 = nn.Conv2d(32, 64, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.fc1 = nn.Linear(64 * 4 * 4, 128)
            self.fc2 = nn.Linear(128, num_classes)

        def forward(self, x):
            x = self.pool(self.c2(torch.relu(self.b1(self.c1(x)))))
            x = x.view(-1, 64 * 4 * 4)
            return self.fc2(torch.relu(self.fc1(x)))
    """
    after = before.replace("Conv2d(3, 32", "Conv2d(3, 48").replace("BatchNorm2d(32)", "BatchNorm2d(48)") \
        .replace("Conv2d(32, 64", "Conv2d(48, 24").replace("64 * 4 * 4", "24 * 4 * 4") \
        .replace("Linear(24 * 4 * 4, 128)", "Linear(24 * 4 * 4, 16)").replace("Linear(128,", "Linear(16,")
    a = analyze(src(before))
    assert a["seed_widths"] == [32, 64, 128]
    # the 64 in forward's view() is coupled with c2's width and changes with it
    assert len(a["groups"][1]["literals"]) == 2
    check_pair(before, [48, 24, 16], after)


def test_residual_addition_couples_both_sides():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 3, padding=1)
            self.conv1 = nn.Conv2d(32, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.conv2(torch.relu(self.conv1(x)))
            return self.head(x.mean((2, 3)))
    """
    a = analyze(src(before))
    assert [g["value"] for g in a["groups"]] == [32, 16]
    assert len(a["groups"][0]["literals"]) == 2  # stem and conv2 outputs move together
    after = before.replace("Conv2d(3, 32", "Conv2d(3, 40").replace("Conv2d(32, 16", "Conv2d(40, 56") \
        .replace("Conv2d(16, 32", "Conv2d(56, 40").replace("Linear(32,", "Linear(40,")
    check_pair(before, [40, 56], after)


def test_concatenation_sums_parts():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 1)
            self.b = nn.Conv2d(3, 24, 3, padding=1)
            self.merge = nn.Conv2d(40, 32, 1)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            x = torch.cat([self.a(x), self.b(x)], dim=1)
            return self.head(self.merge(x).mean((2, 3)))
    """
    after = before.replace("Conv2d(3, 16", "Conv2d(3, 8").replace("Conv2d(3, 24", "Conv2d(3, 48") \
        .replace("Conv2d(40, 32", "Conv2d(56, 32")
    check_pair(before, [8, 48, 32], after)


def test_depthwise_keeps_groups_equal_to_channels():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.expand = nn.Conv2d(3, 32, 1, bias=False)
            self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
            self.bn = nn.BatchNorm2d(32)
            self.project = nn.Conv2d(32, 16, 1)
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.bn(self.dw(self.expand(x)))
            return self.head(self.project(x).mean((2, 3)))
    """
    a = analyze(src(before))
    assert a["seed_widths"] == [32, 16]  # the depthwise conv follows, it is not a width
    after = before.replace("Conv2d(3, 32", "Conv2d(3, 72") \
        .replace("Conv2d(32, 32, 3, padding=1, groups=32", "Conv2d(72, 72, 3, padding=1, groups=72") \
        .replace("BatchNorm2d(32)", "BatchNorm2d(72)").replace("Conv2d(32, 16", "Conv2d(72, 16")
    check_pair(before, [72, 16], after)


def test_groupnorm_groups_must_divide():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 3, padding=1)
            self.gn = nn.GroupNorm(16, 32)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.head(self.gn(self.conv(x)).mean((2, 3)))
    """
    a = analyze(src(before))
    assert a["groups"][0]["multiple"] == 16  # 16 groups: widths stay multiples of 16
    gn_line = src(before).splitlines().index("        self.gn = nn.GroupNorm(16, 32)") + 1
    lits = {l["value"]: l for l in a["literals"] if l["line"] == gn_line}
    assert lits[16]["kind"] == "other"  # the group count is not a width
    check_pair(before, [48], before.replace("Conv2d(3, 32", "Conv2d(3, 48")
               .replace("GroupNorm(16, 32)", "GroupNorm(16, 48)").replace("Linear(32,", "Linear(48,"))


def test_grouped_conv_width_multiple():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 64, 3, padding=1)
            self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=32)
            self.head = nn.Linear(64, num_classes)

        def forward(self, x):
            return self.head(self.grouped(self.conv(x)).mean((2, 3)))
    """
    a = analyze(src(before))
    assert [g["multiple"] for g in a["groups"]] == [32, 32]
    check_pair(before, [96, 32], before.replace("Conv2d(3, 64", "Conv2d(3, 96")
               .replace("Conv2d(64, 64, 3, padding=1, groups=32)", "Conv2d(96, 32, 3, padding=1, groups=32)")
               .replace("Linear(64,", "Linear(32,"))


def test_computed_widths_edit_the_source_literal():
    before = HEADER + """
    class Block(nn.Module):
        expansion = 2

        def __init__(self, in_planes, planes):
            super().__init__()
            self.conv = nn.Conv2d(in_planes, planes * self.expansion, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.in_planes = 16
            self.stem = nn.Conv2d(3, self.in_planes, 3, padding=1)
            layers = []
            for planes in [16, 32]:
                layers.append(Block(self.in_planes, planes))
                self.in_planes = planes * Block.expansion
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(32 * Block.expansion, num_classes)

        def forward(self, x):
            return self.fc(self.layers(self.stem(x)).mean((2, 3)))
    """
    a = analyze(src(before))
    assert a["seed_widths"] == [16, 16, 32]
    fc = [l for l in a["literals"] if l["kind"] == "dependent"]
    assert [l["value"] for l in fc] == [32] and fc[0]["drives"][0][3] == "2"  # slope of 32 * expansion
    after = before.replace("self.in_planes = 16", "self.in_planes = 24").replace("[16, 32]", "[8, 40]") \
        .replace("Linear(32 * Block", "Linear(40 * Block")
    check_pair(before, [24, 8, 40], after)


def test_classes_input_channels_kernels_and_layer_counts_are_not_widths():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 9, padding=4)
            self.blocks = nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(8)])
            self.pool = nn.AvgPool2d(16)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.pool(self.blocks(self.conv(x))).mean((2, 3)))
    """
    a = analyze(src(before))
    reasons = {l["value"]: l["reason"] for l in a["literals"] if l["kind"] == "other"}
    assert reasons[3] == "below the divisor 8"
    assert reasons[9] == "sets kernel_size of conv"
    assert reasons[8] == "sets a number of layers"
    assert reasons[16] == "sets kernel_size of pool"
    assert reasons[10] == "sets the number of classes"
    assert a["seed_widths"] == [32]  # the block convs and the stem share one width through the literals
    assert forward_cpu(apply(src(before), [16])) == (1, 10)


def test_broken_seed_is_reported():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 3)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))
    """
    with pytest.raises(AnalysisError, match="fc.in_features expects 16 but gets 32"):
        analyze(src(before))


def test_out_of_range_and_inconsistent_widths_are_refused():
    before = HEADER + """
    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 3)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))
    """
    a = analyze(src(before))
    r = Realizer(src(before), SPEC, a)
    assert r.variant([1, 2])["status"] == "invalid"
    assert r.variant([0])["status"] == "invalid"
