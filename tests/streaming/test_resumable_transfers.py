"""The SDK's large-file paths against a real server: parts in parallel, a journal that resumes
an interrupted upload, downloads that resume with HTTP Range, connections cut mid-transfer."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.artifacts import hash_bytes, hash_file
from modelyard.backend.multipart import UploadJournal
from modelyard.backend.remote import RemoteBackend
from modelyard.backend.transfer import partial_path
from modelyard.errors import IntegrityFailure
from modelyard.wire import routes as r
from support.proxy import CuttingProxy
from support.servers import CLIENT_HOOKS

MIB = 1 << 20


def _file(path: Path, size: int) -> Path:
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for i in range(0, size, MIB):
            f.write((i.to_bytes(8, "little") + block[8:])[: min(MIB, size - i)])
    return path


def _backend(url: str, tmp: Path, **kwargs: Any) -> RemoteBackend:
    return RemoteBackend(url, cache_dir=tmp / "cache", part_size=MIB,
                         multipart_threshold=2 * MIB, **kwargs)


@pytest.fixture
def run_id(server: Any) -> str:
    resp = httpx.post(f"{server.url}{r.CREATE_RUN.path}", json={"experiment_id": "0"})
    return str(resp.json()["info"]["run_id"])


def _sent(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == "modelyard.transfer"
            and rec.getMessage().startswith("uploaded")]


def test_large_files_go_in_parts_small_ones_in_one_request(
    server: Any, run_id: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = _file(tmp_path / "big.bin", 5 * MIB + 77)
    small = _file(tmp_path / "small.bin", MIB)
    b = _backend(server.url, tmp_path)
    progress: list[int] = []
    with caplog.at_level(logging.INFO, logger="modelyard.transfer"):
        entry = b.upload_file(run_id, "d/big.bin", big, on_progress=progress.append)
        b.upload_file(run_id, "d/small.bin", small)
    assert entry.digest == hash_file(big).digest and entry.size == 5 * MIB + 77
    assert sum(progress) == entry.size
    assert _sent(caplog) == ["uploaded d/big.bin in 6 parts: sent 6, 0 already on the server"]
    assert not list((tmp_path / "cache" / "uploads").glob("*.json"))  # journal cleared
    listed = {e.path: e.digest for e in b.list_artifacts(run_id)}
    assert listed == {"d/big.bin": entry.digest, "d/small.bin": hash_file(small).digest}
    dest = tmp_path / "down" / "big.bin"
    got = b.download_file(run_id, "d/big.bin", dest, digest=entry.digest)
    assert got.digest == entry.digest and hash_file(dest).digest == entry.digest
    b.close()


def test_a_journaled_upload_sends_only_the_missing_parts(
    server: Any, run_id: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _file(tmp_path / "model.bin", 6 * MIB)
    data = src.read_bytes()
    api = httpx.Client(base_url=server.url, event_hooks=CLIENT_HOOKS)
    # What a client killed after three parts leaves: a session holding them, and its journal.
    state = api.post(r.CREATE_UPLOAD.url(run_id=run_id),
                     json={"path": "model.bin", "size": len(data), "part_size": MIB}).json()
    for n in (1, 2, 5):
        url = r.UPLOAD_PART.url(run_id=run_id, upload_id=state["upload_id"], part_number=str(n))
        assert api.put(url, content=data[(n - 1) * MIB : n * MIB]).status_code == 200
    journal = UploadJournal(tmp_path / "cache" / "uploads")
    key = UploadJournal.key(server.url, run_id, "model.bin", src, src.stat())
    journal.save(key, state["upload_id"])
    b = _backend(server.url, tmp_path)
    with caplog.at_level(logging.INFO, logger="modelyard.transfer"):
        entry = b.upload_file(run_id, "model.bin", src)
    assert entry.digest == hash_bytes(data)
    assert _sent(caplog) == [
        "uploaded model.bin in 6 parts: sent 3, 3 already on the server (resumed)"]
    assert journal.load(key) is None
    # A changed file is another key: it never resumes the old content's session.
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    assert UploadJournal.key(server.url, run_id, "model.bin", src, src.stat()) != key
    b.close()
    api.close()


def test_an_upload_survives_cut_connections(server: Any, run_id: str, tmp_path: Path) -> None:
    src = _file(tmp_path / "cut.bin", 4 * MIB + 5)
    # Every third connection dies after half a MiB of request bytes.
    with CuttingProxy(server.port,
                      lambda n, way, sent: way == "up" and n % 3 == 2 and sent > MIB // 2
                      ) as proxy:
        b = _backend(proxy.url, tmp_path, parallel_parts=2)
        entry = b.upload_file(run_id, "cut.bin", src)
        b.close()
    assert proxy.cuts >= 1
    assert entry.digest == hash_file(src).digest
    direct = httpx.get(f"{server.url}{r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path='cut.bin')}")
    assert hash_bytes(direct.content) == entry.digest


def test_a_download_resumes_with_range_after_a_cut(server: Any, run_id: str,
                                                   tmp_path: Path) -> None:
    src = _file(tmp_path / "dl.bin", 3 * MIB)
    b = _backend(server.url, tmp_path)
    entry = b.upload_file(run_id, "dl.bin", src)
    b.close()
    with CuttingProxy(server.port,
                      lambda n, way, got: way == "down" and n == 1 and got > MIB) as proxy:
        b = _backend(proxy.url, tmp_path)
        dest = tmp_path / "out" / "dl.bin"
        progress: list[int] = []
        got = b.download_file(run_id, "dl.bin", dest, on_progress=progress.append)
        b.close()
    assert proxy.cuts == 1 and proxy.connections == 2
    assert b"range: bytes=" in proxy.requests[1].lower()  # the second GET asked for the rest
    assert got.digest == entry.digest and hash_file(dest).digest == entry.digest
    assert not partial_path(dest, entry.digest).exists()


def test_a_kept_partial_download_is_resumed_or_refused(server: Any, run_id: str,
                                                       tmp_path: Path) -> None:
    data = _file(tmp_path / "p.bin", 3 * MIB).read_bytes()
    b = _backend(server.url, tmp_path)
    entry = b.upload_file(run_id, "p.bin", tmp_path / "p.bin")
    dest = tmp_path / "dl" / "p.bin"
    dest.parent.mkdir()
    partial = partial_path(dest, entry.digest)
    partial.write_bytes(data[: MIB + 3])  # what an earlier, killed process had received
    progress: list[int] = []
    b.download_file(run_id, "p.bin", dest, digest=entry.digest, on_progress=progress.append)
    assert dest.read_bytes() == data and not partial.exists()
    assert progress[0] == MIB + 3  # counted as already there, not fetched again

    dest.unlink()
    partial.write_bytes(b"\0" * MIB)  # a corrupt prefix: the whole-file digest catches it
    with pytest.raises(IntegrityFailure):
        b.download_file(run_id, "p.bin", dest, digest=entry.digest)
    assert not dest.exists() and not partial.exists()
    b.download_file(run_id, "p.bin", dest, digest=entry.digest)  # and the next try is clean
    assert dest.read_bytes() == data

    partial.write_bytes(data + b"extra")  # longer than the artifact: 416, then from the start
    dest.unlink()
    b.download_file(run_id, "p.bin", dest, digest=entry.digest)
    assert dest.read_bytes() == data
    b.close()


def test_several_files_travel_at_once(server: Any, run_id: str, tmp_path: Path) -> None:
    """``log_artifacts`` (and so ``artifacts put``) sends a folder's files over several
    connections at the same time: each connection's request is held up for a moment at the
    relay, and the uploads still start together instead of one after the other."""
    import threading
    import time

    from modelyard.client.run import ActiveRun

    started: dict[int, float] = {}
    lock = threading.Lock()

    def hold_each_request(number: int, way: str, relayed: int) -> bool:
        if way == "up":
            with lock:
                first = number not in started
                if first:
                    started[number] = time.monotonic()
            if first:
                time.sleep(0.4)  # a slow link for this connection: the behaviour under test
        return False

    folder = tmp_path / "outputs"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.txt").write_text(f"file {i}" * 100)
    with CuttingProxy(server.port, hold_each_request) as proxy:
        b = RemoteBackend(proxy.url, cache_dir=tmp_path / "cache")
        run = ActiveRun(b, b.get_run(run_id))
        try:
            began = time.monotonic()
            assert sorted(run.log_artifacts(folder, path="out")) == [
                f"out/f{i}.txt" for i in range(4)]
            took = time.monotonic() - began
        finally:
            run.end()
            b.close()
    uploads = sorted(started.values())[-4:]
    assert uploads[-1] - uploads[0] < 0.3, uploads  # all four under way together
    assert took < 4 * 0.4, took  # one after the other would take four holds at least
    direct = RemoteBackend(server.url)
    try:
        listed = {e.path for e in direct.list_artifacts(run_id, "out")}
    finally:
        direct.close()
    assert listed == {f"out/f{i}.txt" for i in range(4)}
