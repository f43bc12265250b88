"""The two registries of the house: answer formats (`finetune.formats`) and LLM backends
(`finetune.llm`). A toy of each, defined here alone and registered with one line, runs a whole
search; outside the registry modules no code branches on a format's or a backend's name."""
import re
from pathlib import Path

from conftest import ROOT
from finetune.formats import Answer, AnswerFormat, check_format, get_format, register_format
from finetune.llm import make_llm, register_backend
from search.cli import run_parser
from search.runner import load_run, run
from test_search import SEED, cfg_for, fake_evaluate


class TagFormat(AnswerFormat):
    """A toy format: the answer is the new WIDTH in a <width> tag, the candidate the seed with it."""
    name = "toy-tag"

    def messages(self, source, row, goal, *, context="source", slots=None, summary=None, history=(), notes=""):
        return [{"role": "system", "content": "Answer <width>N</width>."},
                {"role": "user", "content": f"{notes}{source}"}]

    def target(self, src, tgt, net=None, tried=()):
        return {"role": "assistant", "content": f"<width>{tgt['width']}</width>"}, {}, None

    def parse(self, text, *, slots=None, parent=None):
        m = re.search(r"<width>(\d+)</width>", text or "")
        if m is None:
            return Answer(self.name, "no_tag", "no <width> tag")
        return Answer(self.name, "ok", code=re.sub(r"WIDTH = \d+", f"WIDTH = {m.group(1)}", parent))

    def token_budget(self, prompt_tokens, slots=0):
        return 16


register_format(TagFormat())


class CountingLLM:
    """A toy backend: answers a wider network each call, in whichever format the prompt asks for."""

    def __init__(self, model, adapter=None, **_):
        self.name, self.n = f"counting:{model}", 0

    def generate(self, messages, *, temperature=0.7, max_new_tokens=1024, seed=0, extra=None) -> str:
        self.n += 1
        w = 16 + 8 * self.n
        if "<width>" in messages[0]["content"]:
            return f"<width>{w}</width>"
        return f"```python\nWIDTH = {w}\nclass Net:\n    pass\n```"


register_backend("toy-counting", CountingLLM)


def test_a_toy_answer_format_runs_a_search(tmp_path):
    (tmp_path / "seed.py").write_text(SEED)
    assert "toy-tag" in run_parser()._option_string_actions["--answer-format"].choices
    answers = ["<width>32</width>", "no tag here", "<width>48</width>"]
    from finetune.llm import ScriptedLLM

    llm = ScriptedLLM(answers)
    run(cfg_for(tmp_path, answer_format="toy-tag", iterations=3), llm=llm, evaluate=fake_evaluate, progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok", "parse_error", "ok"]
    assert "WIDTH = 48" in iters[2]["code"] and iters[1]["extra"]["parse_status"] == "no_tag"
    assert llm.calls[0][0]["content"] == "Answer <width>N</width>."
    assert get_format("toy-tag").repairable and not get_format("toy-tag").constrainable


def test_a_toy_format_is_checked_like_the_others():
    check_format("toy-tag", "source")
    for bad in (("toy-tag", "summary"), ("nope", "source")):
        try:
            check_format(*bad)
        except ValueError as exc:
            assert "widths" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_a_toy_backend_runs_a_search_by_name(tmp_path):
    (tmp_path / "seed.py").write_text(SEED)
    assert "toy-counting" in run_parser()._option_string_actions["--llm-backend"].choices
    run(cfg_for(tmp_path, llm="any", llm_backend="toy-counting", iterations=3), evaluate=fake_evaluate,
        progress=False)
    _, iters, _ = load_run(str(tmp_path / "r"))
    assert [r["status"] for r in iters] == ["ok"] * 3
    assert "WIDTH = 40" in iters[2]["code"]
    run(cfg_for(tmp_path, "t", llm="any", llm_backend="toy-counting", answer_format="toy-tag", iterations=2),
        evaluate=fake_evaluate, progress=False)
    assert [r["status"] for r in load_run(str(tmp_path / "t"))[1]] == ["ok", "ok"]


def test_finetune_eval_generates_through_a_toy_backend():
    from finetune.evaluate import EvalConfig, generate

    llm = make_llm("m", backend="toy-counting")
    prompts = [[{"role": "system", "content": "Answer <width>N</width>."}, {"role": "user", "content": "x"}]] * 2
    assert generate(llm, prompts, EvalConfig(model="m", corpus="c"), "toy", "toy-tag") == \
        ["<width>24</width>", "<width>32</width>"]


# name comparisons that belong in a registry: a format's (widths, diff, code) or a backend's / server kind's
# (a comparison with "code" counts where a format variable is compared: "code" is also a column name)
BRANCH = re.compile(r"""\b(fmt|answer_format|format)\s*(==|!=|(not\s+)?in\s*\()|(==|!=)\s*["'](widths|diff)["']|"""
                    r"""(==|!=|\bin)\s*\(?["'](transformers|openai|scripted|llama\.cpp|llama-cpp-python|vllm|"""
                    r"""vllm-legacy|ollama)["']""")
REGISTRIES = {"finetune/formats/base.py", "finetune/llm/base.py", "finetune/llm/servers.py"}


def test_no_branch_on_a_format_or_backend_name_outside_the_registries():
    found = []
    for pkg in ("mutator", "corpus", "finetune", "search"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in REGISTRIES:
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if BRANCH.search(line.split("#")[0]):
                    found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
