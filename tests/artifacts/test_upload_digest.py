"""The digest of a local multipart upload computed while parts arrive, and large transfers
that leave the page cache as they found it."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from modelyard.artifacts import FsspecBlobStore, hash_bytes
from modelyard.artifacts.page_cache import LARGE_FILE, WriteBehind, releasing_reader
from modelyard.artifacts.upload_digest import PrefixHashers
from modelyard.artifacts.uploads import UploadArea, UploadSession
from modelyard.backend.files import write_verified
from modelyard.errors import Conflict, NotFound
from support.page_cache import honours_dontneed, linux_only, resident_bytes

MIB = 1 << 20
RUN = "b" * 32


def _create(area: UploadArea, size: int, part_size: int = MIB) -> UploadSession:
    return area.create(run_id=RUN, path="model.bin", size=size, part_size=part_size,
                       digest=None, now_ms=int(time.time() * 1000))


def _send(area: UploadArea, s: UploadSession, n: int, data: bytes) -> None:
    offset, length = s.part_span(n)
    writer = area.open_part(s, n)
    try:
        writer.write([data[offset:offset + length]])
        writer.commit()
    finally:
        writer.close()


def _covered(area: UploadArea, s: UploadSession) -> int:
    return area._prefixes.get(area.session_dir(s.upload_id), s).covered


@pytest.fixture
def blobs(tmp_path: Path) -> FsspecBlobStore:
    return FsspecBlobStore(str(tmp_path / "blobs"))


@pytest.fixture
def area(blobs: FsspecBlobStore) -> UploadArea:
    return UploadArea(blobs)


def test_the_digest_follows_the_acknowledged_prefix(area: UploadArea) -> None:
    data = os.urandom(5 * MIB + 77)
    s = _create(area, len(data))
    _send(area, s, 2, data)
    assert _covered(area, s) == 0  # part 1 is missing: nothing can be hashed yet
    _send(area, s, 1, data)
    assert _covered(area, s) == 2 * MIB  # part 1 arrived: 1 and 2 are hashed
    _send(area, s, 4, data)
    _send(area, s, 6, data)
    assert _covered(area, s) == 2 * MIB
    _send(area, s, 3, data)
    assert _covered(area, s) == 4 * MIB
    _send(area, s, 5, data)
    assert _covered(area, s) == len(data)
    staged = area.stage(s)
    assert staged.ref.digest == hash_bytes(data) and staged.ref.size == len(data)


def test_parts_acknowledged_by_many_threads_at_once(area: UploadArea) -> None:
    data = os.urandom(16 * MIB + 5)
    s = _create(area, len(data))
    order = list(range(1, s.part_count + 1))
    random.Random(7).shuffle(order)
    errors: list[BaseException] = []

    def send(numbers: list[int]) -> None:
        try:
            for n in numbers:
                _send(area, s, n, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(order[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _covered(area, s) == len(data)  # every acknowledgement was followed up
    assert area.stage(s).ref.digest == hash_bytes(data)


def test_completion_elsewhere_hashes_the_whole_file(blobs: FsspecBlobStore) -> None:
    """Another replica (or this one after a restart) holds no hasher: same digest."""
    data = os.urandom(3 * MIB)
    receiving, completing = UploadArea(blobs), UploadArea(blobs)
    s = _create(receiving, len(data))
    for n in (1, 2, 3):
        _send(receiving, s, n, data)
    assert _covered(receiving, s) == len(data)
    assert completing.stage(completing.get(s.upload_id)).ref.digest == hash_bytes(data)


def test_a_broken_prefix_is_dropped_and_completion_starts_afresh(area: UploadArea) -> None:
    data = os.urandom(4 * MIB)
    s = _create(area, len(data))
    base = area.session_dir(s.upload_id)
    _send(area, s, 1, data)
    _send(area, s, 3, data)
    assert _covered(area, s) == MIB
    # Part 3's bytes vanish from the staging file (a disk fault, a hand in the folder): the
    # acknowledgement of part 2 still succeeds, and what was hashed is forgotten.
    os.truncate(f"{base}/data", 2 * MIB)
    _send(area, s, 2, data)
    assert _covered(area, s) == 0
    os.truncate(f"{base}/data", len(data))
    os.remove(f"{base}/parts/3")  # so that part 3 is written again, not compared
    _send(area, s, 3, data)
    assert _covered(area, s) == 3 * MIB  # hashed again from the first byte
    _send(area, s, 4, data)
    assert area.stage(s).ref.digest == hash_bytes(data)


def test_an_aborted_upload_acknowledges_nothing_more(area: UploadArea) -> None:
    data = os.urandom(2 * MIB)
    s = _create(area, len(data))
    _send(area, s, 1, data)
    area.abort(s.upload_id)
    assert len(area._prefixes) == 0  # forgotten with the session
    with pytest.raises(NotFound):
        area.open_part(area.get(s.upload_id), 2)
    with pytest.raises(Conflict, match="missing parts 1-2"):
        area.stage(s)


def test_finished_uploads_are_forgotten_and_the_registry_is_bounded(
        area: UploadArea, blobs: FsspecBlobStore) -> None:
    data = os.urandom(MIB)
    s = _create(area, len(data))
    _send(area, s, 1, data)
    assert len(area._prefixes) == 1
    staged = area.stage(s)
    blobs.publish(staged)
    blobs.settle(staged)
    area.finish(s, {"path": "model.bin", "digest": staged.ref.digest, "size": len(data)})
    assert len(area._prefixes) == 0

    hashers = PrefixHashers(limit=2)
    sessions = [_create(area, 10) for _ in range(3)]
    for one in sessions:
        hashers.get(area.session_dir(one.upload_id), one)
    assert len(hashers) == 2
    first = sessions[0]
    assert hashers.get(area.session_dir(first.upload_id), first).covered == 0  # evicted: anew


# -- the page cache -----------------------------------------------------------------------------


@pytest.fixture
def cache_hints(tmp_path: Path) -> None:
    if not honours_dontneed(tmp_path):  # e.g. tmpfs: its pages are the files themselves
        pytest.skip("this filesystem keeps pages it is told are not needed")


@linux_only
def test_a_large_upload_leaves_little_in_the_page_cache(area: UploadArea, blobs: FsspecBlobStore,
                                                       cache_hints: None) -> None:
    data = os.urandom(48 * MIB)
    s = _create(area, len(data), part_size=8 * MIB)
    for n in range(1, s.part_count + 1):
        _send(area, s, n, data)
    staged = area.stage(s)
    blobs.publish(staged)
    blobs.settle(staged)
    stored = blobs._object_path(staged.ref.digest)
    assert resident_bytes(stored) <= 2 * MIB  # hashed and released part by part
    assert blobs.read_bytes(staged.ref.digest) == data  # a verified read, from the disk


@linux_only
def test_reading_a_large_blob_releases_it_behind(blobs: FsspecBlobStore,
                                                 cache_hints: None) -> None:
    data = os.urandom(6 * LARGE_FILE)
    ref = blobs.put_stream(data[i:i + MIB] for i in range(0, len(data), MIB))
    stored = blobs._object_path(ref.digest)
    fd = os.open(stored, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    chunks = blobs.open(ref.digest)
    got = bytearray()
    peak = 0
    for chunk in chunks:
        got += chunk
        peak = max(peak, resident_bytes(stored))
    assert bytes(got) == data
    # Never the whole file: what was read since the last release, plus the kernel's
    # read-ahead (8 MiB on this machine's disk, doubled for a sequential read).
    assert peak <= len(data) // 2
    assert resident_bytes(stored) <= MIB


@linux_only
def test_a_large_download_is_written_through(tmp_path: Path, cache_hints: None) -> None:
    data = os.urandom(3 * LARGE_FILE + 12345)
    dest = tmp_path / "out" / "model.bin"
    blocks = (data[i:i + MIB] for i in range(0, len(data), MIB))
    assert write_verified(blocks, dest, digest=hash_bytes(data), size=len(data)) == len(data)
    assert dest.read_bytes() == data
    dest2 = tmp_path / "out" / "again.bin"
    write_verified((data[i:i + MIB] for i in range(0, len(data), MIB)), dest2, digest=None)
    assert resident_bytes(dest2) <= 2 * LARGE_FILE  # the last stretches at most


@linux_only
def test_small_files_keep_the_default_caching(tmp_path: Path, cache_hints: None) -> None:
    data = os.urandom(2 * MIB)
    dest = tmp_path / "small.bin"
    write_verified(iter([data]), dest, digest=hash_bytes(data))
    assert resident_bytes(dest) == len(data)
    with dest.open("rb") as f:
        assert releasing_reader(f) is None


def test_write_behind_resumes_from_an_offset(tmp_path: Path) -> None:
    """A resumed download writes on from what was kept; every byte lands where it belongs."""
    data = os.urandom(2 * LARGE_FILE + 999)
    path = tmp_path / "partial"
    kept = LARGE_FILE // 2 + 3
    path.write_bytes(data[:kept])
    fd = os.open(path, os.O_RDWR)
    try:
        behind = WriteBehind(fd, kept)
        at = kept
        while at < len(data):
            n = os.pwrite(fd, data[at:at + 3 * MIB + 1], at)
            behind.advanced(n)
            at += n
        behind.finish()
    finally:
        os.close(fd)
    assert path.read_bytes() == data
