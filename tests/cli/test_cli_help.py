"""The help of every command (walked from the click command tree) reads cleanly, ``-h`` is
``--help`` everywhere, and ``--version`` prints the installed version."""

from __future__ import annotations

import importlib.metadata
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from modelyard.cli.main import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = "│"
# Rich fills a line with every word that fits; allow this much for padding we do not model.
SLACK = 2


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of ``command`` and of every command below it (a group has ``commands``)."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


PATHS = list(_command_paths(typer.main.get_command(app)))


def _help(path: tuple[str, ...], width: int, flag: str = "--help") -> str:
    result = CliRunner().invoke(app, [*path, flag], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, (path, result.output)
    return ANSI.sub("", result.stdout)


def stray_breaks(text: str, width: int) -> list[str]:
    """Line breaks rich did not choose: a line ends although the next line's first word, which
    continues the same paragraph or table cell, would have fit on it. That is a newline of the
    source (a docstring wrapped in the editor) showing through."""
    found = []
    for a, b in itertools.pairwise(text.splitlines()):
        panel = a.startswith(BAR) and b.startswith(BAR)
        if panel:
            limit = a.rstrip().rindex(BAR) - 1  # the panel keeps one space before its border
        elif a.startswith(("╭", "╰", BAR)) or b.startswith(("╭", "╰", BAR)):
            continue
        else:
            limit = width - 1
        a_text, b_text = a.replace(BAR, " "), b.replace(BAR, " ")
        if not a_text.strip() or not b_text.strip():
            continue
        start = len(b_text) - len(b_text.lstrip())
        # The next line continues a's last cell (cells are apart by two spaces or more): it
        # starts where that cell does and, in a panel, is indented (a line starting at the
        # panel's left edge begins a new row).
        line = a_text[:limit]
        cells = [len(line) - len(line.lstrip())]
        cells += [m.start(1) for m in re.finditer(r"\s\s+(\S)", line)]
        if start != cells[-1] or (panel and start <= 2):
            continue
        word = b_text.split()[0]
        if word.startswith("["):  # Typer's own [default: ...], [env var: ...], [required]
            continue
        end = len(a_text[:limit].rstrip())
        if end + 1 + len(word) <= limit - SLACK:
            found.append(f"{a.strip()!r} / {b.strip()!r}")
    return found


def test_the_walk_reaches_every_command() -> None:
    assert {(), ("gc",), ("server",), ("db", "upgrade"), ("runs", "list"), ("runs", "history"),
            ("experiments", "restore"), ("artifacts", "put")} <= set(PATHS)
    assert len(PATHS) > 20


def test_the_stray_break_check_catches_a_docstring_newline() -> None:
    text = (" Purge soft-deleted runs and experiments, free the blobs no run uses any more, and\n"
            " sweep what interrupted uploads left behind.\n")
    assert stray_breaks(text, 120) and not stray_breaks(text, 84)

    def row(cells: str) -> str:
        return f"{BAR} {cells.ljust(40)} {BAR}"

    panel = "\n".join([row("gc     Purge soft-deleted runs and"),   # "experiments," is too long
                        row("       experiments, free"),             # "the" would have fit
                        row("       the blobs."),
                        row("runs   Search runs.")])                   # a new row
    assert stray_breaks(panel, 44) == [f"{row('       experiments, free')!r} / "
                                       f"{row('       the blobs.')!r}"]


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "modelyard")
def test_help_has_no_backticks_or_stray_line_breaks(path: tuple[str, ...], width: int) -> None:
    text = _help(path, width)
    assert "Usage:" in text
    assert "`" not in text, text
    assert stray_breaks(text, width) == [], text
    assert all(len(line) <= width for line in text.splitlines()), text


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "modelyard")
def test_dash_h_is_help_everywhere(path: tuple[str, ...]) -> None:
    text = _help(path, 100, "-h")
    assert text == _help(path, 100, "--help")
    assert re.search(r"--help\s+-h\s", text), text  # and the help says so


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"modelyard {importlib.metadata.version('modelyard')}\n"
    import modelyard

    assert modelyard.__version__ == importlib.metadata.version("modelyard")
