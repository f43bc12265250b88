"""Built-in seed networks (LEMUR format), by name."""
from pathlib import Path

SEEDS: dict[str, str] = {
    "vgg-small": "vgg_small.py",
    "resnet-small": "resnet_small.py",
    "mobilenetv2-small": "mobilenetv2_small.py",
    "densenet-small": "densenet_small.py",
    "resnet18": "resnet18.py",
    "lenet": "lenet.py",
    "cbm-resnet": "cbm_resnet.py",
    "cbm-mobilenet": "cbm_mobilenet.py",
}
DEFAULT_SEED = "resnet-small"


def seed_path(name: str) -> Path:
    if name not in SEEDS:
        raise KeyError(f"unknown seed {name!r} (known: {', '.join(SEEDS)})")
    return Path(__file__).with_name(SEEDS[name])


def seed_source(name: str) -> str:
    return seed_path(name).read_text()
