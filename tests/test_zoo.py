"""Published-style CNN files (our own code, written in the styles of torchvision, pytorch-cifar and
LEMUR; see each file's docstring): every one must give at least 5 distinct valid variants."""
import json
import random
from pathlib import Path

import pytest
import torch

from mutator.analysis import Analyzer, Realizer
from mutator.generate import GenerateConfig, sample_widths
from mutator.probe import build, load

ZOO = Path(__file__).parent / "fixtures" / "zoo"
ENTRIES = json.loads((ZOO / "index.json").read_text())


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['file']}:{e['class_name']}" for e in ENTRIES])
def test_zoo_file_gives_five_valid_variants(entry):
    source = (ZOO / entry["file"]).read_text()
    spec = {"in_shape": entry["in_shape"], "classes": entry["classes"], "class_name": entry["class_name"]}
    analysis = Analyzer(source, spec).run()
    assert analysis["groups"], analysis["frozen"]
    realizer = Realizer(source, spec, analysis)
    rng = random.Random(0)
    cfg = GenerateConfig()
    seen, written = {tuple(analysis["seed_widths"])}, []
    for _ in range(40):
        w = tuple(sample_widths(rng, analysis["groups"], cfg))
        if w in seen:
            continue
        seen.add(w)
        out = realizer.variant(list(w))
        if out["status"] == "ok":
            written.append(out["source"])
        if len(written) == 5:
            break
    assert len(written) == 5
    # every written variant really runs on the CPU at the declared shape
    model = build(load(written[-1]), spec, "cpu").eval()
    with torch.no_grad():
        y = model(torch.randn(*entry["in_shape"]))
    assert tuple(y.shape) == (entry["in_shape"][0], entry["classes"])
