"""A multipart upload session: its id, its parts, the limits they are checked against."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.errors import InvalidArgument

MIB = 1 << 20
MIN_PART_SIZE = 1 * MIB
MAX_PART_SIZE = 256 * MIB
DEFAULT_PART_SIZE = 16 * MIB
MAX_PARTS = 10_000
HASH_BLOCK = 8 * MIB

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")


def new_upload_id() -> str:
    return secrets.token_hex(16)  # 128 bits: knowing an id is what lets a client write to it


def validate_upload_id(upload_id: object) -> str:
    """Return ``upload_id`` if it is exactly 32 lowercase hex characters.

    Raises:
        InvalidArgument: anything else (field ``upload_id``).
    """
    if not isinstance(upload_id, str) or UPLOAD_ID_RE.fullmatch(upload_id) is None:
        raise InvalidArgument("upload_id must be 32 lowercase hex characters",
                              field="upload_id")
    return upload_id


def _int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{field} must be an integer", field=field)
    return value


def check_part_size(part_size: object) -> int:
    size = _int(part_size, "part_size")
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise InvalidArgument(
            f"part_size must be from {MIN_PART_SIZE} (1 MiB) to {MAX_PART_SIZE} (256 MiB) "
            f"bytes, not {size}", field="part_size")
    return size


def check_upload_size(size: object, part_size: int) -> int:
    total = _int(size, "size")
    if total < 0:
        raise InvalidArgument("size must not be negative", field="size")
    if -(-total // part_size) > MAX_PARTS:
        need = -(-total // MAX_PARTS)
        raise InvalidArgument(
            f"an upload has at most {MAX_PARTS} parts: {total} bytes need a part_size of at "
            f"least {need} bytes", field="part_size")
    return total


@dataclass(frozen=True, slots=True)
class UploadSession:
    """One multipart upload: ``size`` bytes for ``path`` of run ``run_id``."""

    upload_id: str
    run_id: str
    path: str
    size: int
    part_size: int
    created_time: int
    digest: str | None = None

    @property
    def part_count(self) -> int:
        return -(-self.size // self.part_size)

    def part_span(self, number: int) -> tuple[int, int]:
        """(offset, length) of part ``number`` (1-based)."""
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)

    def check_part(self, number: object) -> int:
        if not isinstance(number, int) or isinstance(number, bool) \
                or not 1 <= number <= self.part_count:
            raise InvalidArgument(
                f"part_number must be from 1 to {self.part_count} for this upload",
                field="part_number")
        return number


def describe_parts(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    spans: list[list[int]] = []
    for n in sorted(set(numbers)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
