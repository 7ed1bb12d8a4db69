"""On a terminal, ``artifacts put`` and ``artifacts get`` draw a progress bar over the bytes moved
(the installed console script in a real pseudo-terminal); off a terminal they draw nothing."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("modelyard")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**env, "MODELYARD_CAPTURE_SOURCE": "false", "TERM": "xterm-256color",
            "COLUMNS": "120", "LINES": "40"}


def _on_a_terminal(*args: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run the console script with stdin, stdout and stderr on a pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the script
        os.execve(str(SCRIPT), [str(SCRIPT), *args], _env())
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _run_id(data_dir: Path) -> str:
    out = subprocess.run(
        [str(SCRIPT), "runs", "list", "--json", "--uri", str(data_dir)],
        capture_output=True, text=True, env=_env(), check=True, timeout=60)
    import json

    return str(json.loads(out.stdout)[0]["run_id"])


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_transfers_draw_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code = subprocess.run(
        [sys.executable, "-c", "import modelyard, sys; modelyard.set_uri(sys.argv[1]);"
         "r = modelyard.start_run(experiment='bars'); r.end()", str(data_dir)],
        env=_env(), timeout=60).returncode
    assert code == 0
    run_id = _run_id(data_dir)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(24 << 20))
    (src / "small.txt").write_text("hello")

    code, out = _on_a_terminal("artifacts", "put", run_id, str(src), "--uri", str(data_dir))
    assert code == 0, out
    text = ANSI.sub("", out)
    assert "uploading" in text and "━" in text, text[-2000:]  # the bar itself
    assert "uploaded 2 files (24.0 MiB)" in text

    code, out = _on_a_terminal("artifacts", "get", run_id, ".", "--dest",
                               str(tmp_path / "back"), "--uri", str(data_dir))
    assert code == 0, out
    assert "downloading" in ANSI.sub("", out) and "━" in out
    assert (tmp_path / "back" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()

    piped = subprocess.run(
        [str(SCRIPT), "artifacts", "put", run_id, str(src), "--path", "again", "--uri",
         str(data_dir)], capture_output=True, text=True, env=_env(), timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "━" not in piped.stderr and "uploading" not in piped.stderr  # no bar in a pipe
