"""The run store: one SQLite file per run (`OUT/run.sqlite`), every iteration written as it ends.

Tables: `meta` (key -> JSON: the config, versions, the seed network's row) and `iterations` (one
row per iteration: prompts, raw answers, extracted code, status, metrics, the memory triple, the
improver's instruction, LLM and profiling seconds, best-so-far). SQLite commits are atomic, so a
killed run loses at most the iteration in flight.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iterations (
    it INTEGER PRIMARY KEY,
    started REAL, prompt TEXT, raw_answer TEXT, code TEXT, status TEXT, error TEXT, metrics TEXT,
    problem TEXT, modification TEXT, outcome TEXT, instruction TEXT, improver_raw TEXT,
    improver_source TEXT, llm_seconds REAL, profile_seconds REAL, best_accuracy REAL, is_best INTEGER,
    next_problem TEXT
);
"""
COLUMNS = ["it", "started", "prompt", "raw_answer", "code", "status", "error", "metrics", "problem",
           "modification", "outcome", "instruction", "improver_raw", "improver_source", "llm_seconds",
           "profile_seconds", "best_accuracy", "is_best", "next_problem"]


class StoreError(Exception):
    pass


class RunStore:
    def __init__(self, folder: str | Path, create: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / "run.sqlite"
        if not create and not self.path.exists():
            raise StoreError(f"{folder} is not a search run (no run.sqlite)")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a readable run store ({exc})") from None

    def set_meta(self, key: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def add(self, rec: dict) -> None:
        values = []
        for c in COLUMNS:
            v = rec.get(c)
            values.append(json.dumps(v) if c in ("prompt", "metrics") and v is not None else v)
        with self.db:
            self.db.execute(f"INSERT INTO iterations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            values)

    def iterations(self) -> list[dict]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM iterations ORDER BY it")
        out = []
        for row in cur:
            rec = dict(zip(COLUMNS, row))
            for c in ("prompt", "metrics"):
                rec[c] = json.loads(rec[c]) if rec[c] else None
            out.append(rec)
        return out

    def close(self) -> None:
        self.db.close()
