"""Stored text never rewrites the terminal (issue 18): every string the CLI prints is escaped.

A run, an experiment and an artifact are stored holding escape sequences (SGR, an OSC title),
the 8-bit CSI U+009B, a bidi override, DEL, line breaks and tabs, rich markup and an emoji code;
every command that shows them (tables, plain lines, error messages), embedded and through a
server, must write none of those characters, show each as a visible escape (``\\x1b``), show the
markup literally, and keep ``--json`` exact. The raw bytes are checked, in process (rich's own
styling off, so every ESC would be the data's) and on a real colour terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

import modelyard
from modelyard.cli import common
from modelyard.cli.safe_text import safe_markup, safe_text, visible
from support.cli import SCRIPT, Data, terminal_env

# Names and user ids refuse control (and invisible) characters, not markup or emoji codes; free
# text (param and tag values, descriptions) holds anything but NUL.
EXP_NAME = "[bold red]exp[/] :thumbs_up:"
RUN_NAME = "[link=http://evil.example]y[/link] [bold red]x[/] :thumbs_up:"
USER = "[blink]u[/blink]"
DESCRIPTION = "about \x1b]0;pwned\x07 and\nmore [bold]lines[/bold]"
PARAMS = {"p_sgr": "\x1b[31mRED", "p_osc": "\x1b]0;pwned\x07", "p_del": "a\x7fb"}
TAGS = {
    "c1": "\x9b31mC1",
    "bidi": "abc\u202edef",
    "nl": "line1\nline2\tcol\rcr",
    "markup": "[bold red]x[/]",
    "link": "[link=http://evil.example]y[/link]",
    "emoji": ":thumbs_up:",
    "isolate": "l\u2067r\u2069\u200e\u200f",
}
ARTIFACT = "reports/[bold red]x[/]y.txt"  # what the path validator lets through

# What the escaped values look like on screen.
SHOWN = [
    r"\x1b[31mRED", r"\x1b]0;pwned\x07", r"a\x7fb", r"\x9b31mC1", r"abc\u202edef",
    r"line1\nline2\tcol\rcr", "[bold red]x[/]", "[link=http://evil.example]y[/link]",
    ":thumbs_up:", r"l\u2067r\u2069\u200e\u200f",
]
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
COLUMNS = "id,name,user," + ",".join(
    [*(f"params.{k}" for k in PARAMS), *(f"tags.{k}" for k in TAGS)])


def assert_clean(raw: bytes) -> str:
    """No byte or character that a terminal acts on, except the table's own line breaks."""
    assert b"\x1b" not in raw and b"\x07" not in raw, raw
    # U+009B is b"\xc2\x9b" in UTF-8; a 0x9b byte outside a UTF-8 sequence fails to decode
    assert b"\xc2\x9b" not in raw, raw
    text = raw.decode("utf-8")  # strict
    bad = {c for c in text if c != "\n" and (unicodedata.category(c) == "Cc" or c in BIDI
                                            or c in "\u2028\u2029")}
    assert not bad, f"{sorted(map(hex, map(ord, bad)))} in {text!r}"
    assert "👍" not in text  # no emoji code was replaced
    return text


def assert_ok(result: Result) -> tuple[str, str]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return assert_clean(result.stdout_bytes), assert_clean(result.stderr_bytes)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's own styling off whatever environment pytest started in (FORCE_COLOR...), so any
    ESC in the captured output came from the data."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    for console in (common.console, common.err_console):
        monkeypatch.setattr(console, "_color_system", None)


def _store(user: str = USER) -> tuple[str, str]:
    """The hostile experiment, run and artifact, through the SDK's current backend."""
    from modelyard.client import api

    real_user = api._user
    api._user = lambda: user
    try:
        modelyard.create_experiment(EXP_NAME, description=DESCRIPTION)
        with modelyard.start_run(experiment=EXP_NAME, name=RUN_NAME, params=PARAMS, tags=TAGS,
                                 capture_source=False) as run:
            run.log_metric("acc", 0.5)
            run.log_text("hello", ARTIFACT)
        with modelyard.start_run(experiment=EXP_NAME, name="plain", params={"p_sgr": "x"},
                                 capture_source=False) as other:
            pass
    finally:
        api._user = real_user
    return run.id, other.id


@pytest.fixture
def hostile(data: Data, plain: None) -> Iterator[Data]:
    run_id, other = _store()
    data.runs["hostile"], data.runs["plain"] = run_id, other
    yield data


def _wide(data: Data, *args: str) -> Result:
    return data.cli(*args, env={"COLUMNS": "1000"})


# ---------------------------------------------------------------------- the escaper


def test_the_escaper_shows_controls_bidi_and_markup_literally() -> None:
    assert visible("\x1b]0;t\x07\x9b1m\u202e\u2066\n\t\r\x7f\x00") == (
        r"\x1b]0;t\x07\x9b1m\u202e\u2066\n\t\r\x7f\x00")
    assert visible("ordinary text: é ü 日本 [x] C:\\dir") == "ordinary text: é ü 日本 [x] C:\\dir"
    assert visible(3.5) == "3.5"
    assert safe_text("[bold]x[/bold]\x1b").plain == r"[bold]x[/bold]\x1b"
    assert safe_markup("[bold]x[/bold]\x1b") == r"\[bold]x\[/bold]\x1b"
    from rich.text import Text

    assert Text.from_markup(safe_markup("[link=http://e]y[/link] \x1b")).plain == (
        r"[link=http://e]y[/link] \x1b")


# ---------------------------------------------------------------------- embedded


def test_runs_show_escapes_every_stored_string(hostile: Data) -> None:
    run_id = hostile.runs["hostile"]
    out, _ = assert_ok(_wide(hostile, "runs", "show", run_id))
    for shown in [*SHOWN, RUN_NAME, USER]:
        assert shown in out, (shown, out)
    # one line per value: the newline and tab inside a value do not make rows
    assert sum("line1" in line for line in out.splitlines()) == 1
    assert "line2" not in "".join(line for line in out.splitlines() if "line1" not in line)


def test_runs_show_json_is_exact(hostile: Data) -> None:
    result = hostile.ok("runs", "show", hostile.runs["hostile"], "--json")
    assert b"\x1b" not in result.stdout_bytes  # JSON escapes control characters itself
    shown = json.loads(result.stdout)
    assert shown["params"] == PARAMS
    assert {k: shown["tags"][k] for k in TAGS} == TAGS
    assert shown["run_name"] == RUN_NAME and shown["user_id"] == USER


def test_runs_list_escapes_names_users_params_and_tags(hostile: Data) -> None:
    out, err = assert_ok(_wide(hostile, "runs", "list", "-e", EXP_NAME, "--columns", COLUMNS))
    assert err == ""
    for shown in SHOWN:
        assert shown in out, (shown, out)
    assert "[link=http://evil.example]y[/link] [bold red]x[/]" in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3, out  # header and two runs: no value spilled onto a line of its own
    # the default columns (name, the params the runs share) too
    out, _ = assert_ok(_wide(hostile, "runs", "list", "-e", EXP_NAME))
    assert r"\x1b[31mRED" in out and "[bold red]x[/]" in out
    listed = json.loads(hostile.ok("runs", "list", "-e", EXP_NAME, "--json").stdout)
    mine = next(r for r in listed if r["run_id"] == hostile.runs["hostile"])
    assert mine["params"] == PARAMS and mine["run_name"] == RUN_NAME
    assert {k: mine["tags"][k] for k in TAGS} == TAGS


def test_a_narrow_table_still_writes_no_control_character(hostile: Data) -> None:
    result = hostile.cli("runs", "list", "-e", EXP_NAME, "--columns", COLUMNS,
                         env={"COLUMNS": "60"})
    _, err = assert_ok(result)
    assert "left out" in err


def test_runs_compare_escapes_names_and_values(hostile: Data) -> None:
    out, _ = assert_ok(_wide(hostile, "runs", "compare", hostile.runs["hostile"],
                             hostile.runs["plain"]))
    assert r"\x1b[31mRED" in out and r"\x1b]0;pwned\x07" in out and r"a\x7fb" in out
    assert RUN_NAME in out
    js = json.loads(hostile.ok("runs", "compare", hostile.runs["hostile"],
                               hostile.runs["plain"], "--json").stdout)
    row = next(r for r in js["rows"] if r["key"] == "params.p_osc")
    assert row["values"][hostile.runs["hostile"]] == PARAMS["p_osc"]


def test_experiments_list_and_messages_escape_names_and_descriptions(hostile: Data) -> None:
    out, _ = assert_ok(_wide(hostile, "experiments", "list"))
    assert EXP_NAME in out
    assert r"about \x1b]0;pwned\x07 and\nmore [bold]lines[/bold]" in out
    listed = json.loads(hostile.ok("experiments", "list", "--json").stdout)
    exp = next(e for e in listed if e["name"] == EXP_NAME)
    assert exp["description"] == DESCRIPTION

    out, _ = assert_ok(hostile.cli("experiments", "delete", EXP_NAME))
    assert EXP_NAME in out
    out, _ = assert_ok(hostile.cli("experiments", "restore", EXP_NAME))
    assert EXP_NAME in out


def test_error_messages_escape_the_values_they_quote(hostile: Data) -> None:
    result = hostile.cli("experiments", "create", EXP_NAME)
    assert result.exit_code == 1
    err = assert_clean(result.stderr_bytes)
    assert EXP_NAME in err and "already exists" in err
    # text the user typed, quoted back
    result = hostile.cli("runs", "list", "-e", "[bold]n[/bold] :thumbs_up:")
    assert result.exit_code == 1
    err = assert_clean(result.stderr_bytes)
    assert "[bold]n[/bold] :thumbs_up:" in err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_an_error_message_is_one_escaped_line(capsys: pytest.CaptureFixture[str],
                                              plain: None) -> None:
    """Whatever an error message holds (a server's, an OSError's), it prints escaped."""
    exit_ = common.fail("run \x1b]0;pwned\x07 [link=http://evil.example]y[/link] \x9b1m "
                        "a\tb :thumbs_up: \u202e\nsecond line")
    assert exit_.exit_code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert assert_clean(captured.err.encode()) == (
        r"error: run \x1b]0;pwned\x07 [link=http://evil.example]y[/link] \x9b1m a\tb "
        ":thumbs_up: \\u202e second line\n")


def test_artifact_listing_and_download_escape_paths(hostile: Data, tmp_path: Path) -> None:
    run_id = hostile.runs["hostile"]
    out, _ = assert_ok(_wide(hostile, "artifacts", "list", run_id))
    assert ARTIFACT in out
    listed = json.loads(hostile.ok("artifacts", "list", run_id, "--json").stdout)
    assert [e["path"] for e in listed] == [ARTIFACT]
    dest = tmp_path / "down\x1b]0;pwned\x07[bold]d[/bold]"
    out, _ = assert_ok(hostile.cli("artifacts", "get", run_id, "reports", "--dest", str(dest)))
    assert r"down\x1b]0;pwned\x07[bold]d[/bold]" in out
    assert (dest / ARTIFACT).read_text() == "hello"
    result = hostile.cli("artifacts", "list", run_id, "reports/[bold]none[/bold]\u00e9")
    assert result.exit_code == 1
    assert "[bold]none[/bold]" in assert_clean(result.stderr_bytes)


def test_history_and_gc_reports_are_clean(hostile: Data) -> None:
    run_id = hostile.runs["hostile"]
    out, _ = assert_ok(hostile.cli("runs", "history", run_id, "acc"))
    assert "0.5" in out
    out, _ = assert_ok(hostile.cli("runs", "delete", run_id))
    assert run_id in out
    out, _ = assert_ok(hostile.cli("gc", "--older-than", "0s"))
    assert "would purge" in out


# ---------------------------------------------------------------------- through a server


def test_through_a_server(server: Any, plain: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelyard.backend.remote import RemoteBackend
    from modelyard.client import api

    monkeypatch.setenv("MODELYARD_CAPTURE_SOURCE", "false")
    remote = RemoteBackend(server.url)
    real_backend = api.backend
    api.backend = lambda uri=None: remote
    try:
        run_id, _ = _store()
    finally:
        api.backend = real_backend
        remote.close()
    data = Data(server.url)
    out, _ = assert_ok(_wide(data, "runs", "show", run_id))
    for shown in SHOWN:
        assert shown in out, (shown, out)
    out, _ = assert_ok(_wide(data, "runs", "list", "-e", EXP_NAME, "--columns", COLUMNS))
    for shown in SHOWN:
        assert shown in out, (shown, out)
    out, _ = assert_ok(_wide(data, "experiments", "list"))
    assert r"about \x1b]0;pwned\x07 and\nmore" in out
    out, _ = assert_ok(_wide(data, "artifacts", "list", run_id))
    assert ARTIFACT in out
    shown_json = json.loads(data.ok("runs", "show", run_id, "--json").stdout)
    assert shown_json["params"] == PARAMS and shown_json["run_name"] == RUN_NAME
    assert {k: shown_json["tags"][k] for k in TAGS} == TAGS
    # the server's error message quotes the name: escaped here as well
    result = data.cli("experiments", "create", EXP_NAME)
    assert result.exit_code == 1
    assert EXP_NAME in assert_clean(result.stderr_bytes)


# ---------------------------------------------------------------------- a real terminal

# rich's own styling on a colour terminal: SGR sequences, nothing else.
_RICH_SGR = re.compile(rb"\x1b\[[0-9;]*m")


def _raw_on_a_terminal(*args: str, columns: int) -> tuple[int, bytes]:
    """The console script on a colour pseudo-terminal: its exit code and raw output."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        proc = subprocess.Popen([str(SCRIPT), *args], stdin=slave, stdout=slave, stderr=slave,
                                env=terminal_env(), start_new_session=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                proc.kill()
                raise AssertionError(f"modelyard {' '.join(args)}: no output for 60 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.wait(60), b"".join(chunks)


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_on_a_colour_terminal_only_richs_own_styling_is_written(hostile: Data) -> None:
    run_id = hostile.runs["hostile"]
    for args, shown in (
            (("runs", "show", run_id), SHOWN),
            (("runs", "list", "-e", EXP_NAME, "--columns", COLUMNS), SHOWN),
            (("experiments", "list"), [EXP_NAME, r"about \x1b]0;pwned"])):
        code, raw = _raw_on_a_terminal(*args, "--uri", hostile.uri, columns=400)
        assert code == 0, raw
        assert b"\x1b[31mRED" not in raw and b"\x1b]" not in raw  # the stored sequences
        assert _RICH_SGR.search(raw), "expected rich's colours on a colour terminal"
        text = assert_clean(_RICH_SGR.sub(b"", raw).replace(b"\r\n", b"\n"))
        for s in shown:
            assert s in text, (s, text)
