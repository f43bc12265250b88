"""mutator.literals: finding integer literals and rewriting them through the syntax tree, as
before/after source pairs, and the fast `Rewriter` checked against the reference `rewrite` for every
literal of every built-in seed and test-zoo file (the check its docstring promises)."""
from pathlib import Path

import pytest

from mutator import seeds
from mutator.literals import Rewriter, SourceError, find_integers, parse, rewrite

ZOO = sorted((Path(__file__).parent / "fixtures" / "zoo").glob("*.py"))
SOURCES = [(f"seed:{n}", seeds.seed_source(n)) for n in seeds.SEEDS] + [(f"zoo:{p.name}", p.read_text()) for p in ZOO]


def test_finds_every_literal_in_document_order_with_its_spelling():
    src = "a = 0x40  # hex\nb = [1_024, 3]\ndef f(x=7):\n    return x * 2\n"
    lits = find_integers(parse(src))
    assert [(l.value, l.text, l.line, l.col) for l in lits] == [
        (64, "0x40", 1, 4), (1024, "1_024", 2, 5), (3, "3", 2, 12), (7, "7", 3, 8), (2, "2", 4, 15)]
    assert [l.index for l in lits] == list(range(5))


@pytest.mark.parametrize("before, values, after", [
    ("nn.Conv2d(3, 64, 3)  # stem\n", {1: 96}, "nn.Conv2d(3, 96, 3)  # stem\n"),
    ("w = [64, 128,\n     256]  # widths\n", {0: 32, 2: 512}, "w = [32, 128,\n     512]  # widths\n"),
    ("x = 0x40\n", {0: 48}, "x = 48\n"),  # the new value is written in decimal
    ("x = 1\n", {}, "x = 1\n"),
])
def test_rewrite_changes_only_the_chosen_literals(before, values, after):
    assert rewrite(before, values) == after
    assert Rewriter(before)(values) == after


def test_bad_source_is_a_one_line_source_error():
    with pytest.raises(SourceError, match="syntax error at line 1"):
        parse("def f(:\n")
    with pytest.raises(SourceError):
        parse("x = 1\x00\n")


@pytest.mark.parametrize("name, source", SOURCES, ids=[n for n, _ in SOURCES])
def test_rewriter_matches_rewrite_for_every_literal(name, source):
    rw = Rewriter(source)
    mod = parse(source)
    assert rw.literals, name
    for lit in rw.literals:
        new = lit.value + 8
        assert rw({lit.index: new}) == rewrite(mod, {lit.index: new}), (name, lit)
    every = {lit.index: lit.value * 2 + 1 for lit in rw.literals}
    assert rw(every) == rewrite(mod, every)
    assert rw({}) == source
