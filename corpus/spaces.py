"""The Channel-Bench-Macro search spaces (Su et al., ICLR 2021): 7 width slots with 4 choices each.

A configuration's key is one digit per slot, the 1-based index of its width among the slot's
choices ("2222222" is the middle configuration each space's seed starts from).
"""
from __future__ import annotations

SPACES = {
    "cbm-resnet": {"file": "resnet.json", "seed": "cbm-resnet",
                   "choices": [[64, 128, 192, 256]] * 3 + [[128, 256, 384, 512]] * 4},
    "cbm-mobilenet": {"file": "mobilenet.json", "seed": "cbm-mobilenet",
                      "choices": [[32, 64, 96, 128], [192, 384, 576, 768], [192, 384, 576, 768],
                                  [192, 384, 576, 768], [64, 128, 192, 256], [384, 768, 1152, 1536],
                                  [256, 512, 768, 1024]]},
}
SPEC = {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": None}


def key_of(widths: list[int], space: str) -> str:
    return "".join(str(SPACES[space]["choices"][i].index(w) + 1) for i, w in enumerate(widths))


def widths_of(key: str, space: str) -> list[int]:
    return [SPACES[space]["choices"][i][int(c) - 1] for i, c in enumerate(key)]
