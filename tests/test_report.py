"""`search report`: table cells, the plotted Pareto front, what a run searched."""
from search.loop import SearchConfig
from search.report import clip, front_with_seed, searched


def test_cells_are_cut_at_a_word_boundary_with_an_ellipsis():
    text = "accuracy rose from 61.2 % to 63.0 % after widening the second convolution; FLOPs grew by 12 percent"
    out = clip(text, 40)
    assert out == "accuracy rose from 61.2 % to 63.0 %…"  # not "... afte"
    assert text.startswith(out[:-1]) and len(out) <= 41
    assert clip("a|b\nc") == "a/b c" and clip(text, 200) == text
    assert clip("x" * 50, 10) == "x" * 10 + "…"  # one long word: cut inside it, still marked


def test_plotted_front_includes_the_seed():
    cands = [(2.0, 0.70), (3.0, 0.60), (4.0, 0.80)]
    seed = (1.0, 0.65)  # cheaper than every candidate: on the front
    assert front_with_seed(cands, seed) == [(1.0, 0.65), (2.0, 0.70), (4.0, 0.80)]
    assert front_with_seed(cands, (5.0, 0.5)) == [(2.0, 0.70), (4.0, 0.80)]  # dominated: not on it
    assert front_with_seed(cands, (None, 0.5)) == [(2.0, 0.70), (4.0, 0.80)]


def test_benchmark_runs_are_described_by_their_space():
    short, long = searched(SearchConfig(evaluator="table:cbm-resnet"))
    assert short == "space cbm-resnet (table), seed cbm-resnet"
    assert "lenet" not in long and "fashion" not in long
    short, _ = searched(SearchConfig(seed="resnet-small", dataset="fashion-mnist"))
    assert short == "seed resnet-small on fashion-mnist"
