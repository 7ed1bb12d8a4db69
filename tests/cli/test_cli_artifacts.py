"""``modelyard artifacts list|get|put`` against a real embedded data folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelyard.artifacts.hashing import hash_bytes
from support.cli import Data


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "weights" / "w.bin").write_bytes(os.urandom(300_000))
    (root / "weights" / "b.bin").write_bytes(b"bias")
    return root


def test_put_list_get_a_directory(data: Data, local_dir: Path, tmp_path: Path) -> None:
    run_id = data.runs["r1"]
    out = data.ok("artifacts", "put", run_id, str(local_dir), "--path", "model").stdout
    assert "uploaded 3 files" in out and run_id in out and "'model'" in out

    listed = json.loads(data.ok("artifacts", "list", run_id, "--json").stdout)
    assert [e["path"] for e in listed] == ["model/config.json", "model/weights/b.bin",
                                           "model/weights/w.bin"]
    w = (local_dir / "weights" / "w.bin").read_bytes()
    assert listed[2] == {"path": "model/weights/w.bin", "size": len(w),
                         "digest": hash_bytes(w)}

    table = data.ok("artifacts", "list", run_id).stdout
    assert "model/weights/w.bin" in table and "293.0 KiB" in table
    assert hash_bytes(w)[:12] in table and hash_bytes(w) not in table
    assert "3 files" in table

    sub = json.loads(data.ok("artifacts", "list", run_id, "model/weights", "--json").stdout)
    assert [e["path"] for e in sub] == ["model/weights/b.bin", "model/weights/w.bin"]

    dest = tmp_path / "down"
    out = data.ok("artifacts", "get", run_id, "model", "--dest", str(dest)).stdout
    assert "downloaded 3 files" in out
    assert _tree(dest / "model") == _tree(local_dir)


def test_put_and_get_a_single_file(data: Data, local_dir: Path, tmp_path: Path) -> None:
    run_id = data.runs["r2"]
    config = local_dir / "config.json"
    assert "uploaded 1 file " in data.ok("artifacts", "put", run_id, str(config)).stdout
    assert [e["path"] for e in json.loads(data.ok("artifacts", "list", run_id,
                                                  "--json").stdout)] == ["config.json"]
    out = data.ok("artifacts", "get", run_id, "config.json", "--dest",
                  str(tmp_path / "d")).stdout
    assert "downloaded 1 file" in out
    assert (tmp_path / "d" / "config.json").read_bytes() == config.read_bytes()


def test_get_everything_with_dot(data: Data, local_dir: Path, tmp_path: Path) -> None:
    run_id = data.runs["r3"]
    data.ok("artifacts", "put", run_id, str(local_dir))
    data.ok("artifacts", "get", run_id, ".", "--dest", str(tmp_path / "all"))
    assert _tree(tmp_path / "all") == _tree(local_dir)


def test_symlink_escaping_the_upload_root_is_refused(data: Data, local_dir: Path,
                                                     tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    (local_dir / "weights" / "leak").symlink_to(secret)
    run_id = data.runs["r1"]
    message = data.error("artifacts", "put", run_id, str(local_dir))
    assert "symlink" in message and "outside" in message
    assert "has no artifacts" in data.ok("artifacts", "list", run_id).stdout  # nothing stored


def test_symlink_inside_the_root_is_followed(data: Data, local_dir: Path) -> None:
    (local_dir / "alias.json").symlink_to(local_dir / "config.json")
    run_id = data.runs["r1"]
    data.ok("artifacts", "put", run_id, str(local_dir))
    paths = [e["path"] for e in json.loads(data.ok("artifacts", "list", run_id, "--json").stdout)]
    assert "alias.json" in paths


def test_artifact_errors(data: Data, local_dir: Path, tmp_path: Path) -> None:
    run_id = data.runs["r1"]
    assert "'missing'" in data.error("artifacts", "list", run_id, "missing")
    assert "'missing.txt'" in data.error("artifacts", "get", run_id, "missing.txt")
    assert "UNSAFE_PATH" in data.error("artifacts", "get", run_id, "../etc/passwd")
    assert "UNSAFE_PATH" in data.error("artifacts", "put", run_id, str(local_dir),
                                       "--path", "../up")
    assert "does not exist" in data.error("artifacts", "put", run_id, str(tmp_path / "nope"))
    unknown = "f" * 32
    message = data.error("artifacts", "put", unknown, str(local_dir))
    assert unknown in message and "RUN_NOT_FOUND" in message
    assert unknown in data.error("artifacts", "get", unknown, "x")
    data.ok("runs", "delete", run_id)
    assert "deleted" in data.error("artifacts", "put", run_id, str(local_dir))


def test_put_and_get_through_a_server_in_parts(server: object, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a server a large file goes in resumable parts and several files at once."""
    import httpx
    from typer.testing import CliRunner

    from modelyard.cli.main import app
    from modelyard.wire import routes as r

    url = server.url  # type: ignore[attr-defined]
    monkeypatch.setenv("MODELYARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELYARD_UPLOAD_PART_MIB", "4")
    run_id = httpx.post(f"{url}{r.CREATE_RUN.path}", json={"experiment_id": "0"}).json()[
        "info"]["run_id"]
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    big = os.urandom(1 << 20) * 33 + b"tail"  # over the 32 MiB threshold: 9 parts of 4 MiB
    (src / "weights.bin").write_bytes(big)
    for i in range(5):
        (src / "sub" / f"f{i}.txt").write_text(f"file {i}")
    runner = CliRunner()
    put = runner.invoke(app, ["artifacts", "put", run_id, str(src), "--uri", url])
    assert put.exit_code == 0, put.output
    assert "uploaded 6 files (33.0 MiB)" in put.stdout
    listed = json.loads(runner.invoke(app, ["artifacts", "list", run_id, "--json", "--uri",
                                            url]).stdout)
    assert {e["path"]: e["digest"] for e in listed}["weights.bin"] == hash_bytes(big)
    get = runner.invoke(app, ["artifacts", "get", run_id, ".", "--dest", str(tmp_path / "d"),
                              "--uri", url])
    assert get.exit_code == 0, get.output
    assert _tree(tmp_path / "d") == _tree(src)
    assert not list((tmp_path / "cache" / "uploads").glob("*.json"))
    # The server's side of it: one multipart session (the big file), complete.
    sessions = list((tmp_path / "artifacts" / "uploads").iterdir())
    assert len(sessions) == 1 and (sessions[0] / "result.json").is_file()
