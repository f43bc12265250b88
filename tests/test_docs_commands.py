"""Every command that README.md and docs/*.md show parses with today's command line.

A shown command that a user copies must not end in "unrecognized arguments" or a renamed flag's error.
Each `python -m mutator|corpus|finetune|search ...` line of a ```bash block (continuations joined,
comments and environment assignments dropped, a variable assigned in the file (`C="--seed lenet"`) read
as its value and any other (`$s`) as `0`, a `...` standing for "and so on" dropped) is parsed by
its package's own `make_parser()`, which runs nothing; each `python benchmarks/X.py` names a file
that exists. What a command then does is the other tests' business (they run each stage on tiny inputs).
"""
import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mutator", "corpus", "finetune", "search")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every nasforge command in the file's bash blocks."""
    out, block, joined, start, assigned = [], False, "", 0, {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            block = line.strip() in ("```bash", "```sh", "```console") if not block else False
            continue
        if not block:
            continue
        if not joined:
            start = no
        joined += line.rstrip().rstrip("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        text, joined = joined, ""
        text = re.sub(r"(^|\s)#.*$", "", text)  # a comment to the end of the line
        if m := re.fullmatch(r"\s*(\w+)=\"([^\"$]*)\"\s*", text):  # C="--seed lenet ...": used as $C below
            assigned[m[1]] = m[2]
        text = re.sub(r"\$\{?(\w+)\}?", lambda v: assigned.get(v[1], "0"), text)  # else any value of the right kind
        text = text.replace(" ... ", " ")
        for part in re.split(r"&&|;|\|\||\bdo\b|\bthen\b", text):
            words = part.split()
            while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value before the command
                words.pop(0)
            if len(words) >= 2 and words[0] in ("python", "python3") and (
                    words[1] == "-m" and len(words) > 2 and words[2] in PACKAGES or words[1].startswith("benchmarks/")):
                out.append((start, " ".join(words)))
    return out


CASES = [(f"{p.relative_to(ROOT)}:{no}", cmd) for p in DOCS for no, cmd in shown_commands(p)]


def test_the_docs_show_commands_of_every_package():
    shown = {cmd.split()[2] for _, cmd in CASES if cmd.split()[1] == "-m"}
    assert shown == set(PACKAGES), shown


@pytest.mark.parametrize("where,cmd", CASES, ids=[w for w, _ in CASES])
def test_a_shown_command_parses(where, cmd):
    words = shlex.split(cmd)
    if words[1] != "-m":
        assert (ROOT / words[1]).is_file(), f"{where}: {words[1]} does not exist"
        return
    parser = importlib.import_module(f"{words[2]}.__main__").make_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(words[3:])
    except SystemExit as exc:
        if exc.code not in (0, None):  # --help exits 0
            pytest.fail(f"{where}: `{cmd}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    except argparse.ArgumentError as exc:
        pytest.fail(f"{where}: `{cmd}` does not parse: {exc}")


def test_the_readme_stays_a_page_not_a_manual():
    """The README is the front page (issue 26: under 15 KB); reference text belongs in docs/ and benchmarks/."""
    size = len((ROOT / "README.md").read_bytes())
    assert size < 15_000, f"README.md is {size:,} bytes: move detail to docs/ or benchmarks/ and link it"
