"""The run store: one SQLite file per run (`OUT/run.sqlite`), every iteration written as it ends.

Tables: `meta` (key -> JSON: the config, versions, the seed network's row) and `iterations` (one
row per iteration: prompts, raw answers, extracted code, status, metrics, the memory triple, the
improver's instruction, LLM and profiling seconds, best-so-far; `extra`: JSON with the Pareto
mode's bin, parent, archive flag and knowledge-base version), `kb` (one row per knowledge-base
version: the heuristics after each round) and `screened` (proposals screened out before training).
SQLite commits are atomic, so a killed run loses at most the iteration in flight. Stores written
before `extra`, `kb` and `screened` existed get them added when opened.

Text reaches SQLite valid UTF-8 (a lone surrogate from a candidate or an LLM answer would end the run
with a traceback), `status` and `error` one line and cut (`mutator.results.clean_text`), a number
column a finite number or NULL; JSON columns keep their data with every string made valid. Candidates'
rows are validated before they get here (`mutator.results`); this is the writer's own guard.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mutator.results import MAX_ERROR, clean_text, finite, valid_strings, valid_utf8

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iterations (
    it INTEGER PRIMARY KEY,
    started REAL, prompt TEXT, raw_answer TEXT, code TEXT, status TEXT, error TEXT, metrics TEXT,
    problem TEXT, modification TEXT, outcome TEXT, instruction TEXT, improver_raw TEXT,
    improver_source TEXT, llm_seconds REAL, profile_seconds REAL, best_accuracy REAL, is_best INTEGER,
    next_problem TEXT, extra TEXT
);
CREATE TABLE IF NOT EXISTS kb (
    version INTEGER PRIMARY KEY, after_it INTEGER, items TEXT NOT NULL, source TEXT, summary TEXT,
    raw TEXT, created REAL
);
CREATE TABLE IF NOT EXISTS screened (
    it INTEGER, idx INTEGER, code TEXT, raw_answer TEXT, status TEXT, error TEXT, metrics TEXT,
    PRIMARY KEY (it, idx)
);
"""
COLUMNS = ["it", "started", "prompt", "raw_answer", "code", "status", "error", "metrics", "problem",
           "modification", "outcome", "instruction", "improver_raw", "improver_source", "llm_seconds",
           "profile_seconds", "best_accuracy", "is_best", "next_problem", "extra"]
JSON_COLUMNS = ("prompt", "metrics", "extra")
NUMBER_COLUMNS = ("started", "llm_seconds", "profile_seconds", "best_accuracy", "is_best")
MAX_STATUS = 64


def _json(value) -> str:
    return json.dumps(valid_strings(value))


def _cell(column: str, value):
    """One column's value as SQLite takes it (module docstring)."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return _json(value)
    if column in NUMBER_COLUMNS:
        return finite(value)
    if column in ("status", "error"):
        return clean_text(value, MAX_STATUS if column == "status" else MAX_ERROR)
    if isinstance(value, str):
        return valid_utf8(value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else clean_text(value, 10 ** 6)


class StoreError(Exception):
    pass


class RunStore:
    """create=False opens an existing store only: a missing, empty (0-byte) or foreign SQLite file
    (no `meta` table, or tables of another shape) is a StoreError, and the file is left untouched."""

    def __init__(self, folder: str | Path, create: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / "run.sqlite"
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"{folder} is a file, not a run folder")
        if not create:
            if not self.path.is_file():
                raise StoreError(f"{folder} is not a search run (no run.sqlite)")
            if self.path.stat().st_size == 0:
                raise StoreError(f"{self.path} is empty (0 bytes): not a run store")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            if not create:
                self._check_shape()
            self.db.executescript(SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(iterations)")}
            if "extra" not in have:  # a store from before the multi-objective search
                with self.db:
                    self.db.execute("ALTER TABLE iterations ADD COLUMN extra TEXT")
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "db"):
                self.db.close()
            raise StoreError(f"{self.path} is not a readable run store ({exc})") from None

    def _check_shape(self) -> None:
        """Every store has `meta` (key, value); its other tables are added when missing (older stores)."""
        def columns(table: str) -> set[str]:
            return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

        meta = columns("meta")
        problem = "no meta table" if not meta else \
            "its meta table has other columns" if not {"key", "value"} <= meta else \
            "its iterations table has other columns" if columns("iterations") and \
            not set(COLUMNS) - {"extra"} <= columns("iterations") else None
        if problem:
            self.db.close()
            raise StoreError(f"{self.path} is not a run store ({problem})")

    def started(self) -> bool:
        """Whether the run got past its start: the seed network is profiled, or an iteration is stored."""
        return self.meta("seed_row") is not None or \
            self.db.execute("SELECT 1 FROM iterations LIMIT 1").fetchone() is not None

    def set_meta(self, key: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _json(value)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def add(self, rec: dict) -> None:
        values = [rec.get("it")] + [_cell(c, rec.get(c)) for c in COLUMNS[1:]]
        with self.db:
            self.db.execute(f"INSERT INTO iterations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            values)

    def iterations(self) -> list[dict]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM iterations ORDER BY it")
        out = []
        for row in cur:
            rec = dict(zip(COLUMNS, row))
            for c in JSON_COLUMNS:
                rec[c] = json.loads(rec[c]) if rec[c] else None
            out.append(rec)
        return out

    def add_kb(self, version: int, after_it: int, items: list[str], source: str, summary: str | None = None,
               raw: str | None = None) -> None:
        import time

        with self.db:
            self.db.execute("INSERT OR REPLACE INTO kb VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (version, after_it, _json(items), _cell("source", source), _cell("summary", summary),
                             _cell("raw", raw), time.time()))

    def kb_versions(self) -> list[dict]:
        cur = self.db.execute("SELECT version, after_it, items, source, summary, raw FROM kb ORDER BY version")
        return [{"version": v, "after_it": a, "items": json.loads(i), "source": s, "summary": su, "raw": r}
                for v, a, i, s, su, r in cur]

    def add_screened(self, it: int, idx: int, rec: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO screened VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (it, idx, _cell("code", rec.get("code")), _cell("raw", rec.get("raw")),
                             _cell("status", rec.get("status")), _cell("error", rec.get("error")),
                             _json(rec.get("metrics") or {})))

    def screened(self) -> list[dict]:
        cur = self.db.execute("SELECT it, idx, code, raw_answer, status, error, metrics FROM screened ORDER BY it, idx")
        return [{"it": a, "idx": b, "code": c, "raw_answer": d, "status": e, "error": f, "metrics": json.loads(g)}
                for a, b, c, d, e, f, g in cur]

    def close(self) -> None:
        self.db.close()
