"""Per-device latency lookup tables: file formats, measuring one (resumable), and the search using it."""
import json
import random

import pytest

from conftest import assert_one_line_error, run_module
from corpus.latency_table import load
from corpus.table import TableError, table_path, widths_of
from search.llm import ScriptedLLM
from search.loop import SearchConfig
from search.runner import load_run, run
from test_table import table_file, with_widths


def test_load_json_csv_columns_and_malformed_files(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"2222222": 3.5, "1111111": 1.25}))
    assert load(str(one)) == ({"2222222": 3.5, "1111111": 1.25}, "latency_ms")
    multi = tmp_path / "multi.json"
    multi.write_text(json.dumps({"2222222": {"gpu": 0.8, "pi4": 40.0}, "1111111": {"pi4": 20.0}}))
    with pytest.raises(TableError, match="gpu, pi4: pick one with --latency-column"):
        load(str(multi))
    assert load(str(multi), "pi4") == ({"2222222": 40.0, "1111111": 20.0}, "pi4")
    assert load(str(multi), "gpu") == ({"2222222": 0.8}, "gpu")  # keys without the column are left out
    with pytest.raises(TableError, match="no column 'tpu'"):
        load(str(multi), "tpu")
    csv = tmp_path / "lat.csv"
    csv.write_text("key,edgegpu,raspi4\n2222222,1.5,30\n1111111,1.0,22.5\n")
    assert load(str(csv), "raspi4") == ({"2222222": 30.0, "1111111": 22.5}, "raspi4")
    bad = {"nan.json": '{"2222222": NaN}', "neg.json": '{"2222222": -1}', "str.json": '{"2222222": "fast"}',
           "torn.json": '{"2222222": 1.0', "noheader.csv": "2222222,1.0\n", "empty.json": "{}",
           "ragged.csv": "key,a,b\n2222222,1.0\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TableError) as exc:
            load(str(tmp_path / name))
        assert name in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(TableError, match="no latency table at"):
        load(str(tmp_path / "missing.json"))


def test_latency_table_command_measures_resumes_and_includes_the_seed(tmp_path):
    out = tmp_path / "lat.json"
    res = run_module("corpus", "latency-table", "--space", "cbm-mobilenet", "--sample", 1, "--runs", 2,
                     "--label", "here", "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads(out.read_text())
    assert "2222222" in table and len(table) == 2  # the sampled key and the seed's configuration
    assert all(v["here"] > 0 for v in table.values())
    journal = out.with_name("lat.json.jsonl")
    with journal.open("a") as f:
        f.write('{"key": "11')  # a line torn by a kill
    res = run_module("corpus", "latency-table", "--space", "cbm-mobilenet", "--sample", 1, "--runs", 2,
                     "--label", "here", "--out", out)
    assert res.returncode == 0 and "0 new latencies; 2 configurations" in res.stdout
    assert json.loads(out.read_text()) == table
    assert_one_line_error(run_module("corpus", "latency-table", "--space", "nb201", "--out", tmp_path / "x.json"),
                          "unknown benchmark space 'nb201'")
    # resuming into the same file for another space or device would mix tables: refused, file kept
    assert_one_line_error(run_module("corpus", "latency-table", "--space", "cbm-resnet", "--sample", 1,
                                     "--label", "here", "--out", out), "holds latencies of cbm-mobilenet on here")
    assert json.loads(out.read_text()) == table


def test_search_looks_latency_up_instead_of_measuring(tmp_path, cbm_dir):
    space = "cbm-mobilenet"
    keys = random.Random(3).sample(sorted(k for k in json.loads(table_path(space, table_file(cbm_dir, space))
                                                                .read_text()) if k != "2222222"), 3)
    lat = {"2222222": {"board": 10.0}, keys[0]: {"board": 4.0}, keys[1]: {"board": 25.0}}  # keys[2] missing
    (tmp_path / "lat.json").write_text(json.dumps(lat))
    answers = [f"```python\n{with_widths(space, widths_of(k, space))}```" for k in keys]
    cfg = SearchConfig(llm="scripted", evaluator=f"table:{space}", iterations=3, improver_llm="rule", answer_format="code",
                       objective="pareto", hw_metric="latency_ms", latency_table=str(tmp_path / "lat.json"),
                       latency_column="board", benchmark_file=table_file(cbm_dir, space), out=str(tmp_path / "r"))
    run(cfg, llm=ScriptedLLM(answers), progress=False)
    _, iters, seed = load_run(str(tmp_path / "r"))
    assert seed["latency_ms"] == 10.0 and seed["pre_latency_ms"] == 10.0 and seed["pre_latency_device"] == "board"
    assert [r["status"] for r in iters] == ["ok", "ok", "out_of_space"]
    assert [r["metrics"].get("pre_latency_ms") for r in iters[:2]] == [4.0, 25.0]
    assert [r["extra"]["cost"] for r in iters[:2]] == [4.0, 25.0]
    assert f"{keys[2]} has no latency in" in iters[2]["error"]
    # only the benchmark spaces have keys to look up
    assert_one_line_error(run_module("search", "run", "--strategy", "random", "--latency-table", tmp_path / "lat.json",
                                     "--out", tmp_path / "x"), "needs --evaluator table:SPACE")
