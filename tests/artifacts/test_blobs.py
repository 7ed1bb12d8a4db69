"""Content-addressed blob storage: one behavioural suite, run against every backend."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from fsspec.core import url_to_fs
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.artifacts import BlobRef, BlobStore, FsspecBlobStore, hash_bytes, hash_file
from modelyard.artifacts.reaper import REAPER
from modelyard.errors import ArtifactNotFound, IntegrityFailure, InvalidArgument

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

BAD_DIGESTS: list[Any] = [
    "",
    "0" * 63,
    "0" * 65,
    "A" * 64,
    "g" * 64,
    "../../../../etc/passwd",
    "0" * 62 + "/x",
    "00/" + "0" * 61,
    "0" * 64 + "\n",
    " " + "0" * 63,
    "%30" * 21 + "0",
    "\uff10" * 64,  # FULLWIDTH DIGIT ZERO
    123,
    None,
]


def test_hash_bytes_is_blake3_hex() -> None:
    assert hash_bytes(b"") == EMPTY_BLAKE3
    assert hash_bytes(b"abc") == blake3(b"abc").hexdigest()


def test_hash_file_streams_to_the_same_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path) == BlobRef(digest=hash_bytes(data), size=len(data))


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(max_size=64), max_size=8))
def test_chunking_never_changes_the_digest(parts: list[bytes]) -> None:
    url = f"memory://hyp-{uuid.uuid4().hex}"
    store = FsspecBlobStore(url)
    try:
        whole = b"".join(parts)
        ref = store.put_stream(parts)
        assert ref == BlobRef(digest=hash_bytes(whole), size=len(whole))
        assert store.put_stream([whole]) == ref
        assert store.read_bytes(ref.digest) == whole
    finally:
        fs, root = url_to_fs(url)
        fs.rm(root, recursive=True)


class BlobStoreContract:
    """The behaviour every :class:`BlobStore` backend must have.

    Subclasses provide a ``store_url`` fixture; everything else is shared.
    """

    @pytest.fixture
    def store(self, store_url: str) -> FsspecBlobStore:
        return FsspecBlobStore(store_url)

    @pytest.fixture
    def backend(self, store_url: str) -> tuple[Any, str]:
        """The raw filesystem under the store, to inspect and tamper with it."""
        fs, root = url_to_fs(store_url)
        return fs, str(root).rstrip("/")

    def _object(self, backend: tuple[Any, str], digest: str) -> str:
        return f"{backend[1]}/objects/{digest[:2]}/{digest[2:]}"

    def _files_under(self, backend: tuple[Any, str], folder: str) -> list[str]:
        fs, root = backend
        path = f"{root}/{folder}"
        return sorted(fs.find(path)) if fs.exists(path) else []

    # -- writing and reading ------------------------------------------------------------------

    def test_it_is_a_blob_store(self, store: FsspecBlobStore) -> None:
        assert isinstance(store, BlobStore)

    def test_put_stream_round_trips(self, store: FsspecBlobStore) -> None:
        data = os.urandom(5000)
        ref = store.put_stream([data[:1], data[1:4000], b"", data[4000:]])
        assert ref == BlobRef(digest=hash_bytes(data), size=len(data))
        assert store.read_bytes(ref.digest) == data
        assert b"".join(store.open(ref.digest)) == data
        assert store.exists(ref.digest)
        assert store.size(ref.digest) == len(data)

    def test_put_file_round_trips(self, store: FsspecBlobStore, tmp_path: Path) -> None:
        data = os.urandom((1 << 20) * 2 + 3)
        path = tmp_path / "upload.bin"
        path.write_bytes(data)
        ref = store.put_file(path)
        assert ref == hash_file(path)
        assert store.read_bytes(ref.digest) == data

    def test_empty_content_is_a_blob(self, store: FsspecBlobStore) -> None:
        ref = store.put_stream([])
        assert ref == BlobRef(digest=EMPTY_BLAKE3, size=0)
        assert store.read_bytes(EMPTY_BLAKE3) == b""
        assert list(store.open(EMPTY_BLAKE3)) == []

    def test_open_yields_chunks_of_at_most_chunk_size(self, store: FsspecBlobStore) -> None:
        ref = store.put_stream([b"0123456789"])
        chunks = list(store.open(ref.digest, chunk_size=3))
        assert chunks == [b"012", b"345", b"678", b"9"]

    @pytest.mark.parametrize("chunk_size", [0, -1, (64 << 20) + 1, True])
    def test_open_refuses_bad_chunk_sizes(self, store: FsspecBlobStore, chunk_size: int) -> None:
        ref = store.put_stream([b"x"])
        with pytest.raises(InvalidArgument) as info:
            store.open(ref.digest, chunk_size=chunk_size)
        assert info.value.field == "chunk_size"

    def test_layout_is_fanned_out_by_the_first_two_hex_characters(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        ref = store.put_stream([b"layout"])
        fs, _ = backend
        assert fs.cat_file(self._object(backend, ref.digest)) == b"layout"
        assert self._files_under(backend, "objects") == [self._object(backend, ref.digest)]

    def test_identical_content_is_stored_once(
        self, store: FsspecBlobStore, backend: tuple[Any, str], tmp_path: Path
    ) -> None:
        path = tmp_path / "same.bin"
        path.write_bytes(b"same bytes")
        first = store.put_stream([b"same ", b"bytes"])
        second = store.put_file(path)
        third = store.put_stream([b"same bytes"])
        assert first == second == third
        assert self._files_under(backend, "objects") == [self._object(backend, first.digest)]
        assert self._files_under(backend, "tmp") == []  # the duplicates' temp files are gone
        assert list(store.iter_digests()) == [first]

    def test_a_failing_stream_stores_nothing(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        def chunks() -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("the client went away")

        with pytest.raises(RuntimeError, match="went away"):
            store.put_stream(chunks())
        assert self._files_under(backend, "objects") == []
        assert self._files_under(backend, "tmp") == []
        assert not store.exists(hash_bytes(b"partial"))

    # -- integrity ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda data: bytes([data[0] ^ 1]) + data[1:],  # same length, one bit flipped
            lambda data: data[:-1],  # truncated
            lambda data: data + b"!",  # appended
            lambda data: b"",  # emptied
        ],
        ids=["bit-flip", "truncated", "appended", "emptied"],
    )
    def test_tampered_objects_fail_verification(
        self, store: FsspecBlobStore, backend: tuple[Any, str], tamper: Any
    ) -> None:
        data = os.urandom(10_000)
        ref = store.put_stream([data])
        fs, _ = backend
        fs.pipe_file(self._object(backend, ref.digest), tamper(data))
        received = []
        with pytest.raises(IntegrityFailure) as info:
            for chunk in store.open(ref.digest, chunk_size=4096):
                received.append(chunk)
        assert ref.digest in info.value.message
        with pytest.raises(IntegrityFailure):
            store.read_bytes(ref.digest)

    # -- absent and malformed digests ---------------------------------------------------------

    def test_absent_digests(self, store: FsspecBlobStore) -> None:
        absent = hash_bytes(b"never stored")
        with pytest.raises(ArtifactNotFound):
            store.open(absent)  # at the call, before iterating
        with pytest.raises(ArtifactNotFound):
            store.read_bytes(absent)
        with pytest.raises(ArtifactNotFound):
            store.size(absent)
        assert not store.exists(absent)
        assert store.delete(absent) == 0

    @pytest.mark.parametrize("digest", BAD_DIGESTS)
    def test_malformed_digests_are_refused_before_any_io(
        self, store: FsspecBlobStore, backend: tuple[Any, str], digest: Any
    ) -> None:
        calls: list[Callable[[Any], object]] = [
            store.open,
            store.read_bytes,
            store.exists,
            store.size,
            store.delete,
        ]
        for call in calls:
            with pytest.raises(InvalidArgument) as info:
                call(digest)
            assert info.value.field == "digest"
        fs, root = backend
        assert not fs.exists(root)  # not even the root was created

    # -- delete and listing -------------------------------------------------------------------

    def test_delete_frees_the_bytes_once(self, store: FsspecBlobStore) -> None:
        keep = store.put_stream([b"keep"])
        gone = store.put_stream([b"delete me"])
        assert store.delete(gone.digest) == len(b"delete me")
        assert store.delete(gone.digest) == 0
        assert not store.exists(gone.digest)
        assert store.read_bytes(keep.digest) == b"keep"
        assert list(store.iter_digests()) == [keep]

    def test_iter_digests_lists_every_blob_sorted(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        assert list(store.iter_digests()) == []
        refs = [store.put_stream([f"blob {i}".encode()]) for i in range(12)]
        fs, root = backend
        fs.makedirs(f"{root}/objects/zz", exist_ok=True)
        fs.pipe_file(f"{root}/objects/zz/not-a-digest", b"stray")
        fs.pipe_file(f"{root}/objects/README", b"stray")
        assert list(store.iter_digests()) == sorted(refs, key=lambda r: r.digest)


    # -- staged writes (what an upload holding a lease does) ---------------------------------

    def test_a_staged_blob_is_invisible_until_published(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        staged = store.stage_stream([b"staged ", b"bytes"])
        assert staged.ref == BlobRef(hash_bytes(b"staged bytes"), 12)
        assert not store.exists(staged.ref.digest)
        assert list(store.iter_digests()) == []
        store.publish(staged)
        assert store.read_bytes(staged.ref.digest) == b"staged bytes"
        store.settle(staged)
        assert self._files_under(backend, "tmp") == []
        assert store.read_bytes(staged.ref.digest) == b"staged bytes"

    def test_a_duplicate_keeps_its_temp_until_settled_and_replaces_a_claimed_object(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        first = store.put_stream([b"twice"])
        staged = store.stage_stream([b"twice"])
        store.publish(staged)  # already stored: the temp copy is kept
        assert self._files_under(backend, "tmp") == [staged.temp]
        claim = store.claim(first.digest)  # a collection takes the object meanwhile ...
        assert claim is not None and not store.exists(first.digest)
        store.settle(staged)  # ... and settle() puts the kept copy in its place
        assert store.read_bytes(first.digest) == b"twice"
        assert self._files_under(backend, "tmp") == []
        assert store.drop(claim) == 5

    def test_discard_forgets_a_staged_write(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        staged = store.stage_stream([b"abandoned"])
        store.discard(staged)
        store.discard(staged)  # twice is fine
        assert self._files_under(backend, "tmp") == []
        assert not store.exists(staged.ref.digest)

    def test_a_failing_stream_stages_nothing(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        def chunks() -> Iterator[bytes]:
            yield b"half"
            raise RuntimeError("client gone")

        with pytest.raises(RuntimeError):
            store.stage_stream(chunks())
        assert self._files_under(backend, "tmp") == []

    # -- claims (garbage collection) ----------------------------------------------------------

    def test_claim_restore_and_drop(self, store: FsspecBlobStore) -> None:
        ref = store.put_stream([b"claimed"])
        claim = store.claim(ref.digest)
        assert claim is not None and claim.startswith(ref.digest + ".")
        assert not store.exists(ref.digest) and list(store.iter_digests()) == []
        assert store.claim(ref.digest) is None  # a second claimant finds nothing
        assert list(store.iter_claims()) == [(claim, ref.digest)]
        store.restore(claim)
        assert store.read_bytes(ref.digest) == b"claimed"
        assert list(store.iter_claims()) == []
        again = store.claim(ref.digest)
        assert again is not None
        assert store.drop(again) == 7
        assert store.drop(again) == 0
        assert not store.exists(ref.digest) and list(store.iter_claims()) == []

    def test_restoring_a_claim_the_upload_already_put_back_leaves_no_claim(
        self, store: FsspecBlobStore
    ) -> None:
        # Found by a stress run: the upload's temp file is a second name of the object; a
        # collection claims the object, the upload's settle() moves its temp name back into
        # place, so the object and the claim are one file, and rename(2) between two names of
        # one file does nothing. The claim must still go, and the object stay.
        staged = store.stage_stream([b"twice"])
        store.publish(staged)
        claim = store.claim(staged.ref.digest)
        assert claim is not None
        store.settle(staged)
        store.restore(claim)
        assert list(store.iter_claims()) == []
        assert store.read_bytes(staged.ref.digest) == b"twice"

    def test_a_reader_finds_an_object_put_back_before_it_looked_into_the_trash(
        self, store: FsspecBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The interleaving that once failed under load: the reader's open misses the object (a
        # collection claimed it), the collection restores it, and only then does the reader
        # look into the trash, finding no claim. The object is there: the read must succeed.
        ref = store.put_stream([b"put back"])
        claim = store.claim(ref.digest)
        assert claim is not None
        looks: list[bool] = []

        def collection_restores_first(digest: str) -> bool:
            store.restore(claim)
            looks.append(True)
            return False

        monkeypatch.setattr(store, "_claimed", collection_restores_first)
        assert store.read_bytes(ref.digest) == b"put back"
        assert store.size(ref.digest) == 8
        assert looks == [True]  # the second look found the object, no waiting needed
        # A blob that is really gone (no claim, still missing) is reported after one retry.
        store.delete(ref.digest)
        with pytest.raises(ArtifactNotFound):
            store.read_bytes(ref.digest)

    @pytest.mark.parametrize("claim", ["x", "../../etc/passwd", "0" * 64,
                                       "0" * 64 + "./" + "0" * 14, "0" * 64 + "." + "Z" * 16])
    def test_forged_claim_names_are_refused(self, store: FsspecBlobStore, claim: str) -> None:
        with pytest.raises(InvalidArgument):
            store.drop(claim)
        with pytest.raises(InvalidArgument):
            store.restore(claim)

    def test_sweep_temp_removes_only_old_leftovers(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        old = store.stage_stream([b"left by a client that died"])
        assert store.sweep_temp(before=time.time() - 3600, dry_run=False) == (0, 0)
        assert store.sweep_temp(before=time.time() + 3600, dry_run=True) == (1, 26)
        assert self._files_under(backend, "tmp") == [old.temp]
        assert store.sweep_temp(before=time.time() + 3600, dry_run=False) == (1, 26)
        assert self._files_under(backend, "tmp") == []

    # -- ranges -------------------------------------------------------------------------------

    def test_open_range_reads_only_the_range(self, store: FsspecBlobStore) -> None:
        data = os.urandom(10_000)
        ref = store.put_stream([data])
        assert b"".join(store.open_range(ref.digest, 0, 10_000)) == data
        assert b"".join(store.open_range(ref.digest, 1234, 4000, chunk_size=1000)) == \
            data[1234:5234]
        assert list(store.open_range(ref.digest, 10_000, 0)) == []
        for start, length in ((-1, 5), (0, 10_001), (9_999, 2), (5, -1)):
            with pytest.raises(InvalidArgument) as info:
                store.open_range(ref.digest, start, length)
            assert info.value.field == "range"
        with pytest.raises(ArtifactNotFound):
            store.open_range(hash_bytes(b"absent"), 0, 1)

    def test_remove_soon_takes_the_file_away_at_once_and_frees_it_later(
        self, store: FsspecBlobStore, backend: tuple[Any, str]
    ) -> None:
        fs, root = backend
        fs.makedirs(f"{root}/uploads/u", exist_ok=True)
        fs.pipe_file(f"{root}/uploads/u/data", b"staged bytes")
        store.remove_soon(f"{root}/uploads/u/data")
        assert not fs.exists(f"{root}/uploads/u/data")  # gone from its place before the return
        assert REAPER.drain()
        assert self._files_under(backend, "tmp") == []  # and then from the store altogether
        store.remove_soon(f"{root}/uploads/u/data")  # already absent: nothing to do


class TestLocalFolderBlobStore(BlobStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "blobs")

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
    def test_temp_folder_is_private(self, store: FsspecBlobStore, store_url: str) -> None:
        old = os.umask(0)
        try:
            store.put_stream([b"x"])
        finally:
            os.umask(old)
        mode = stat.S_IMODE((Path(store_url) / "tmp").stat().st_mode)
        assert mode == 0o700

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
    def test_a_world_writable_temp_folder_is_made_private(
        self, store: FsspecBlobStore, store_url: str
    ) -> None:
        (Path(store_url) / "tmp").mkdir(parents=True)
        (Path(store_url) / "tmp").chmod(0o777)
        store.put_stream([b"x"])
        assert stat.S_IMODE((Path(store_url) / "tmp").stat().st_mode) == 0o700


class TestFileUrlBlobStore(BlobStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return (tmp_path / "blobs").as_uri()


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        # The memory filesystem is one process-wide dict: give each test its own root.
        url = f"memory://blobs-{uuid.uuid4().hex}"
        yield url
        fs, root = url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)


# -- constant memory --------------------------------------------------------------------------

_RSS_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from modelyard.artifacts import FsspecBlobStore

    store = FsspecBlobStore(sys.argv[2])
    # Warm up every code path so the baseline already holds imports and first allocations.
    warm = store.put_stream([b"warm-up"])
    store.read_bytes(warm.digest)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ref = store.put_file(Path(sys.argv[1]))
    streamed = 0
    for chunk in store.open(ref.digest):
        streamed += len(chunk)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    print(json.dumps({"digest": ref.digest, "size": ref.size, "streamed": streamed,
                      "growth": (after - before) * unit}))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs the resource module")
def test_a_gigabyte_streams_in_and_out_in_constant_memory(tmp_path: Path) -> None:
    block = os.urandom(1 << 20)
    big = tmp_path / "big.bin"
    expected = blake3()
    with big.open("wb") as f:
        for _ in range(1024):
            f.write(block)
            expected.update(block)
    store_dir = tmp_path / "store"
    try:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, str(big), str(store_dir)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        result = json.loads(out.stdout)
        assert result["digest"] == expected.hexdigest()
        assert result["size"] == result["streamed"] == 1 << 30
        assert result["growth"] < 64 << 20, f"peak RSS grew by {result['growth']} bytes"
    finally:
        big.unlink()
        for leftover in store_dir.rglob("*"):
            if leftover.is_file():
                leftover.unlink()
