"""Append-only JSON-lines journals and the library versions stored with every record.

    append(path, {"id": "a", "status": "ok"})          # one line, flushed and fsynced
    rows = read(path, required=("id", "status"))        # every record, in order

A journal is how every long job here resumes after a kill (`mutator generate`'s manifest, `corpus
build`'s rows, latency tables): one JSON object per line, each line written whole and synced before
the job goes on. The rule for reading it back is the same everywhere: a torn *last* line (no newline
at the end: the writer was killed mid-line) is dropped and the file rewritten atomically without it,
so that record is simply produced again; any other line that is not a JSON object with the required
keys means the file was damaged by something else, and is an error naming the line (the file is
left alone, never "repaired" into data loss).
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


class JournalError(ValueError):
    """A journal line that is not a record (not a torn last line): the file is left as it is."""


def append(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: str | Path, required: tuple[str, ...] = (), what: str = "record") -> list[dict]:
    """The journal's records; [] when it does not exist. See the module docstring for torn lines."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, torn = [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or any(k not in row for k in required):
                raise ValueError
            rows.append(row)
        except ValueError:
            if i == len(lines) - 1 and not raw.endswith(b"\n"):
                torn = True
                continue
            raise JournalError(f"{path}: line {i + 1} is not a valid {what} (corrupted {path.stem})") from None
    if torn:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return rows


def versions(*modules: str) -> dict:
    """Python's and each importable module's version (for the record of how a row was made)."""
    out = {"python": platform.python_version()}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            pass
    return out
