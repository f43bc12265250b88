"""Prompts, training answers, grammar request fields and token budgets of every answer format are
byte-identical to those the code wrote before the formats became a registry (a tuned adapter was
trained on them): tests/fixtures/prompts_by_format.json, cases in tests/golden_cases.py."""
import json
from pathlib import Path

import pytest

from golden_cases import cases

EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "prompts_by_format.json").read_text())
GOT = json.loads(json.dumps(cases()))  # tuples as lists, as the fixture stores them


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_prompt_is_byte_identical(key):
    assert GOT[key] == EXPECTED[key]


def test_no_case_added_or_lost():
    assert sorted(GOT) == sorted(EXPECTED)
