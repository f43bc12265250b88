"""The strategy axis is a registry (`search.strategies.register`): a strategy defined in this file alone,
registered with one line, runs `search run`'s loop; outside the registry nothing branches on a strategy's
name (what the loop must know of one, `uses_llm` and `takes_prior`, is registered with it)."""
import re
from pathlib import Path

import pytest

from search.loop import SearchConfig, SearchError, check_config
from search.runner import load_run, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_the_registry():
    """The toys registered here leave the registry as it was (other tests expand specs over every strategy)."""
    from search.strategies import STRATEGIES
    from search.strategies.traits import TRAITS

    saved = dict(STRATEGIES), {k: dict(v) for k, v in TRAITS.items()}
    yield
    STRATEGIES.clear(), STRATEGIES.update(saved[0])
    TRAITS.clear(), TRAITS.update(saved[1])


def test_a_toy_strategy_registered_here_runs_a_table_search(tmp_path, tiny_cbm_dir):
    import json

    from corpus.spaces import SPACES, widths_of
    from search.strategies import _space, register
    from search.strategies.base import WidthsStrategy

    space = "cbm-resnet"
    keys = sorted(json.loads((tiny_cbm_dir / SPACES[space]["file"]).read_text()))

    class Widest(WidthsStrategy):
        """The table's configurations, widest first (by the sum of choice indices)."""
        name = "toy-widest"

        def choose(self, rng, parent, parent_row):
            for key in sorted(keys, key=lambda k: (-sum(map(int, k)), k)):
                w = widths_of(key, space)
                if self.new(w):
                    return w, "widest untried"
            return None

    register("toy-widest", lambda ctx: Widest(_space(ctx), ctx.cfg))  # the one registry line
    cfg = SearchConfig(strategy="toy-widest", evaluator=f"table:{space}", seed=space, iterations=3,
                       benchmark_file=str(tiny_cbm_dir / SPACES[space]["file"]), out=str(tmp_path / "r"))
    run(cfg, progress=False)
    c, iters, _ = load_run(str(tmp_path / "r"))
    want = sorted((k for k in keys if k != "2222222"), key=lambda k: (-sum(map(int, k)), k))[:3]
    assert [r["metrics"]["table_key"] for r in iters] == want
    assert c.group == "toy-widest" and not c.uses_llm


def test_what_the_loop_knows_of_a_strategy_comes_with_its_registration(tmp_path):
    from search.strategies import register

    register("toy-prior", lambda ctx: None, takes_prior=True)
    check_config(SearchConfig(strategy="toy-prior", prior="corpus_x", out=str(tmp_path / "a")))
    with pytest.raises(SearchError, match="needs --strategy .*surrogate.*not random"):
        check_config(SearchConfig(strategy="random", prior="corpus_x", out=str(tmp_path / "b")))
    register("toy-llm", lambda ctx: None, uses_llm=True)
    assert SearchConfig(strategy="toy-llm").uses_llm and not SearchConfig(strategy="tpe").uses_llm


def test_no_branch_on_a_strategy_name_outside_the_registry():
    names = "llm|random|mutation|largest|evolution|tpe|gp|surrogate"
    pattern = re.compile(rf"""strategy\s*(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)\s*\w*strategy""")
    allowed = {"search/strategies/__init__.py", "search/strategies/traits.py"}
    hits = [f"{p.relative_to(ROOT)}:{no}: {line.strip()}"
            for pkg in ("mutator", "corpus", "finetune", "search") for p in sorted((ROOT / pkg).rglob("*.py"))
            if str(p.relative_to(ROOT)) not in allowed
            for no, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
