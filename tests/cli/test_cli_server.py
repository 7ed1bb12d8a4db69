"""The installed ``modelyard`` console script against a real ``modelyard server`` process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import modelyard
from support.servers import free_port, wait_healthy

SCRIPT = Path(sys.executable).with_name("modelyard")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**env, "COLUMNS": "240", "MODELYARD_CAPTURE_SOURCE": "false", **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=env or _env())


@contextlib.contextmanager
def serving(tmp_path: Path, *flags: str, host: str = "127.0.0.1") -> Iterator[tuple[str, Path]]:
    """``modelyard server`` in a process, answering /health: its URL and its log file."""
    port = free_port()
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(SCRIPT), "server", "--host", host, "--port", str(port),
         "--data-dir", str(tmp_path / "srv"), *flags],
        stdout=log, stderr=subprocess.STDOUT, env=_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=30, log=log_path)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    with serving(tmp_path) as (url, _):
        yield url


def test_console_script_against_a_real_server(server_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert SCRIPT.is_file()
    created = cli("experiments", "create", "remote", "--uri", server_url)
    assert created.returncode == 0, created.stderr
    exp_id = created.stdout.strip()
    assert exp_id.isdigit()

    monkeypatch.setenv("MODELYARD_CAPTURE_SOURCE", "false")
    modelyard.set_uri(server_url)
    with modelyard.start_run(experiment="remote", name="over-http", params={"lr": 0.5},
                             capture_source=False) as run:
        run.log_metric("acc", 0.75)

    # MODELYARD_URI is the default for --uri.
    listed = cli("runs", "list", "--json", env=_env(MODELYARD_URI=server_url))
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["run_id"], r["run_name"], r["experiment_id"]) for r in runs] == [
        (run.id, "over-http", exp_id)]
    assert runs[0]["params"] == {"lr": "0.5"} and runs[0]["metrics"] == {"acc": 0.75}

    table = cli("runs", "list", "-e", "remote", "--uri", server_url)
    header, row = table.stdout.splitlines()
    assert header.split() == ["run", "id", "name", "status", "start", "acc", "params.lr"]
    assert row.startswith(run.id + "  ") and "0.75" in row.split()

    src = tmp_path / "up"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.bin").write_bytes(os.urandom(70_000))
    (src / "readme.txt").write_text("hello")
    put = cli("artifacts", "put", run.id, str(src), "--path", "pkg", "--uri", server_url)
    assert put.returncode == 0, put.stderr
    assert "uploaded 2 files" in put.stdout
    got = cli("artifacts", "get", run.id, "pkg", "--dest", str(tmp_path / "down"),
              "--uri", server_url)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "down/pkg/sub/data.bin").read_bytes() == (src / "sub/data.bin").read_bytes()
    assert (tmp_path / "down/pkg/readme.txt").read_text() == "hello"

    unknown = "0" * 32
    missing = cli("runs", "show", unknown, "--uri", server_url)
    assert missing.returncode != 0 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1
    assert unknown in missing.stderr and "RUN_NOT_FOUND" in missing.stderr

    bad = cli("runs", "list", "--filter", "params.lr = ", "--uri", server_url)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "position" in bad.stderr


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("runs", "list", "--uri", url)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "UNAVAILABLE" in result.stderr and "127.0.0.1" in result.stderr


def test_binding_beyond_loopback_needs_an_explicit_insecure_flag(tmp_path: Path) -> None:
    """Until governance adds authentication, a server others can reach must be asked for."""
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.com"):
        refused = cli("server", "--host", host, "--port", str(free_port()),
                      "--data-dir", str(tmp_path / "srv"))
        assert refused.returncode != 0, host
        assert "--insecure-no-auth" in refused.stderr and "authentication" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "srv").exists()  # refused before anything was created
    with serving(tmp_path, "--insecure-no-auth", host="0.0.0.0") as (url, log):
        assert httpx.get(f"{url}/health").status_code == 200
    assert "warning: listening on 0.0.0.0 without authentication" in log.read_text()


def test_answering_any_host_is_warned_about(tmp_path: Path) -> None:
    with serving(tmp_path, "--allowed-host", "*") as (url, log):
        assert httpx.get(f"{url}/health", headers={"host": "anything.example"}).status_code == 200
    assert "warning: --allowed-host '*' answers any Host header" in log.read_text()


def test_an_allowed_origin_flag_lets_that_page_write(tmp_path: Path) -> None:
    ui = "https://ui.example.com"
    with serving(tmp_path, "--allowed-origin", ui) as (url, _):
        made = httpx.post(f"{url}/api/v1/experiments", json={"name": "from-ui"},
                          headers={"origin": ui})
        assert made.status_code == 201, made.text
        forged = httpx.post(f"{url}/api/v1/experiments", json={"name": "forged"},
                            headers={"origin": "https://evil.example"})
        assert forged.status_code == 403


def test_an_artifact_store_open_to_others_is_warned_about(tmp_path: Path) -> None:
    (tmp_path / "srv" / "artifacts").mkdir(parents=True)  # an older install's modes
    os.chmod(tmp_path / "srv" / "artifacts", 0o755)
    with serving(tmp_path) as (url, log):
        assert httpx.get(f"{url}/health").status_code == 200
    text = log.read_text()
    assert f"warning: the artifact store {tmp_path / 'srv' / 'artifacts'} is open" in text
    assert "chmod 700" in text
