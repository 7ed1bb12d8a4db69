"""Multipart upload sessions in the blob store's root: one suite, on a local folder and on an
fsspec memory filesystem (which stores each part as its own object)."""

from __future__ import annotations

import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.core import url_to_fs

from modelyard.artifacts import FsspecBlobStore, hash_bytes
from modelyard.artifacts.uploads import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    UploadArea,
    UploadSession,
    describe_parts,
    validate_upload_id,
)
from modelyard.errors import Conflict, InvalidArgument, NotFound, Unavailable

MIB = 1 << 20
RUN = "a" * 32


def test_describe_parts() -> None:
    assert describe_parts([]) == ""
    assert describe_parts([3]) == "3"
    assert describe_parts([10, 9, 1, 2, 3, 7]) == "1-3, 7, 9-10"


@pytest.mark.parametrize("bad", ["", "0" * 31, "0" * 33, "A" * 32, "../" + "0" * 29,
                                 "0" * 31 + "/", "0" * 31 + "\x00", "\uff10" * 32, None, 12])
def test_malformed_upload_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_upload_id(bad)
    assert info.value.field == "upload_id"


def test_part_spans() -> None:
    s = UploadSession("0" * 32, RUN, "f", size=5 * MIB + 3, part_size=2 * MIB, created_time=0)
    assert s.part_count == 3
    assert [s.part_span(n) for n in (1, 2, 3)] == [(0, 2 * MIB), (2 * MIB, 2 * MIB),
                                                    (4 * MIB, MIB + 3)]
    for bad in (0, 4, -1, True, "1"):
        with pytest.raises(InvalidArgument) as info:
            s.check_part(bad)
        assert info.value.field == "part_number"


class UploadAreaContract:
    @pytest.fixture
    def blobs(self, store_url: str) -> FsspecBlobStore:
        return FsspecBlobStore(store_url)

    @pytest.fixture
    def area(self, blobs: FsspecBlobStore) -> UploadArea:
        return UploadArea(blobs)

    def _create(self, area: UploadArea, size: int, part_size: int = MIB,
                digest: str | None = None) -> UploadSession:
        return area.create(run_id=RUN, path="big.bin", size=size, part_size=part_size,
                           digest=digest, now_ms=int(time.time() * 1000))

    def _send(self, area: UploadArea, session: UploadSession, number: int, data: bytes,
              pieces: int = 3) -> bool:
        writer = area.open_part(session, number)
        try:
            step = max(1, -(-len(data) // pieces))
            for i in range(0, len(data), step):
                writer.write([data[i : i + step]])
            return writer.commit()
        finally:
            writer.close()

    def _part(self, data: bytes, session: UploadSession, n: int) -> bytes:
        offset, length = session.part_span(n)
        return data[offset : offset + length]

    @pytest.mark.parametrize("part_size", [MIN_PART_SIZE - 1, MAX_PART_SIZE + 1, 0, -MIB,
                                           True, 1.5, "1048576"])
    def test_part_size_bounds(self, area: UploadArea, part_size: object) -> None:
        with pytest.raises(InvalidArgument) as info:
            area.create(run_id=RUN, path="f", size=10, part_size=part_size,  # type: ignore[arg-type]
                        digest=None, now_ms=0)
        assert info.value.field == "part_size"

    def test_size_bounds(self, area: UploadArea) -> None:
        with pytest.raises(InvalidArgument) as info:
            self._create(area, -1)
        assert info.value.field == "size"
        with pytest.raises(InvalidArgument) as info:
            self._create(area, MAX_PARTS * MIB + 1)
        assert info.value.field == "part_size" and "1048577" in info.value.message
        assert self._create(area, MAX_PARTS * MIB).part_count == MAX_PARTS
        with pytest.raises(InvalidArgument) as info:
            self._create(area, 10, digest="not-hex")
        assert info.value.field == "digest"

    def test_parts_in_any_order_then_stage(self, area: UploadArea, blobs: FsspecBlobStore) -> None:
        data = os.urandom(3 * MIB + 123)
        s = self._create(area, len(data), digest=hash_bytes(data))
        assert area.get(s.upload_id) == s
        assert s.part_count == 4
        for n in (3, 1, 4):
            assert self._send(area, s, n, self._part(data, s, n)) is True
        assert area.acknowledged(s) == [1, 3, 4]
        assert area.missing_parts(s) == [2]
        with pytest.raises(Conflict) as info:
            area.stage(s)
        assert "missing part 2 of 4" in info.value.message and info.value.field == "parts"
        self._send(area, s, 2, self._part(data, s, 2))
        staged = area.stage(s)
        assert staged.ref.digest == hash_bytes(data) and staged.ref.size == len(data)
        assert not blobs.exists(staged.ref.digest)  # staged, not visible
        blobs.publish(staged)
        blobs.settle(staged)
        assert blobs.read_bytes(staged.ref.digest) == data
        area.finish(s, {"path": "big.bin", "digest": staged.ref.digest, "size": len(data)})
        assert area.result(s) == {"path": "big.bin", "digest": staged.ref.digest,
                                  "size": len(data)}
        with pytest.raises(Conflict, match="already complete"):
            area.open_part(s, 1)
        assert blobs.read_bytes(staged.ref.digest) == data  # freeing the staging kept the blob

    def test_a_resent_part_is_compared_never_rewritten(self, area: UploadArea) -> None:
        data = os.urandom(2 * MIB)
        s = self._create(area, len(data))
        part = self._part(data, s, 1)
        assert self._send(area, s, 1, part) is True
        assert self._send(area, s, 1, part, pieces=7) is False  # the same bytes again: fine
        forged = bytes([part[0] ^ 1]) + part[1:]
        with pytest.raises(Conflict, match="different bytes"):
            self._send(area, s, 1, forged)
        self._send(area, s, 2, self._part(data, s, 2))
        assert area.stage(s).ref.digest == hash_bytes(data)  # the first bytes were kept

    def test_wrong_part_lengths(self, area: UploadArea) -> None:
        s = self._create(area, MIB + 10)
        writer = area.open_part(s, 2)
        try:
            with pytest.raises(InvalidArgument, match="10 bytes; more arrived"):
                writer.write([b"x" * 11])
            writer.write([b"x" * 4])
            with pytest.raises(InvalidArgument, match="only 4 arrived"):
                writer.commit()
        finally:
            writer.close()
        assert area.acknowledged(s) == []

    def test_an_empty_upload_has_no_parts(self, area: UploadArea) -> None:
        s = self._create(area, 0)
        assert s.part_count == 0 and area.missing_parts(s) == []
        assert area.stage(s).ref.digest == hash_bytes(b"")

    def test_unknown_sessions_and_abort(self, area: UploadArea,
                                        backend: tuple[object, str]) -> None:
        with pytest.raises(NotFound) as info:
            area.get(uuid.uuid4().hex)
        assert info.value.field == "upload_id"
        s = self._create(area, 5 * MIB)
        self._send(area, s, 1, os.urandom(MIB))
        assert area.abort(s.upload_id) >= MIB  # the part it had staged
        with pytest.raises(NotFound):
            area.get(s.upload_id)
        with pytest.raises(NotFound):
            area.abort(s.upload_id)
        fs, root = backend
        assert not fs.exists(f"{root}/uploads/{s.upload_id}")  # type: ignore[attr-defined]

    def test_sweep_removes_idle_sessions_only(self, area: UploadArea) -> None:
        idle = self._create(area, 2 * MIB)
        self._send(area, idle, 1, os.urandom(MIB))
        now = time.time()
        assert area.sweep(before=now - 3600, dry_run=False) == (0, 0)
        sessions, size = area.sweep(before=now + 3600, dry_run=True)
        assert sessions == 1 and size >= MIB
        assert area.get(idle.upload_id) == idle
        assert area.sweep(before=now + 3600, dry_run=False) == (1, size)
        with pytest.raises(NotFound):
            area.get(idle.upload_id)


class TestLocalUploadArea(UploadAreaContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "blobs")

    @pytest.fixture
    def backend(self, store_url: str) -> tuple[object, str]:
        fs, root = url_to_fs(store_url)
        return fs, str(root)

    def test_the_staging_file_is_sparse_and_private(self, area: UploadArea,
                                                     store_url: str) -> None:
        s = self._create(area, 200 * MIB, part_size=64 * MIB)
        data = Path(store_url) / "uploads" / s.upload_id / "data"
        assert data.stat().st_size == 200 * MIB
        assert data.stat().st_blocks * 512 < MIB  # nothing allocated before parts arrive
        if sys.platform != "win32":
            assert stat.S_IMODE((Path(store_url) / "uploads").stat().st_mode) == 0o700
            assert stat.S_IMODE(data.stat().st_mode) == 0o600

    def test_one_part_is_received_by_one_request_at_a_time(self, area: UploadArea) -> None:
        s = self._create(area, 2 * MIB)
        first = area.open_part(s, 1)
        try:
            with pytest.raises(Unavailable, match="being received by another request"):
                area.open_part(s, 1)
            other = area.open_part(s, 2)  # another part is fine meanwhile
            other.close()
        finally:
            first.close()
        area.open_part(s, 1).close()  # released with the first request

    def test_staging_avoids_a_copy(self, area: UploadArea, blobs: FsspecBlobStore,
                                   store_url: str) -> None:
        data = os.urandom(2 * MIB)
        s = self._create(area, len(data))
        for n in (1, 2):
            self._send(area, s, n, self._part(data, s, n))
        staged = area.stage(s)
        staging = Path(store_url) / "uploads" / s.upload_id / "data"
        assert os.stat(staged.temp).st_ino == staging.stat().st_ino  # a link, not a copy
        blobs.publish(staged)
        blobs.settle(staged)


class TestMemoryUploadArea(UploadAreaContract):
    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        url = f"memory://uploads-{uuid.uuid4().hex}"
        yield url
        fs, root = url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)

    @pytest.fixture
    def backend(self, store_url: str) -> tuple[object, str]:
        fs, root = url_to_fs(store_url)
        return fs, str(root).rstrip("/")
