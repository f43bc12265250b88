"""finetune.formats: answer parsers on messy LLM output, prompt rendering, grammars."""
import importlib.util
import json
import re
import textwrap

import pytest

from finetune.formats import (Answer, WidthSlot, allowed_values, apply_diff, diff_gbnf, diff_messages, diff_text,
                              parse_answer, parse_diff_blocks, parse_widths, slot_line, summary_text, width_slots,
                              widths_answer, widths_gbnf, widths_messages, widths_regex, widths_schema)

RESNET_CHOICES = [[64, 128, 192, 256]] * 3 + [[128, 256, 384, 512]] * 4

# what mutator.analysis returns for the cbm-resnet seed (groups only, trimmed to what formats reads)
RESNET_GROUPS = [
    {"value": 128, "multiple": 8, "layers": ["blocks.0.bn2.num_features", "blocks.0.conv1.in_channels",
                                             "blocks.0.conv2.out_channels", "blocks.1.conv1.in_channels",
                                             "blocks.1.conv2.out_channels", "blocks.2.conv1.in_channels",
                                             "stem.0.out_channels", "stem.1.num_features"]},
    {"value": 128, "multiple": 8, "layers": ["blocks.0.conv1.out_channels", "blocks.0.conv2.in_channels"]},
    {"value": 128, "multiple": 8, "layers": ["blocks.1.conv1.out_channels", "blocks.1.conv2.in_channels"]},
    {"value": 256, "multiple": 8, "layers": ["blocks.2.conv1.out_channels", "blocks.2.conv2.in_channels"]},
    {"value": 256, "multiple": 8, "layers": ["blocks.2.conv2.out_channels", "blocks.3.conv1.in_channels",
                                             "blocks.3.conv2.out_channels", "blocks.4.conv1.in_channels",
                                             "blocks.4.conv2.out_channels", "fc.in_features"]},
    {"value": 256, "multiple": 8, "layers": ["blocks.3.conv1.out_channels", "blocks.3.conv2.in_channels"]},
    {"value": 256, "multiple": 8, "layers": ["blocks.4.conv1.out_channels", "blocks.4.conv2.in_channels"]},
]


def _conv(name, cin, cout, k=3, s=1, g=1):
    return {"name": name, "type": "Conv2d", "kernel": [k, k], "stride": [s, s], "groups": g, "in": cin, "out": cout}


RESNET_LAYERS = [_conv("stem.0", 3, 128)] + [
    l for i, (a, m, b, s) in enumerate([(128, 128, 128, 1), (128, 128, 128, 1), (128, 256, 256, 2),
                                        (256, 256, 256, 1), (256, 256, 256, 1)])
    for l in (_conv(f"blocks.{i}.conv1", a, m, s=s), _conv(f"blocks.{i}.conv2", m, b))
] + [{"name": "fc", "type": "Linear", "kernel": [], "stride": [], "groups": 1, "in": 256, "out": 10}]


@pytest.fixture
def slots():
    return width_slots(RESNET_GROUPS, choices=RESNET_CHOICES, layers=RESNET_LAYERS)


# -- widths ----------------------------------------------------------------------------------------------

def test_slots_describe_what_they_drive(slots):
    assert [s.value for s in slots] == [128, 128, 128, 256, 256, 256, 256]
    assert slot_line(slots[3]) == "w3: blocks.2.conv1 conv3x3 out channels, now 256; allowed 128/256/384/512"
    assert slot_line(slots[4]) == "w4: blocks.2-4.conv2 conv3x3 x3 out channels, now 256; allowed 128/256/384/512"
    assert "stem.0" in slot_line(slots[0]) and "x3" in slot_line(slots[0])


def test_allowed_values_follow_the_generator_rule():
    assert allowed_values(64, 8, 0.25, 2.0) == tuple(range(16, 129, 8))
    assert allowed_values(6, 8) == (8, 16)                      # never below the multiple
    assert allowed_values(96, 24, 0.5, 1.0) == (48, 72, 96)     # a group count's multiple
    s = width_slots([{"value": 64, "multiple": 8, "layers": ["c.out_channels"]}])[0]
    assert "multiples of 8 from 16 to 128" in slot_line(s)


@pytest.mark.parametrize("text, widths", [
    ("[64, 128, 192, 256, 384, 512, 128]", (64, 128, 192, 256, 384, 512, 128)),
    ("64,128,192,256,384,512,128", (64, 128, 192, 256, 384, 512, 128)),
    ("Sure! Based on the history I pick:\n```\n[256, 256, 64, 512, 128, 128, 384]\n```\nThis should raise accuracy.",
     (256, 256, 64, 512, 128, 128, 384)),
    ("w0: 64\nw1: 128\nw2: 192\nw3: 256\nw4: 384\nw5: 512\nw6: 128", (64, 128, 192, 256, 384, 512, 128)),
    ("channels = [64; 64; 64; 128; 128; 128; 128]<|im_end|>", (64, 64, 64, 128, 128, 128, 128)),
    # restates a tried list (wrong count) and then answers: the last valid list wins
    ("Tried [64, 64] before. New: [128, 128, 128, 256, 256, 256, 512].", (128, 128, 128, 256, 256, 256, 512)),
])
def test_parse_widths_tolerates_junk(slots, text, widths):
    a = parse_widths(text, slots)
    assert a.ok and a.widths == widths, a


def test_parse_widths_failures_say_why(slots):
    a = parse_widths("[64, 128, 192]", slots)
    assert a.status == "wrong_count" and "3 widths" in a.error and "7 slots" in a.error
    a = parse_widths("[64, 128, 192, 100, 384, 512, 128]", slots)
    assert a.status == "not_allowed" and a.error == "w3 = 100 is not allowed (128/256/384/512)"
    a = parse_widths("[64, 128, 192, 256, 384, 512, 128, 64]", slots)
    assert a.status == "wrong_count"
    a = parse_widths("I would widen the first layers a lot.", slots)
    assert a.status == "no_list" and "widen the first" in a.error
    assert parse_widths(None, slots).status == "no_list"
    a = parse_widths("[1, 2, 3, 4, 5, 6, 7] and [8, 9, 10, 11, 12, 13, 14]", slots)
    assert a.status == "not_allowed" and "(and 6 more)" in a.error
    assert isinstance(a, Answer) and not a.ok


def test_widths_prompt_and_answer_round_trip(slots):
    row = {"accuracy": 0.9295, "flops": 3.1e8, "params": 3_840_000, "latency_ms": None, "dataset": "cifar10"}
    msgs = widths_messages(slots, row, {"kind": "raise_accuracy"}, summary=summary_text(RESNET_LAYERS, RESNET_GROUPS),
                           history=[([64] * 3 + [128] * 4, "accuracy 91.00%")])
    user = msgs[1]["content"]
    assert "blocks.2 conv3x3 s2 conv3x3: w0->w3->w4" in user and "fc linear: w4->10" in user
    assert "w0-w2 64/128/192/256; w3-w6 128/256/384/512" in user
    assert "[64, 64, 64, 128, 128, 128, 128] accuracy 91.00%" in user and "not a tried list" in user
    assert "```python" not in user
    full = widths_messages(slots, source="class Net: pass\n")[1]["content"]
    assert "```python\nclass Net: pass\n```" in full and slot_line(slots[4]) in full
    answer = widths_answer([64, 128, 192, 256, 384, 512, 128])
    assert parse_widths(answer["content"], slots).widths == (64, 128, 192, 256, 384, 512, 128)


def test_summary_table_chains_layers():
    text = summary_text(RESNET_LAYERS, RESNET_GROUPS).splitlines()
    assert text[1:] == ["stem.0 conv3x3: 3->w0", "blocks.0 conv3x3 x2: w0->w1->w0", "blocks.1 conv3x3 x2: w0->w2->w0",
                        "blocks.2 conv3x3 s2 conv3x3: w0->w3->w4", "blocks.3 conv3x3 x2: w4->w5->w4",
                        "blocks.4 conv3x3 x2: w4->w6->w4", "fc linear: w4->10"]
    # depthwise and a shortcut that does not follow on start their own lines
    layers = [_conv("b.conv.0", 32, 192, k=1), _conv("b.conv.3", 192, 192, g=192, s=2), _conv("b.conv.6", 192, 64, k=1),
              _conv("b.shortcut", 32, 64, k=1, s=2)]
    groups = [{"value": 32, "layers": ["b.conv.0.in_channels", "b.shortcut.in_channels"]},
              {"value": 192, "layers": ["b.conv.0.out_channels", "b.conv.3.in_channels", "b.conv.3.out_channels",
                                        "b.conv.6.in_channels"]},
              {"value": 64, "layers": ["b.conv.6.out_channels", "b.shortcut.out_channels"]}]
    lines = summary_text(layers, groups).splitlines()[1:]
    assert lines == ["b.conv conv1x1 dwconv3x3 s2 conv1x1: w0->w1->w1->w2", "b.shortcut conv1x1 s2: w0->w2"]


def test_layer_table_handler_in_the_sandbox():
    from corpus.table import SPEC
    from mutator import seeds
    from mutator.sandbox import WorkerPool

    with WorkerPool(1, timeout_s=120) as pool:
        res = pool.call("finetune.formats:layer_table", {"source": seeds.seed_source("cbm-mobilenet"), "spec": SPEC})
        bad = pool.call("finetune.formats:layer_table", {"source": "import torch\nraise ValueError('nope')\n",
                                                         "spec": SPEC})
    assert res["status"] == "ok"
    names = [l["name"] for l in res["layers"]]
    assert names[0] == "stem.0" and names[-1] == "fc"
    dw = next(l for l in res["layers"] if l["name"] == "blocks.2.conv.3")
    assert dw["groups"] == dw["in"] and dw["stride"] == [2, 2]
    assert bad["status"] == "error" and "nope" in bad["error"]


# -- diff ----------------------------------------------------------------------------------------------------

PARENT = textwrap.dedent("""\
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.conv2(self.bn1(self.conv1(x))).mean((2, 3)))
""")


def test_diff_exact_blocks_applied_in_order():
    text = ("I will widen conv1.\n```\n" + diff_text([
        ("        self.conv1 = nn.Conv2d(3, 16, 3)\n        self.bn1 = nn.BatchNorm2d(16)",
         "        self.conv1 = nn.Conv2d(3, 24, 3)\n        self.bn1 = nn.BatchNorm2d(24)"),
        ("        self.conv2 = nn.Conv2d(16, 32, 3)", "        self.conv2 = nn.Conv2d(24, 32, 3)"),
    ]) + "\n```\nDone.")
    a = parse_answer("diff", text, parent=PARENT)
    assert a.ok and a.edits == 2 and a.fuzzy == 0
    assert "nn.Conv2d(3, 24, 3)" in a.code and "BatchNorm2d(24)" in a.code and "Conv2d(24, 32, 3)" in a.code
    assert a.code.endswith("\n") and a.code.count("\n") == PARENT.count("\n")


def test_diff_whitespace_tolerant_match_is_reindented():
    text = ("<<<<<<< SEARCH\nself.conv2 = nn.Conv2d(16, 32, 3)   \n\nself.fc = nn.Linear(32, 10)\n=======\n"
            "self.conv2 = nn.Conv2d(16, 48, 3)\nself.fc = nn.Linear(48, 10)\n>>>>>>> REPLACE")
    a = apply_diff(PARENT, text)
    assert a.ok and a.fuzzy == 1, a
    assert "        self.conv2 = nn.Conv2d(16, 48, 3)\n        self.fc = nn.Linear(48, 10)\n" in a.code


def test_diff_unmatched_block_is_quoted_never_skipped():
    text = diff_text([("        self.conv1 = nn.Conv2d(3, 16, 3)", "        self.conv1 = nn.Conv2d(3, 8, 3)"),
                      ("        self.conv3 = nn.Conv2d(32, 64, 3)" + " # long" * 40, "        pass")])
    a = apply_diff(PARENT, text)
    assert a.status == "unmatched" and a.code is None and a.edits == 1
    assert a.error.startswith("block 2 of 2: SEARCH text not found in the parent: '        self.conv3 = nn.Conv2d(32, 64, 3)")
    assert a.error.endswith("...'") and len(a.error) < 260


@pytest.mark.parametrize("text, status, needle", [
    ("Here is the full file:\n```python\nimport torch\nclass Net:\n    pass\n```", "no_blocks", "full source instead"),
    ("nothing useful", "no_blocks", "no <<<<<<< SEARCH"),
    ("<<<<<<< SEARCH\n        self.fc = nn.Linear(32, 10)\n=======\n        self.fc = nn.Linear(32, 12)\n", "unclosed", "1 SEARCH"),
    ("<<<<<<< SEARCH\n\n=======\nx = 1\n>>>>>>> REPLACE", "empty_search", "block 1 of 1"),
    (diff_text([("        self.fc = nn.Linear(32, 10)", "        self.fc = nn.Linear(32, 10)")]), "no_change", "nothing"),
    (diff_text([("        self.fc = nn.Linear(32, 10)", "        self.fc = nn.Linear(32,")]), "syntax_error", "line 10"),
])
def test_diff_failures(text, status, needle):
    a = apply_diff(PARENT, text)
    assert a.status == status and needle in a.error, a


def test_diff_markers_tolerated():
    # 6 or 8 marker characters, fences inside the parts, CRLF line ends, chat tokens
    text = ("<<<<<< SEARCH\r\n```python\r\n        self.fc = nn.Linear(32, 10)\r\n```\r\n========\r\n"
            "        self.fc = nn.Linear(32, 10)  # same\r\n        self.drop = nn.Dropout(0.1)\r\n>>>>>>>> REPLACE<|im_end|>")
    blocks, marks = parse_diff_blocks(text)
    assert marks == 1 and blocks == [("        self.fc = nn.Linear(32, 10)",
                                      "        self.fc = nn.Linear(32, 10)  # same\n        self.drop = nn.Dropout(0.1)")]
    assert apply_diff(PARENT, text).ok


def test_diff_prompt_shows_format():
    msgs = diff_messages(PARENT, {"accuracy": 0.5, "flops": 1e6, "params": 100}, {"kind": "raise_accuracy"})
    assert "<<<<<<< SEARCH" in msgs[1]["content"] and ">>>>>>> REPLACE" in msgs[1]["content"]
    assert PARENT.rstrip() in msgs[1]["content"]


# -- code ----------------------------------------------------------------------------------------------------

def test_code_format_reuses_the_extractor():
    a = parse_answer("code", "Sure:\n```python\nimport torch\n\nclass Net:\n    pass\n```\nEnjoy")
    assert a.ok and a.code.startswith("import torch") and a.code.endswith("pass\n")
    a = parse_answer("code", "I cannot help with that.")
    assert a.status == "no_code" and "cannot help" in a.error
    with pytest.raises(ValueError):
        parse_answer("yaml", "x")
    with pytest.raises(ValueError):
        parse_answer("widths", "x")


# -- grammars ----------------------------------------------------------------------------------------------

def test_widths_grammar_admits_exactly_the_allowed_values(slots):
    g = widths_gbnf(slots)
    root = g.splitlines()[0]
    assert root.count(" w") == len(slots) and root.startswith('root ::= "["') and root.endswith('"]"')
    for s in slots:
        line = next(l for l in g.splitlines() if l.startswith(f"{s.name} ::= "))
        assert sorted(int(v) for v in re.findall(r'"(\d+)"', line)) == sorted(s.allowed)
    rx = re.compile(widths_regex(slots))
    assert rx.fullmatch("[64, 128, 192, 256, 384, 512, 128]")
    assert not rx.fullmatch("[64, 128, 192, 100, 384, 512, 128]")
    assert not rx.fullmatch("[64, 128, 192, 256, 384, 512]")
    sch = widths_schema(slots)
    assert sch["minItems"] == sch["maxItems"] == 7 and sch["prefixItems"][3]["enum"] == [128, 256, 384, 512]


def _gbnf_regex(grammar: str) -> str:
    """A regular expression for a GBNF grammar without recursion (string literals, character classes,
    rule names, groups, alternation, `* + ? {m,n}`): every rule inlined, for checking the language
    the grammar admits."""
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
    tok = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[A-Za-z][\w-]*|[()|*+?]|\{\d+(?:,\d*)?\})')

    def expand(body: str) -> str:
        out = []
        for t in tok.findall(body):
            if t.startswith('"'):
                out.append(re.escape(json.loads(t)))
            elif t.startswith("[") or t[0] in "*+?{":
                out.append(t)
            elif t in "()|":
                out.append({"(": "(?:", ")": ")", "|": "|"}[t])
            else:
                out.append("(?:" + expand(rules[t]) + ")")
        return "".join(out)

    return expand(rules["root"])


def test_widths_grammar_without_the_tried_lists_admits_exactly_the_rest():
    import itertools

    slots = [WidthSlot("w0", 64, (64, 128, 192)), WidthSlot("w1", 64, (64, 128)), WidthSlot("w2", 8, (8, 16, 24)),
             WidthSlot("w3", 8, (8, 16))]
    every = list(itertools.product(*(s.allowed for s in slots)))
    text = lambda w: "[" + ", ".join(map(str, w)) + "]"  # noqa: E731
    for exclude in ([(64, 128, 8, 8)],                                 # one list
                    [w for w in every if w[:2] == (64, 128)],           # a whole subtree: its branch goes
                    [w for w in every if w[0] != 192] + [(192, 64, 8, 16)],  # all but 5
                    [(64, 64, 8, 8), (63, 64, 8, 8), (64, 64, 8)]):     # out-of-language lists are ignored
        rest = set(every) - set(exclude)
        for rx in (_gbnf_regex(widths_gbnf(slots, exclude)), widths_regex(slots, exclude)):
            admitted = {w for w in every if re.fullmatch(rx, text(w))}
            assert admitted == rest, (exclude, sorted(set(every) - admitted)[:5])
            assert not re.fullmatch(rx, "[64, 64, 8]")  # still the right count
    assert widths_gbnf(slots, every) == widths_gbnf(slots)  # all tried: the plain grammar, not an empty one
    assert _gbnf_regex(widths_gbnf(slots)) and widths_gbnf(slots, []) == widths_gbnf(slots)


def test_widths_grammar_without_tried_lists_compiles(slots):
    xgr = pytest.importorskip("xgrammar")
    tried = [tuple(s.allowed[i % len(s.allowed)] for s in slots) for i in range(30)]
    from mutator import seeds

    quoted = diff_gbnf(parent=seeds.seed_source("cbm-resnet"))
    for g in (widths_gbnf(slots, tried), quoted):
        xgr.Grammar.from_ebnf(g)
        if importlib.util.find_spec("llama_cpp"):
            _llama_grammar().from_string(g, verbose=False)


def test_diff_grammar_quotes_the_parent():
    parent = ('import torch\n"""Doc line."""\nclass Net:\n    def __init__(self):\n        self.conv = Conv(3, 16, 3)\n'
              "        x = 1\n\n        self.fc = Linear(16, 10)\n        x = 1\n        self.a = f(\n            1)\n")
    rx = _gbnf_regex(diff_gbnf(parent=parent, max_replace_lines=2, max_line_chars=40))
    block = "<<<<<<< SEARCH\n{}=======\n{}>>>>>>> REPLACE"
    good = block.format("        self.conv = Conv(3, 16, 3)\n", "        self.conv = Conv(3, 24, 3)\n")
    assert re.fullmatch(rx, good)
    assert re.fullmatch(rx, good + "\n" + block.format("        self.fc = Linear(16, 10)\n", ""))  # a deletion
    two = "        self.conv = Conv(3, 16, 3)\n        self.fc = Linear(16, 10)\n"
    assert not re.fullmatch(rx, block.format(two, "\n"))  # one line per SEARCH part
    assert not re.fullmatch(rx, block.format("        x = 1\n", "\n"))  # twice in the parent: ambiguous
    assert not re.fullmatch(rx, block.format("        self.conv = Conv(3, 16, 5)\n", "x\n"))  # misquoted
    assert not re.fullmatch(rx, block.format("    self.conv = Conv(3, 16, 3)\n", "x\n"))  # indentation
    assert not re.fullmatch(rx, block.format("        self.conv = Conv(3, 16, 3)\n", "x\n" * 3))  # too long
    assert not re.fullmatch(rx, block.format("        self.conv = Conv(3, 16, 3)\n", "x" * 42 + "\n"))
    assert apply_diff(parent, good).ok
    assert not re.fullmatch(rx, "Sure! " + good)
    conv = "        self.conv = Conv(3, 16, 3)\n"
    assert not re.fullmatch(rx, block.format(conv, "            self.conv = Conv(3, 24, 3)\n"))  # deeper
    assert not re.fullmatch(rx, block.format(conv, "    self.conv = Conv(3, 24, 3)\n"))  # shallower
    assert re.fullmatch(rx, block.format(conv, "        if True:\n            y = 2\n"))  # a nested second line
    assert not re.fullmatch(rx, block.format(conv, "        a = 1\n    b = 2\n"))  # dedented below the anchor
    assert re.fullmatch(rx, block.format("import torch\n", "import numpy\n"))  # column 0
    assert re.fullmatch(rx, block.format('"""Doc line."""\n', ""))  # a one-line statement, deleted
    for header in ("class Net:\n", "    def __init__(self):\n", "        self.a = f(\n"):
        assert not re.fullmatch(rx, block.format(header, "")), header  # not a whole simple statement
    assert diff_gbnf(parent="\n\n") == diff_gbnf()  # nothing to quote: the envelope alone


def test_diff_grammar_shape():
    g = diff_gbnf(max_blocks=3)
    assert g.splitlines()[0] == 'root ::= block ("\\n" block)? ("\\n" block)?'
    assert '"<<<<<<< SEARCH\\n" line+ "=======\\n" line* ">>>>>>> REPLACE"' in g


def _llama_grammar():
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.LlamaGrammar


def test_grammars_compile_in_llama_cpp(slots):
    LlamaGrammar = _llama_grammar()
    LlamaGrammar.from_string(widths_gbnf(slots), verbose=False)
    LlamaGrammar.from_string(diff_gbnf(), verbose=False)
    big = width_slots([{"value": 256, "multiple": 8, "layers": []}] * 3)
    LlamaGrammar.from_string(widths_gbnf(big), verbose=False)


def test_slot_is_a_frozen_record():
    s = WidthSlot("w0", 8, (8, 16))
    with pytest.raises(Exception):
        s.value = 9


def test_grammars_compile_in_xgrammar(slots):
    xgr = pytest.importorskip("xgrammar")
    xgr.Grammar.from_ebnf(widths_gbnf(slots))
    xgr.Grammar.from_ebnf(diff_gbnf())


@pytest.mark.slow
def test_in_process_generation_under_the_grammar(slots):
    pytest.importorskip("xgrammar")
    import torch

    from finetune.formats import grammar_logits_processor
    from finetune.models import load_model, load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m")
    tok, model = load_tokenizer(path), load_model(path)
    ids = tok(tok.apply_chat_template(widths_messages(slots), tokenize=False, add_generation_prompt=True),
              return_tensors="pt")
    torch.manual_seed(0)
    proc = grammar_logits_processor(tok, widths_gbnf(slots), model.config.vocab_size)
    out = model.generate(**ids, max_new_tokens=40, do_sample=True, temperature=0.7, logits_processor=[proc],
                         pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert parse_widths(text, slots).ok, text


def test_llm_text_is_parsed_without_syntax_warnings():
    import ast
    import warnings

    from finetune.formats import parse_quietly
    from search.state import fingerprint

    text = "x = 0x1for y in z\n"  # 'invalid hexadecimal literal': a SyntaxWarning from ast.parse
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ast.parse(text)
    assert any(issubclass(w.category, SyntaxWarning) for w in seen)  # the warning this guards against
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fingerprint(text)
        assert parse_quietly(text) is not None  # valid Python all the same: `0x1f or y in z`
    assert not seen
