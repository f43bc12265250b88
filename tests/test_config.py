"""One way to fill a config from flags and a YAML file (`mutator.cli.config_from`), in every command:
defaults < the flags' own defaults < the file < the flags written; bad files are one-line errors."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from mutator.cli import config_from, written


class Bad(Exception):
    pass


@dataclass(frozen=True)
class Toy:
    out: str
    steps: int = 10
    rate: float = 0.5
    edges: tuple[float, ...] | None = None
    fast: bool = False
    name: str | None = None


def write(tmp_path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_the_order_is_defaults_then_flag_defaults_then_file_then_flags_written(tmp_path):
    f = write(tmp_path, "steps: 20\nrate: 1\nedges: [1, 2.5]\nfast: on\nname: x\n")
    flags = {"out": "o", "steps": 99, "rate": 0.5, "name": "flag", "command": "run", "config": f}
    cfg = config_from(Toy, flags, f, given={"out", "name"}, error=Bad)
    # steps: the file beats the flag's default; name: the flag written beats the file; a YAML list is a tuple
    assert cfg == Toy(out="o", steps=20, rate=1, edges=(1, 2.5), fast=True, name="flag")
    assert config_from(Toy, {"out": "o", "steps": 3}, error=Bad) == Toy(out="o", steps=3)  # given None: all written


@pytest.mark.parametrize("text, why", [
    ("steps: ten\n", "steps must be int, not 'ten'"),
    ("rate: yes\n", "rate must be float"),  # YAML's yes is a boolean
    ("edges: 3\n", "edges must be tuple[float, ...] | None"),
    ("bogus: 1\nother: 2\n", "unknown option(s) bogus, other"),
    ("- a\n", "must hold a mapping of option: value"),
    ("a: [\n", "while parsing"),
])
def test_a_bad_file_is_one_line_naming_the_option(tmp_path, text, why):
    f = write(tmp_path, text)
    with pytest.raises(Bad) as e:
        config_from(Toy, {"out": "o"}, f, error=Bad)
    assert why in str(e.value) and "\n" not in str(e.value) and f in str(e.value)


def test_a_required_option_missing_from_flags_and_file_is_named(tmp_path):
    with pytest.raises(Bad, match=r"missing --out \(a flag or a key in --config\)"):
        config_from(Toy, {"out": None, "steps": 1}, write(tmp_path, "steps: 2\n"), given=set(), error=Bad)
    with pytest.raises(Bad, match="No such file"):
        config_from(Toy, {"out": "o"}, str(tmp_path / "none.yaml"), error=Bad)
    assert config_from(Toy, {}, write(tmp_path, "out: from-file\n"), error=Bad).out == "from-file"
    assert config_from(Toy, {"out": "o"}, write(tmp_path, ""), error=Bad) == Toy(out="o")  # an empty file


def test_a_stored_config_of_an_older_version_skips_what_it_no_longer_knows(tmp_path):
    from search.runner import stored_config

    cfg = stored_config({"out": "r", "bin_edges": [0.1, 0.2], "gone_option": 3, "repair": False})
    assert cfg.bin_edges == (0.1, 0.2) and cfg.repair is False and cfg.out == "r"


def test_written_names_only_the_flags_on_the_command_line():
    from corpus.__main__ import make_parser

    got = written(make_parser, ["build", "--out", "o", "--workers", "1", "--zero-cost"])
    assert {"out", "workers", "zero_cost"} <= got and not got & {"epochs", "variants", "dataset", "config"}


def test_corpus_build_reads_a_config_file_and_flags_override_it(tmp_path, capsys):
    from corpus.__main__ import main

    f = write(tmp_path, f"variants: {tmp_path / 'none'}\ndataset: fashion-mnist\nworkers: 2\nepochs: 0.5\n")
    assert main(["build", "--config", f, "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    err = capsys.readouterr()
    shown, last = err.err.strip().splitlines()[0], err.err.strip().splitlines()[-1]  # `config: BuildConfig(...)`
    assert "workers=1" in shown and "epochs=0.5" in shown and "dataset='fashion-mnist'" in shown
    assert last == f"error: --variants {tmp_path / 'none'} is not a folder"
    assert main(["build", "--config", f]) == 2
    assert capsys.readouterr().err.strip() == "error: missing --out (a flag or a key in --config)"
    assert main(["build", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == "error: missing --variants (a flag or a key in --config)"


def test_search_run_reads_a_config_file_and_resume_counts_its_options_as_given(tmp_path, monkeypatch):
    import search.runner
    from search.__main__ import main

    seen = {}

    def fake_run(cfg, resume=False, given=None):
        seen.update(cfg=cfg, given=given)
        return {"iterations": 0, "best": {"accuracy": 0.5}, "seed": {"accuracy": 0.5}}

    monkeypatch.setattr(search.runner, "run", fake_run)
    f = write(tmp_path, "strategy: tpe\niterations: 7\nrepair: off\nbin-edges: [0.5]\nbins: 2\n")
    argv = ["run", "--config", f, "--iterations", "3", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    cfg = seen["cfg"]
    assert (cfg.strategy, cfg.iterations, cfg.repair, cfg.bin_edges, cfg.bins) == ("tpe", 3, False, (0.5,), 2)
    assert seen["given"] == {"iterations", "out", "strategy", "repair", "bin_edges", "bins"}
    assert main(["run", "--config", write(tmp_path, "iterations: many\n")]) == 2


def test_finetune_reads_its_config_file_through_the_same_function(tmp_path, capsys):
    from finetune.__main__ import main

    f = write(tmp_path, "corpus: nowhere\nout: x\nsteps: 3\n")
    assert main(["dataset", "--config", f]) == 2
    assert "unknown option(s) steps" in capsys.readouterr().err
