"""The prompts, training answers, grammar request fields and token budgets of every answer format on
fixed inputs: tests/test_prompt_golden.py compares them with tests/fixtures/prompts_by_format.json
(written from the code before the formats became a registry; a tuned adapter was trained on them)."""
from types import SimpleNamespace

from finetune.formats import WidthSlot, diff_text

SOURCE = ("import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
          "        self.conv1 = nn.Conv2d(1, 16, 3)\n        self.conv2 = nn.Conv2d(16, 32, 3)\n"
          "        self.fc = nn.Linear(32, 10)\n\n    def forward(self, x):\n        x = self.conv2(self.conv1(x))\n"
          "        return self.fc(x.mean((2, 3)))\n")
TARGET = SOURCE.replace("nn.Conv2d(1, 16, 3)", "nn.Conv2d(1, 24, 3)").replace("nn.Conv2d(16, 32", "nn.Conv2d(24, 32")
ROW = {"id": "r0", "dataset": "fashion-mnist", "accuracy": 0.8123, "flops": 123456, "params": 7890,
       "latency_ms": 0.42, "widths": [16, 32], "status": "ok", "code": SOURCE}
TGT = {**ROW, "id": "r1", "accuracy": 0.83, "widths": [24, 32], "code": TARGET}
TRIED = [{**ROW, "id": "r2", "accuracy": 0.79, "widths": [8, 32]}]
GOALS = [{"kind": "raise_accuracy"}, {"kind": "accuracy_under_flops", "max_flops": 200000.0}]
SLOTS = (WidthSlot("w0", 16, (8, 16, 24, 32), ("conv1",), ("conv3x3",)),
         WidthSlot("w1", 32, (16, 32, 48, 64), ("conv2",), ("conv3x3",)))
SUMMARY = "layers, channels in->out (wN: width slot):\nconv1 conv3x3: 1->w0\nconv2 conv3x3: w0->w1\nfc linear: w1->10"
KINDS = ("llama.cpp", "llama-cpp-python", "vllm", "vllm-legacy", "ollama", "unknown")


class _Memory:
    items = [SimpleNamespace(widths=(8, 32), outcome="accuracy 0.79 (-0.02)"), SimpleNamespace(widths=None, outcome="x")]

    def render(self):
        return "- PROBLEM: too narrow; MODIFICATION: widen conv1; OUTCOME: accuracy 0.79"


def cases() -> dict:
    from finetune.evaluate import answer_budget
    from finetune.formats import prompt_messages
    from finetune.pairs import example
    from search.constrain import request_fields
    from search.roles import CodeGenerator

    out = {}
    for g, goal in enumerate(GOALS):
        for fmt, ctx in (("widths", "source"), ("widths", "summary"), ("diff", "source"), ("code", "source")):
            for h, (history, notes) in enumerate((((), ""), ([((8, 32), "accuracy 0.79")], "Suggested change: widen\n"))):
                out[f"prompt/{fmt}/{ctx}/goal{g}/h{h}"] = prompt_messages(
                    fmt, ctx, SOURCE, ROW, goal, slots=SLOTS, summary=SUMMARY, history=history, notes=notes)
            net = SimpleNamespace(ok=True, status="ok", slots=SLOTS, summary=SUMMARY)
            msgs, why = example(fmt, ctx, ROW, TGT, goal, net, TRIED if fmt == "widths" else [])
            out[f"example/{fmt}/{ctx}/goal{g}"] = msgs if msgs is not None else why
            gen = CodeGenerator(None, fmt=fmt, context=ctx, pool=object(), spec={})
            info = {"slots": SLOTS, "summary": SUMMARY if ctx == "summary" else None}
            out[f"search/{fmt}/{ctx}/goal{g}"] = gen.messages(SOURCE, ROW, goal, "widen conv1", _Memory(),
                                                             "Budget: 1 MFLOPs.\n", info)
    for fmt in ("widths", "diff", "code"):
        for kind in KINDS:
            for excl in ((), [(8, 16)]):
                c = request_fields(kind, fmt, SLOTS, exclude=excl, parent=SOURCE if excl else None)
                out[f"fields/{fmt}/{kind}/{len(excl)}"] = {"fields": c.fields, "note": c.note}
        for n in (0, 100, 5000):
            out[f"budget/{fmt}/{n}"] = answer_budget(fmt, n, 3)
    out["diff_text"] = diff_text([("a = 1", "a = 2"), ("b\n", "c\n")])
    return out
