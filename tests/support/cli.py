"""What the CLI tests share: a data folder handle that runs commands against it, and the
installed console script run on a real pseudo-terminal of a given size."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner, Result

from modelyard.cli.main import app

SCRIPT = Path(sys.executable).with_name("modelyard")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Data:
    uri: str
    runs: dict[str, str] = field(default_factory=dict)  # run name -> id

    def cli(self, *args: str, uri: bool = True, env: dict[str, str] | None = None) -> Result:
        argv = [*args, "--uri", self.uri] if uri else list(args)
        # Wide, so tables show every column they would choose.
        return CliRunner().invoke(app, argv, env={"COLUMNS": "240", **(env or {})})

    def ok(self, *args: str, uri: bool = True, env: dict[str, str] | None = None) -> Result:
        result = self.cli(*args, uri=uri, env=env)
        assert result.exit_code == 0, result.output
        return result

    def error(self, *args: str, uri: bool = True, env: dict[str, str] | None = None) -> str:
        """Run a command that must fail; its error: one line on stderr, nothing on stdout."""
        result = self.cli(*args, uri=uri, env=env)
        assert result.exit_code != 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return lines[0]



def terminal_env(**extra: str) -> dict[str, str]:
    """This process's environment without MODELYARD_* and COLUMNS/LINES, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MODELYARD_") and k not in ("COLUMNS", "LINES")}
    return {**env, "MODELYARD_CAPTURE_SOURCE": "false", "TERM": "xterm-256color", **extra}


def on_a_terminal(*args: str, columns: int, rows: int = 40, env: dict[str, str] | None = None,
                  timeout: float = 60.0) -> tuple[int, list[str]]:
    """Run the console script with stdin, stdout and stderr on a pseudo-terminal of
    ``columns`` x ``rows``; its exit code and what it wrote, one line each, without the
    terminal's escape sequences."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        proc = subprocess.Popen([str(SCRIPT), *args], stdin=slave, stdout=slave, stderr=slave,
                                env=terminal_env() if env is None else env,
                                start_new_session=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"modelyard {' '.join(args)}: no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal the child had is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    code = proc.wait(timeout)
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    return code, text.splitlines()
