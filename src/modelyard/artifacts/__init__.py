"""Artifact paths and content-addressed blob storage.

:mod:`~modelyard.artifacts.paths` is the one place user-supplied artifact paths are normalised
and checked; :mod:`~modelyard.artifacts.blobs` stores blobs by BLAKE3 digest on any fsspec
filesystem and verifies them on read; :mod:`~modelyard.artifacts.uploads` keeps resumable
multipart upload sessions beside them.
"""

from __future__ import annotations

from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.artifacts.hashing import BlobRef, hash_bytes, hash_file, validate_digest
from modelyard.artifacts.paths import iter_local_tree, normalize_artifact_path, safe_join
from modelyard.artifacts.protocol import BlobStore, StagedBlob

__all__ = [
    "BlobRef",
    "BlobStore",
    "FsspecBlobStore",
    "StagedBlob",
    "hash_bytes",
    "hash_file",
    "iter_local_tree",
    "normalize_artifact_path",
    "safe_join",
    "validate_digest",
]
