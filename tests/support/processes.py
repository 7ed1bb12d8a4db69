"""Processes for the reliability suite: the real ``modelyard server`` as a subprocess, and SDK
client processes running ``scripts/sdk_worker.py``.

Every process gets its own process group (so a server's uvicorn workers die with it) and writes
its output to a file under the test's ``tmp_path``; :func:`show_on_failure` prints those files
when a test fails, so pytest shows them in the "Captured stdout" section.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from support.servers import CLIENT_HOOKS
from support.waiting import wait_until

# Run by path, from a folder of its own: a script's folder goes first on its sys.path, and this
# one holds nothing that could shadow a module the SDK imports.
WORKER_SCRIPT = Path(__file__).resolve().parent / "scripts" / "sdk_worker.py"


def modelyard_bin() -> str:
    """The ``modelyard`` console script of the interpreter running the tests (the venv's)."""
    candidate = Path(sys.executable).parent / "modelyard"
    return str(candidate) if candidate.exists() else "modelyard"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no stray ``MODELYARD_*`` setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               MODELYARD_CAPTURE_SOURCE="false", COLUMNS="400")
    env.update(extra)
    return env


def tail(path: Path, limit: int = 8000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def terminate(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> int:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; the exit code."""
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(10)
    _kill_group(proc, signal.SIGKILL)  # leftovers of the group (uvicorn workers), if any
    return proc.returncode


class ServerProcess:
    """``modelyard server`` in its own process group, output in ``log_path``."""

    def __init__(self, *, db_url: str, artifacts: Path, port: int, log_path: Path,
                 workers: int = 1, extra_args: Sequence[str] = ()) -> None:
        self.db_url = db_url
        self.artifacts = artifacts
        self.port = port
        self.workers = workers
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def argv(self) -> list[str]:
        return [modelyard_bin(), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--db", self.db_url, "--artifacts", str(self.artifacts),
                "--workers", str(self.workers), *self.extra_args]

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server and wait until ``GET /health`` answers 200."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=child_env(),
                                         start_new_session=True)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        proc = self.proc
        assert proc is not None
        with httpx.Client(base_url=self.url, timeout=2.0, event_hooks=CLIENT_HOOKS) as http:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with code {proc.returncode} before answering "
                        f"/health; its log:\n{tail(self.log_path)}"
                    )
                try:
                    return http.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                wait_until(healthy, timeout=timeout, interval=0.05,
                           what=f"{self.url}/health to answer 200")
            except AssertionError as exc:
                raise RuntimeError(f"{exc}; its log:\n{tail(self.log_path)}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group (parent and uvicorn workers) and reap the parent."""
        assert self.proc is not None
        _kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_worker(args: Sequence[str], *, out: Path, err: Path) -> subprocess.Popen[bytes]:
    """Run ``scripts/sdk_worker.py`` with ``args`` in its own process group; its stdout and
    stderr to files."""
    with out.open("wb") as o, err.open("wb") as e:
        return subprocess.Popen([sys.executable, str(WORKER_SCRIPT), *args],
                                stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=child_env(),
                                start_new_session=True)


def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[int | None]:
    """Wait for every process until a shared deadline; the exit codes (None: still running)."""
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    return codes


@contextmanager
def show_on_failure(*paths: Path) -> Iterator[None]:
    """On an exception, print the named log files (pytest shows them with the failure)."""
    try:
        yield
    except BaseException:
        for path in paths:
            for file in sorted(path.glob("*")) if path.is_dir() else [path]:
                if file.is_file() and file.suffix in (".log", ".out", ".err", ".txt"):
                    print(f"----- {file.name} -----\n{tail(file)}")
        raise


def run_cli(args: Sequence[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``modelyard ARGS`` to completion; output captured as text."""
    return subprocess.run([modelyard_bin(), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=child_env(), timeout=timeout, check=False)


def assert_clean_log(path: Path) -> None:
    """No traceback, ERROR line or 5xx-worthy failure in a server log."""
    text = path.read_text(errors="replace")
    bad = [ln for ln in text.splitlines()
           if "Traceback" in ln or ln.startswith(("ERROR", "CRITICAL"))
           or "request failed" in ln or "unexpected error" in ln]
    assert not bad, f"{path.name} reports failures:\n{tail(path)}"


def squash(text: str) -> str:
    """Whitespace-normalised text (rich wraps long lines when not writing to a terminal)."""
    return " ".join(text.split())
