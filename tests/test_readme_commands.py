"""Every ``jaxalign ...`` command in the code blocks of README.md and docs/*.md parses with the
command's own argparse parser (no model is loaded): a renamed or removed option, a bad choice or
a missing required argument in the documentation fails here.

A command is a line of a fenced code block (continuation backslashes joined, a leading ``$ ``
prompt dropped) or a part of it between ``&&``, ``;`` and ``|``, whose first word is
``jaxalign``; shell comments are dropped and ``$VARIABLES`` are kept as literal text.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from jaxalign.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")


def documented_commands(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, argv after 'jaxalign')`` of each jaxalign command in ``path``'s code blocks."""
    found = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        text = text.strip()
        text = text[2:] if text.startswith("$ ") else text
        for part in re.split(r"&&|\|\||;|\|", text):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:  # an unbalanced quote in prose-like output: not a command
                continue
            if words and words[0] == "jaxalign":
                found.append((start, words[1:]))
    return found


COMMANDS = [(f"{path.relative_to(ROOT)}:{line}", argv) for path in FILES for line, argv in documented_commands(path)]


def test_the_readme_shows_commands():
    readme = [name for name, _ in COMMANDS if name.startswith("README.md:")]
    assert len(readme) >= 3, readme  # the first command, the SmolLM2 run, the 8B run at least


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_documented_command_parses(where, argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code == 0:  # --help / --version
            return
        pytest.fail(f"{where}: 'jaxalign {shlex.join(argv)}' does not parse: {capsys.readouterr().err.strip()}")
    assert getattr(args, "run", None) is not None, f"{where}: no command in 'jaxalign {shlex.join(argv)}'"
