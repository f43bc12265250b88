"""The proxy recipe's options (`corpus.train.Recipe`)."""
import pytest
import torch
import torch.nn as nn

from corpus.train import GpuData, Recipe, train


def tiny_data(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127).long()
    return GpuData(x, y, "cpu")


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))


def test_weight_averaging_ends_with_the_moving_average_of_the_weights_after_warm_up():
    data, decay = tiny_data(), 0.8
    recipe = Recipe(batch_size=32, min_steps=20, epochs=0, ema=decay, warmup=0.2, crop=False, flip=False)
    model, seen = net(), []
    train(model, data, recipe, "cpu", on_step=lambda s, t: seen.append(
        (s, [v.detach().clone() for v in model.state_dict().values() if v.is_floating_point()])))
    warm = max(1, int(20 * recipe.warmup))
    avg = None
    for s, weights in seen:
        if s < warm:
            continue
        avg = [w.clone() for w in weights] if avg is None else [a + (1 - decay) * (w - a) for a, w in zip(avg, weights)]
    final = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert all(torch.allclose(f, a, atol=1e-6) for f, a in zip(final, avg))
    assert not all(torch.equal(f, w) for f, w in zip(final, seen[-1][1]))  # not the last step's weights


def test_without_weight_averaging_the_weights_are_the_last_steps():
    model, seen = net(), []
    train(model, tiny_data(), Recipe(batch_size=32, min_steps=10, epochs=0, crop=False, flip=False), "cpu",
          on_step=lambda s, t: seen.append([v.detach().clone() for v in model.parameters()]))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), seen[-1]))


def test_a_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="ema must be in"):
        train(net(), tiny_data(), Recipe(batch_size=32, min_steps=2, epochs=0, ema=1.0), "cpu")


def test_channels_last_and_bf16_on_a_cpu_are_opt_in_and_train_the_same_network():
    import corpus.train as ct

    recipe = dict(batch_size=32, min_steps=12, epochs=0, crop=False, flip=False)
    plain, fast = net(), net()
    seen = []
    real = torch.autocast
    ct.torch.autocast = lambda device, **kw: seen.append((device, kw.get("enabled"))) or real(device, **kw)
    try:
        train(plain, tiny_data(), Recipe(**recipe), "cpu")
        assert set(seen) == {("cpu", False)}  # the default: no autocast on a CPU
        seen.clear()
        out = train(fast, tiny_data(), Recipe(**recipe, channels_last=True, bf16=True), "cpu")
        assert set(seen) == {("cpu", True)}
    finally:
        ct.torch.autocast = real
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert out["steps"] == 12 and torch.isfinite(torch.tensor(out["final_loss"]))
    # the same network and batches: the weights stay close (bf16 rounds the products, nothing else differs)
    for a, b in zip(plain.parameters(), fast.parameters()):
        assert torch.allclose(a, b, atol=0.05), (a - b).abs().max()
    assert Recipe().channels_last is False and Recipe().bf16 is False


class Viewer(nn.Module):
    """LeNet's habit: `.view` of a convolution's output, which a channels-last tensor cannot give."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(144, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


def test_a_network_that_views_a_conv_output_trains_in_the_default_layout_under_channels_last():
    from corpus.train import channels_last_ok, predict

    recipe = Recipe(batch_size=32, min_steps=6, epochs=0, crop=False, flip=False, channels_last=True)
    model = Viewer()
    out = train(model, tiny_data(), recipe, "cpu")  # before: RuntimeError "view size is not compatible"
    assert out["steps"] == 6 and model._nasforge_channels_last is False
    assert model.conv.weight.is_contiguous()  # put back in the default layout
    same = Viewer()
    train(same, tiny_data(), Recipe(batch_size=32, min_steps=6, epochs=0, crop=False, flip=False), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))  # trained as without
    assert predict(model, tiny_data(64)).shape == (64,)
    ok = net()
    assert channels_last_ok(ok, tiny_data().normalize(tiny_data().x[:2])) is True
    assert ok[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_cpu_flag_reaches_the_recipe_of_build_profile_and_search(tmp_path, monkeypatch):
    import corpus.evaluator
    from corpus.__main__ import make_parser
    from corpus.build import BuildConfig, recipe_of
    from search.__main__ import make_parser as search_parser
    from search.loop import SearchConfig
    from search.runner import make_run_evaluator

    on = recipe_of(BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu="on"))
    off = recipe_of(BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu="off"))
    assert on["channels_last"] is on["bf16"] is True and off["channels_last"] is off["bf16"] is False
    assert {k: v for k, v in on.items() if k not in ("channels_last", "bf16")} == \
        {k: v for k, v in off.items() if k not in ("channels_last", "bf16")}
    assert recipe_of(BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu=True)) == on  # older configs
    for has in (True, False):  # auto: on where the CPU has bf16 instructions
        monkeypatch.setattr(corpus.evaluator, "cpu_has_bf16", lambda has=has: has)
        assert recipe_of(BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu="auto")) == \
            (on if has else off)
    for parse in (lambda a: make_parser().parse_args(["profile", "x.py", "--dataset", "mnist", *a]),
                  lambda a: search_parser().parse_args(["run", *a])):
        assert parse(["--fast-cpu"]).fast_cpu == "on" and parse(["--fast-cpu", "off"]).fast_cpu == "off"
        assert parse([]).fast_cpu == SearchConfig().fast_cpu == BuildConfig("v", "d", "o").fast_cpu
    ev = make_run_evaluator(SearchConfig(dataset="fashion-mnist", out=str(tmp_path / "r"), fast_cpu="on"))
    try:
        assert ev.recipe["channels_last"] is True and ev.recipe["bf16"] is True
        assert (ev.recipe["batch_size"], ev.recipe["min_steps"]) == (SearchConfig().batch_size, SearchConfig().min_steps)
    finally:
        getattr(ev, "close", lambda: None)()


def test_a_bad_fast_cpu_value_is_a_one_line_error():
    from corpus.errors import CorpusError
    from corpus.evaluator import fast_cpu
    from search.loop import SearchConfig, SearchError, check_config

    with pytest.raises(CorpusError, match="--fast-cpu must be auto, on or off"):
        fast_cpu("fast")
    with pytest.raises(SearchError, match="--fast-cpu must be auto, on or off"):
        check_config(SearchConfig(fast_cpu="fast"))
    with pytest.raises(SearchError, match="--min-steps"):
        check_config(SearchConfig(min_steps=-1))


def test_a_run_stored_before_min_steps_and_fast_cpu_keeps_the_recipe_it_trained_with():
    from search.loop import SearchConfig
    from search.loop import config_dict
    from search.runner import stored_config

    saved = config_dict(SearchConfig(batch_size=64))
    for k in ("min_steps", "fast_cpu"):
        saved.pop(k)
    old = stored_config(saved)
    assert (old.batch_size, old.min_steps, old.fast_cpu) == (64, 150, "off")
    assert stored_config({**saved, "fast_cpu": True}).fast_cpu == "on"
    new = stored_config(config_dict(SearchConfig(fast_cpu="on")))
    assert (new.min_steps, new.fast_cpu) == (SearchConfig().min_steps, "on")


def test_fast_cpu_auto_on_a_resumed_corpus_is_what_its_rows_were_trained_with(monkeypatch):
    import json

    import corpus.evaluator
    from corpus.build import BuildConfig, fast_cpu_of

    monkeypatch.setattr(corpus.evaluator, "cpu_has_bf16", lambda: True)
    cfg = BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu="auto")
    fp32 = {"recipe": json.dumps({"channels_last": False, "bf16": False, "min_steps": 150})}
    older = {"recipe": json.dumps({"min_steps": 150})}  # rows from before the fields existed
    assert fast_cpu_of(cfg, []) == "on"
    assert fast_cpu_of(cfg, [fp32]) == fast_cpu_of(cfg, [{"recipe": "not json"}, older]) == "off"
    assert fast_cpu_of(cfg, [{"recipe": json.dumps({"channels_last": True, "bf16": True})}]) == "on"
    assert fast_cpu_of(BuildConfig(variants="v", dataset="fashion-mnist", out="o", fast_cpu="on"), [fp32]) == "on"


def test_corpus_build_workers_share_out_nasforge_threads(monkeypatch):
    """A build beside other work (NASFORGE_THREADS=1) must not start more torch threads than it was given: two
    threads beside a busy core spin against each other (lenet trained 20x slower)."""
    import mutator.sandbox
    from corpus.build import BuildConfig, _execute

    seen = []

    class Pool:
        def __init__(self, size, **kw):
            seen.append((size, kw["threads_per_worker"]))
            raise RuntimeError("stop")  # only the arguments matter here

    monkeypatch.setattr(mutator.sandbox, "WorkerPool", Pool)
    for env, workers, want in (("1", 1, 1), ("4", 2, 2), ("1", 2, 1)):
        monkeypatch.setenv("NASFORGE_THREADS", env)
        with pytest.raises(RuntimeError, match="stop"):
            next(_execute(BuildConfig("v", "fashion-mnist", "o", workers=workers), "cpu", [({}, "", {})]))
        assert seen[-1] == (workers, want)


def test_finetune_eval_profiles_answers_with_the_corpus_arithmetic():
    import json

    from finetune.evaluate import EvalConfig, profile_settings

    def row(**rec):
        return {"status": "ok", "dataset": "fashion-mnist", "recipe": json.dumps({"batch_size": 32, "min_steps": 300,
                                                                                   "train_limit": 8000, **rec})}

    cfg = EvalConfig(model="m", corpus="c")
    on = profile_settings([row(channels_last=True, bf16=True)], cfg)
    assert (on["fast_cpu"], on["batch_size"], on["min_steps"]) == ("on", 32, 300)
    assert profile_settings([row()], cfg)["fast_cpu"] == profile_settings([row(bf16=False)], cfg)["fast_cpu"] == "off"
