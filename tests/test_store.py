"""search.store: iterations, metadata, knowledge-base versions and screened proposals survive a reopen;
stores that are not run stores are refused without being touched."""
import sqlite3

import pytest

from search.store import RunStore, StoreError


def rec(it: int, **kw) -> dict:
    return {"it": it, "status": "ok", "code": f"W = {it}", "metrics": {"accuracy": 0.5 + it / 100, "flops": 10},
            "extra": {"bin": None}, "problem": "p", "modification": "m", "outcome": "o", "instruction": "i",
            "next_problem": "n", "is_best": 1, **kw}


def test_records_round_trip_across_a_reopen(tmp_path):
    s = RunStore(tmp_path / "run")
    assert not s.started()
    s.set_meta("config", {"llm": "random"})
    s.add(rec(0))
    s.add(rec(1, status="duplicate", metrics=None, error="the same network as iteration 0"))
    s.add_kb(0, -1, ["widen the stem"], "initial")
    s.add_screened(1, 0, {"code": "W = 9", "raw": "...", "status": "screened", "metrics": {"zc_score": 0.5}})
    s.close()
    s = RunStore(tmp_path / "run", create=False)
    assert s.started() and s.meta("config") == {"llm": "random"} and s.meta("missing", 7) == 7
    its = s.iterations()
    assert [r["it"] for r in its] == [0, 1] and its[0]["metrics"] == {"accuracy": 0.5, "flops": 10}
    assert its[1]["metrics"] is None and its[1]["error"] == "the same network as iteration 0"
    assert s.kb_versions()[0]["items"] == ["widen the stem"]
    assert s.screened()[0]["metrics"] == {"zc_score": 0.5}
    s.close()


@pytest.mark.parametrize("content", [b"", b"this is not sqlite at all" * 10])
def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path, content):
    (tmp_path / "run.sqlite").write_bytes(content)
    with pytest.raises(StoreError):
        RunStore(tmp_path, create=False)
    assert (tmp_path / "run.sqlite").read_bytes() == content


def test_a_sqlite_file_with_other_tables_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "run.sqlite")
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        RunStore(tmp_path, create=False)
