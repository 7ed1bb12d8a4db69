"""Everything modelyard creates for its data is private to the user who runs it, whatever the
umask: every folder 0700, every file 0600 (the database and its -wal and -shm files, blobs,
multipart staging files, part markers and locks, session files, temp files). Embedded mode
(the SDK and the CLI on a local data folder) and a real server over HTTP; real files, real
umasks. A folder that already exists keeps its mode, and ``permission_warnings`` says so."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import modelyard
from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.artifacts.uploads import UploadArea
from modelyard.backend.local import LocalBackend
from modelyard.backend.remote import RemoteBackend
from modelyard.cli.main import app as cli
from modelyard.client import api
from modelyard.settings import Settings
from modelyard.stores.sql.engine import make_engine
from modelyard.tracking.data_permissions import permission_warnings
from support.servers import ServerThread

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")

MIB = 1 << 20
UMASKS = [0o022, 0o000]
DIR_MODE = 0o700
FILE_MODE = 0o600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(params=UMASKS, ids=oct)
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for the test body (process-wide: restored whatever happens)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def walk(top: Path) -> dict[str, int]:
    """Every folder and file under ``top`` (itself included), relative path -> mode."""
    found: dict[str, int] = {}
    for folder, _, files in os.walk(top):
        for path in (Path(folder), *(Path(folder) / f for f in files)):
            found[path.relative_to(top).as_posix()] = mode(path)
    return found


def assert_private(top: Path) -> dict[str, int]:
    found = walk(top)
    wrong = []
    for rel, got in sorted(found.items()):
        path = top / rel
        want = DIR_MODE if path.is_dir() and not path.is_symlink() else FILE_MODE
        if got != want:
            wrong.append(f"{rel or '.'}: {got:04o} (want {want:04o})")
    assert not wrong, f"under {top}, not private:\n  " + "\n  ".join(wrong)
    return found


def assert_covered(found: dict[str, int], data: str) -> None:
    """The walk saw every kind of thing modelyard keeps (so the check above means something)."""
    names = set(found)
    kinds: dict[str, Callable[[str], bool]] = {
        "the data folder": lambda n: n == data,
        "the database": lambda n: n == f"{data}/modelyard.db",
        "its -wal file": lambda n: n == f"{data}/modelyard.db-wal",
        "its -shm file": lambda n: n == f"{data}/modelyard.db-shm",
        "a blob": lambda n: n.startswith(f"{data}/artifacts/objects/") and n.count("/") == 4,
        "the temp folder": lambda n: n == f"{data}/artifacts/tmp",
        "the trash folder": lambda n: n == f"{data}/artifacts/trash",
        "a staging file": lambda n: n.startswith(f"{data}/artifacts/uploads/")
        and n.endswith("/data"),
        "a part marker": lambda n: n.startswith(f"{data}/artifacts/uploads/")
        and n.endswith("/parts/1"),
        "a part lock": lambda n: n.endswith("/parts/1.lock"),
        "a session file": lambda n: n.endswith("/session.json"),
    }
    missing = [kind for kind, seen in kinds.items() if not any(map(seen, names))]
    assert not missing, f"never created, so never checked: {missing}; saw {sorted(names)}"


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A file and a folder to log (created before the umask under test matters)."""
    src = tmp_path / "inputs"
    (src / "folder" / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(os.urandom(3 * MIB))  # multipart over HTTP
    (src / "folder" / "a.txt").write_text("a")
    (src / "folder" / "sub" / "b.txt").write_text("b")
    return src / "model.bin", src / "folder"


def _log_through_sdk(b: Any, monkeypatch: pytest.MonkeyPatch, file: Path, folder: Path) -> str:
    """An experiment, runs with metrics and artifacts, one run deleted, through the SDK."""
    monkeypatch.setattr(api, "backend", lambda uri=None: b)
    monkeypatch.setenv("MODELYARD_CAPTURE_SOURCE", "false")
    modelyard.create_experiment("private")
    with modelyard.start_run(experiment="private") as run:
        for step in range(20):
            run.log_metrics({"loss": 1 / (step + 1), "acc": step / 20}, step=step)
        run.log_param("lr", 0.1)
        run.log_artifact(file, "weights")
        run.log_artifacts(folder, "files")
        run.log_text("notes", "notes.txt")
    with modelyard.start_run(experiment="private") as doomed:
        doomed.log_text("only here", "doomed.txt")  # a blob that gc frees (the trash)
    modelyard.delete_run(doomed.id)
    time.sleep(0.01)  # a clock tick, not an event to wait for: deleted strictly before "now"
    report = modelyard.collect_garbage(timedelta(0), dry_run=False)
    assert report.blobs >= 1
    return run.id


def _unfinished_upload(area: UploadArea, run_id: str) -> None:
    """A multipart upload left open: its staging file, one part (marker and lock) received."""
    session = area.create(run_id=run_id, path="open.bin", size=2 * MIB, part_size=MIB,
                          digest=None, now_ms=0)
    part = area.open_part(session, 1)
    try:
        part.write([b"p" * MIB])
        assert part.commit()
    finally:
        part.close()


def test_embedded_mode_keeps_everything_private(umask: int, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    file, folder = _inputs(tmp_path)
    top = tmp_path / "home"  # created by modelyard too, as the data folder's parent
    data = top / "modelyard-data"
    settings = Settings.for_data_dir(data)
    backend = LocalBackend(settings)
    try:
        run_id = _log_through_sdk(backend, monkeypatch, file, folder)
        _unfinished_upload(UploadArea(FsspecBlobStore(settings.artifacts_url)), run_id)
        # The CLI on the same data folder: an upload and a collection.
        for args in (["artifacts", "put", run_id, str(folder), "--path", "cli"],
                     ["gc", "--older-than", "0s", "--no-dry-run"]):
            result = CliRunner().invoke(cli, [*args, "--uri", str(data)])
            assert result.exit_code == 0, result.output
        found = assert_private(top)  # the database open: -wal and -shm exist
        assert_covered(found, "modelyard-data")
    finally:
        backend.close()
    assert_private(top)
    assert permission_warnings(settings) == []


def test_a_server_keeps_everything_private(umask: int, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    file, folder = _inputs(tmp_path)
    top = tmp_path / "srv"
    data = top / "modelyard-data"
    settings = Settings.for_data_dir(data)
    with ServerThread(settings) as srv:
        remote = RemoteBackend(srv.url, part_size=MIB, multipart_threshold=MIB)
        try:
            run_id = _log_through_sdk(remote, monkeypatch, file, folder)
            # A multipart upload left open, over REST: one part of two received.
            with httpx.Client(base_url=f"{srv.url}/api/v1") as http:
                opened = http.post(f"/runs/{run_id}/uploads",
                                   json={"path": "open.bin", "size": 2 * MIB,
                                         "part_size": MIB})
                assert opened.status_code == 201, opened.text
                upload_id = opened.json()["upload_id"]
                sent = http.put(f"/runs/{run_id}/uploads/{upload_id}/parts/1",
                                content=b"p" * MIB,
                                headers={"content-type": "application/octet-stream"})
                assert sent.status_code == 200, sent.text
            result = CliRunner().invoke(cli, ["gc", "--older-than", "0s", "--no-dry-run",
                                              "--uri", srv.url])
            assert result.exit_code == 0, result.output
            found = assert_private(top)  # the server running: -wal and -shm exist
            assert_covered(found, "modelyard-data")
        finally:
            remote.close()
    assert_private(top)
    assert permission_warnings(settings) == []


def test_a_database_elsewhere_is_private_too(umask: int, tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "meta.db"
    engine = make_engine(str(db))  # a bare path, as --db takes it
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        found = assert_private(tmp_path / "a")
        assert {"b/meta.db-wal", "b/meta.db-shm"} <= set(found)
    finally:
        engine.dispose()


def test_existing_folders_keep_their_mode_and_are_warned_about(umask: int,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "old-install"
    (data / "artifacts").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "artifacts", 0o750)
    settings = Settings.for_data_dir(data)
    backend = LocalBackend(settings)
    try:
        run_id = backend.create_run("0").info.run_id
        backend.upload_bytes(run_id, "m.bin", b"weights")
    finally:
        backend.close()
    assert mode(data) == 0o755  # left as the operator had it
    assert mode(data / "artifacts") == 0o750
    # What modelyard created inside is private all the same.
    found = walk(data)
    assert found["modelyard.db"] == FILE_MODE
    assert found["artifacts/objects"] == DIR_MODE
    # The database file is private (created so), the artifact root is not.
    warnings = permission_warnings(settings)
    assert len(warnings) == 1, warnings
    assert str(data / "artifacts") in warnings[0] and "0750" in warnings[0]
    os.chmod(data / "modelyard.db", 0o644)  # a database an older modelyard created
    warnings = permission_warnings(settings)
    assert len(warnings) == 2, warnings
    assert str(data / "modelyard.db") in warnings[0] and "0644" in warnings[0]
    assert "chmod 600" in warnings[0]
    os.chmod(data / "modelyard.db", 0o600)
    os.chmod(data / "artifacts", 0o700)
    assert permission_warnings(settings) == []


def test_remote_stores_and_missing_folders_give_no_warning(tmp_path: Path) -> None:
    absent = Settings.for_data_dir(tmp_path / "not-yet")
    assert permission_warnings(absent) == []  # created private when first used
    remote = Settings(db_url="postgresql://u@db.example/modelyard",
                      artifacts_url="memory://permissions-test")
    assert permission_warnings(remote) == []
