"""The built-in seed zoo: every seed builds, runs forward at 1x28x28 and 3x32x32, builds on the meta
device, and has a plausible size; the two Channel-Bench-Macro seeds reproduce the table's `params`
and conv + linear `flops` exactly for sampled width configurations.
"""
import json
import random
import re
import types

import pytest
import torch

from mutator import seeds

PRM = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2}

# Parameter count at 3x32x32 input and 10 classes: (low, high).
PARAM_RANGES = {
    "vgg-small": (100_000, 250_000),
    "resnet-small": (60_000, 120_000),
    "mobilenetv2-small": (50_000, 250_000),
    "densenet-small": (50_000, 200_000),
    "resnet18": (11_000_000, 11_400_000),
    "lenet": (30_000, 80_000),
    "cbm-resnet": (3_844_234, 3_844_234),  # the table's params at key 2222222
    "cbm-mobilenet": (467_914, 467_914),  # the table's params at key 2222222
}

# Channel-Bench-Macro: the four choices of each of the seven widths.
CBM_CHOICES = {
    "resnet": [[64, 128, 192, 256]] * 3 + [[128, 256, 384, 512]] * 4,
    "mobilenet": [[32, 64, 96, 128]] + [[192, 384, 576, 768]] * 3
    + [[64, 128, 192, 256], [384, 768, 1152, 1536], [256, 512, 768, 1024]],
}
WIDTHS_LINE = re.compile(r"^WIDTHS = \[[^\]]*\]$", re.M)


def load_source(source: str, name: str = "seed") -> types.ModuleType:
    mod = types.ModuleType(f"nasforge_test_seed_{name}")
    exec(compile(source, f"<seed:{name}>", "exec"), mod.__dict__)
    return mod


def build(mod, in_shape, classes=10, device="cpu"):
    dev = torch.device(device)
    with torch.device(dev):
        return mod.Net(in_shape, (classes,), dict(PRM), dev)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def with_widths(source: str, widths) -> str:
    """The source with its module-level `WIDTHS = [...]` list set to `widths`."""
    new, n = WIDTHS_LINE.subn(f"WIDTHS = {[int(w) for w in widths]}", source, count=1)
    assert n == 1, "no `WIDTHS = [...]` line in the seed"
    return new


def test_registry():
    assert seeds.DEFAULT_SEED in seeds.SEEDS
    for name in seeds.SEEDS:
        assert seeds.seed_path(name).is_file()
        assert "class Net(nn.Module)" in seeds.seed_source(name)
    with pytest.raises(KeyError, match="resnet-small"):
        seeds.seed_path("no-such-seed")


@pytest.mark.parametrize("name", list(seeds.SEEDS))
def test_seed_builds_and_runs(name):
    torch.manual_seed(0)
    mod = load_source(seeds.seed_source(name), name)
    assert {"lr", "momentum"} <= set(mod.supported_hyperparameters())
    for shape in [(2, 1, 28, 28), (2, 3, 32, 32)]:
        model = build(mod, shape)
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(shape))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all()
    low, high = PARAM_RANGES[name]
    assert low <= n_params(model) <= high, n_params(model)

    with torch.device("meta"):
        meta = build(mod, (2, 3, 32, 32), device="meta")
        out = meta(torch.empty(2, 3, 32, 32))
    assert out.shape == (2, 10) and out.is_meta
    assert n_params(meta) == n_params(model)


@pytest.mark.parametrize("name", ["vgg-small", "lenet"])
def test_seed_learns_one_step(name):
    torch.manual_seed(0)
    mod = load_source(seeds.seed_source(name), name)
    model = build(mod, (4, 1, 28, 28))
    model.train_setup(PRM)
    before = [p.detach().clone() for p in model.parameters()]
    model.learn([(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def conv_linear_flops(model) -> int:
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, 16, 16))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    return int(sum(v for k, v in fa.by_operator().items() if k in ("conv", "linear", "addmm")))


@pytest.mark.parametrize("space", ["resnet", "mobilenet"])
def test_cbm_matches_table(space):
    from conftest import real_cbm_dir

    table_file = real_cbm_dir() / f"{space}.json"  # the published table: its FLOPs are checked too
    pytest.importorskip("fvcore")
    table = json.loads(table_file.read_text())
    source = seeds.seed_source(f"cbm-{space}")
    choices = CBM_CHOICES[space]
    keys = random.Random(0).sample(sorted(table), 10)
    for key in keys:
        widths = [choices[i][int(d) - 1] for i, d in enumerate(key)]
        mod = load_source(with_widths(source, widths), f"cbm-{space}-{key}")
        with torch.device("meta"):
            meta = build(mod, (1, 3, 16, 16), device="meta")
        assert n_params(meta) == table[key]["params"], key
        assert conv_linear_flops(build(mod, (1, 3, 16, 16))) == table[key]["flops"], key


@pytest.mark.parametrize("space, best", [("resnet", "2222222"), ("mobilenet", "2222222")])
def test_cbm_seed_is_the_middle_key(space, best):
    source = seeds.seed_source(f"cbm-{space}")
    m = WIDTHS_LINE.search(source)
    assert m, "no `WIDTHS = [...]` line"
    widths = [int(v) for v in re.findall(r"\d+", m.group(0))]
    assert widths == [CBM_CHOICES[space][i][int(d) - 1] for i, d in enumerate(best)]
    # each width is exactly one integer literal in the file: the couplings are computed in code
    libcst = pytest.importorskip("libcst")
    ints = []

    class Ints(libcst.CSTVisitor):
        def visit_Integer(self, node):
            ints.append(int(node.value, 0))

    libcst.parse_module(source).visit(Ints())
    for w in set(widths):
        assert ints.count(w) == widths.count(w), w
