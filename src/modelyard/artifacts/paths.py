"""The one place where user-supplied artifact paths become safe relative paths.

Every artifact path a user names (uploads, downloads, listings, archive members) goes through
:func:`normalize_artifact_path` before any I/O, and the string it returns is the one that is used:
nothing validates one string and then uses another. Local trees are walked with
:func:`iter_local_tree` (uploads) and written through :func:`safe_join` (downloads), both of which
refuse symlinks that lead out of their root.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from modelyard.domain.lookalikes import (
    code_point,
    describe_invisible,
    invisible_character,
    skeleton,
)
from modelyard.errors import ArtifactNotFound, InvalidArgument, UnsafePath

__all__ = [
    "MAX_PATH_CHARS",
    "MAX_SEGMENT_BYTES",
    "iter_local_tree",
    "normalize_artifact_path",
    "safe_join",
]

MAX_PATH_CHARS = 1024
MAX_SEGMENT_BYTES = 255

_FIELD = "path"
_MAX_DECODE_ROUNDS = 16
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# Characters that turn a path into something else: a URL parameter, query or fragment.
_URL_PUNCTUATION = {";": "a ';' parameter", "?": "a '?' query", "#": "a '#' fragment"}
# Bidirectional controls can make a name display as a different one (Trojan Source).
# What a compatibility character must not fold into (fullwidth U+FF0E, U+FF0F, U+FF05...): some
# platforms and libraries apply NFKC or "best fit" mappings on their own.
_FOLD_DANGER = frozenset("/\\:;?#%")
# What no character may look like (its UTS #39 skeleton holding one): '..' + U+2215 DIVISION
# SLASH + 'x' displays as '../x'.
_SEPARATORS = ("/", "\\", ":")


def _show(text: str) -> str:
    """A bounded, escaped rendering of user input for error messages."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _unsafe(reason: str) -> UnsafePath:
    return UnsafePath(f"unsafe artifact path: {reason}", field=_FIELD)


def _percent_decode_fully(text: str) -> str:
    """Decode %XX escapes until the string stops changing (catches %252e -> %2e -> .)."""
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _check_characters(text: str) -> None:
    for ch in text:
        if ch == "\x00":
            raise _unsafe("it contains a NUL byte")
        category = unicodedata.category(ch)
        if category == "Cc":
            raise _unsafe(f"it contains the control character U+{ord(ch):04X}")
        if category == "Cs":
            raise _unsafe(
                f"it contains the lone surrogate U+{ord(ch):04X} (not valid Unicode text)"
            )
    hidden = invisible_character(text, spaces=True)  # a file name may hold U+202F, U+00A0
    if hidden is not None:
        raise _unsafe(
            f"it contains {describe_invisible(hidden)}, which would let two different paths "
            "display alike"
        )
    for ch, what in _URL_PUNCTUATION.items():
        if ch in text:
            raise _unsafe(f"it contains {what} (URL syntax is not allowed in a path)")
    if _DRIVE_RE.match(text):
        raise _unsafe(f"it starts with the Windows drive letter {text[:2]!r}")
    scheme = _SCHEME_RE.match(text)
    if scheme:
        raise _unsafe(
            f"it starts with the URL scheme {scheme.group(0)!r}; give a relative path, not a URL"
        )
    if ":" in text:
        raise _unsafe("it contains ':' (drive letters, URL schemes and NTFS streams are refused)")


def _check_segment(segment: str) -> None:
    if segment == "..":
        raise _unsafe("it contains a '..' segment")
    if set(segment) <= {".", " "}:
        # Windows strips trailing dots and spaces: '.. ' or '...' may mean '..' there.
        raise _unsafe(f"the segment {_show(segment)} consists only of dots and spaces")
    folded = unicodedata.normalize("NFKC", segment)
    if folded != segment and (folded in (".", "..") or any(ch in _FOLD_DANGER for ch in folded)):
        raise _unsafe(
            f"the segment {_show(segment)} contains look-alike characters that fold to "
            f"{_show(folded)}"
        )
    if not segment.isascii():
        _check_lookalikes(segment)
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise _unsafe(f"a segment is longer than {MAX_SEGMENT_BYTES} bytes in UTF-8")


def _check_lookalikes(segment: str) -> None:
    """Refuse look-alikes of separators, and a segment that looks like a dot segment.

    Letters (but modifier letters) and marks of a script are exempt: they are words of their
    script, such as U+30CE KATAKANA LETTER NO and U+0903 DEVANAGARI SIGN VISARGA, whose
    skeletons are '/' and ':'.
    """
    for ch in segment:
        category = unicodedata.category(ch)
        if ch.isascii() or (category[0] in "LM" and category != "Lm"):
            continue
        shape = skeleton(ch)
        sep = next((s for s in _SEPARATORS if s in shape), None)
        if sep is not None:
            what = "a look-alike of" if shape == sep else "which holds a look-alike of"
            raise _unsafe(
                f"it contains {code_point(ch)}, {what} {sep!r} (look-alikes of '/', '\\' "
                "and ':' are refused)"
            )
    shape = skeleton(segment)
    if set(shape) <= {".", " "}:
        raise _unsafe(
            f"the segment {_show(segment)} consists of look-alikes of dots and spaces "
            f"(it looks like {_show(shape)})"
        )


def _normalize_decoded(text: str, *, allow_empty: bool) -> str:
    _check_characters(text)
    text = unicodedata.normalize("NFC", text)
    # NFC maps a few characters onto ASCII punctuation (U+037E GREEK QUESTION MARK -> ';').
    _check_characters(text)
    text = text.replace("\\", "/")
    if text.startswith("/"):
        raise _unsafe("it is absolute (it starts with a slash or backslash)")
    segments: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        _check_segment(segment)
        segments.append(segment)
    result = "/".join(segments)
    if not result and not allow_empty:
        raise _unsafe("it is empty (it names the root, not a file)")
    if len(result) > MAX_PATH_CHARS:
        raise _unsafe(f"it is longer than {MAX_PATH_CHARS} characters")
    return result


def normalize_artifact_path(path: str, *, allow_empty: bool = False) -> str:
    """Turn a user-supplied artifact path into a clean relative POSIX path, or refuse it.

    The result has no leading or trailing slash, no ``.`` segments, no duplicate slashes, uses
    ``/`` as its only separator (backslashes count as separators) and is in Unicode NFC form.
    Normalising a result again returns it unchanged.

    Args:
        path: the path as the user sent it.
        allow_empty: accept the root (``""``, ``"."``, ``"./"``) and return ``""`` for it.

    Returns:
        The normalised path.

    Raises:
        UnsafePath: (``field="path"``) the path contains a ``..`` segment, is absolute, starts
            with a drive letter or a URL scheme (``file:``, ``s3:``...) or holds any ``:``;
            contains NUL, control or bidirectional control characters, any other character
            that is invisible (``lookalikes.invisible_character``: format characters,
            variation selectors, private-use and unassigned code points...; spaces other than
            U+0020 are allowed, as file names hold them) or
            U+FFFD, ``;``, ``?`` or ``#``; contains a percent-encoded sequence (``%`` followed
            by two hex digits, at any depth of encoding); contains a character whose UTS #39
            skeleton holds ``/``, ``\\`` or ``:`` (U+2215 DIVISION SLASH, U+A789 MODIFIER
            LETTER COLON, U+00BD VULGAR FRACTION ONE HALF...; letters and marks of a script
            excepted); has a segment of only dots and spaces or of look-alikes of them, a
            segment whose compatibility form is a separator or dot segment, a segment over 255
            UTF-8 bytes; is over 1024 characters; or is empty while ``allow_empty`` is false.
    """
    if not isinstance(path, str):
        raise UnsafePath("an artifact path must be a string", field=_FIELD)
    if len(path) > MAX_PATH_CHARS:
        raise _unsafe(f"it is longer than {MAX_PATH_CHARS} characters")
    nfc = unicodedata.normalize("NFC", path)
    decoded = _percent_decode_fully(nfc)
    if decoded != nfc:
        # Validate the decoded form to say what was smuggled, then refuse anyway: a path that a
        # later layer could decode into something else must never be stored.
        try:
            _normalize_decoded(decoded, allow_empty=True)
        except UnsafePath as exc:
            hidden = f"; decoded, {exc.message.removeprefix('unsafe artifact path: ')}"
        else:
            hidden = ""
        raise _unsafe(
            "it contains a percent-encoded sequence ('%' followed by two hex digits, "
            f"decoded form {_show(decoded)}){hidden}; percent-encoding is refused in paths"
        )
    return _normalize_decoded(nfc, allow_empty=allow_empty)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _resolve_link(link: Path, logical: str, base: Path) -> Path:
    try:
        target = link.resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError before Python 3.13)
        raise UnsafePath(
            f"the symlink {_show(logical)} is part of a loop of symlinks", field=_FIELD
        ) from None
    if not _inside(target, base):
        raise UnsafePath(
            f"the symlink {_show(logical)} points outside the upload root", field=_FIELD
        )
    return target


def iter_local_tree(root: Path) -> Iterator[tuple[str, Path]]:
    """Walk a local directory for upload.

    Symlinks are followed only when their resolved target stays inside ``root.resolve()``;
    the path yielded for a followed link is its resolved target, so the file read is the one
    that was checked. Nothing is skipped except directories themselves.

    Args:
        root: the local directory to upload.

    Yields:
        ``(artifact_path, absolute_file)`` for every regular file, sorted by ``artifact_path``
        (a normalised relative POSIX path as :func:`normalize_artifact_path` returns it).

    Raises:
        ArtifactNotFound: ``root`` does not exist, or a symlink inside it dangles.
        InvalidArgument: ``root`` is not a directory; an entry is neither a regular file nor a
            directory (FIFO, socket, device); two local names normalise to the same path.
        UnsafePath: a symlink points outside ``root`` or into one of its own ancestors (a
            cycle), or a local name is not a valid artifact path.
    """
    try:
        base = root.resolve(strict=True)
    except FileNotFoundError:
        raise ArtifactNotFound(
            f"the directory {str(root)!r} does not exist", field="root"
        ) from None
    if not base.is_dir():
        raise InvalidArgument(f"{str(root)!r} is not a directory", field="root")

    found: dict[str, Path] = {}
    # (directory to scan, its logical path relative to root, resolved ancestors for cycles)
    pending: list[tuple[Path, str, frozenset[Path]]] = [(base, "", frozenset({base}))]
    while pending:
        directory, prefix, ancestors = pending.pop()
        with os.scandir(directory) as entries:
            listing = sorted(entries, key=lambda e: e.name)
        for entry in listing:
            logical = f"{prefix}{entry.name}"
            entry_path = Path(entry.path)
            target = _resolve_link(entry_path, logical, base) if entry.is_symlink() else entry_path
            try:
                mode = target.stat().st_mode
            except FileNotFoundError:
                raise ArtifactNotFound(
                    f"the symlink {_show(logical)} points to a missing file", field=_FIELD
                ) from None
            if stat.S_ISDIR(mode):
                if target in ancestors:
                    raise UnsafePath(
                        f"the symlink {_show(logical)} points to one of its own parent "
                        "directories (a cycle)",
                        field=_FIELD,
                    )
                pending.append((target, f"{logical}/", ancestors | {target}))
            elif stat.S_ISREG(mode):
                name = normalize_artifact_path(logical)
                if name in found:
                    raise InvalidArgument(
                        f"two local files map to the artifact path {_show(name)} "
                        "(names that differ only in Unicode form or separators)",
                        field=_FIELD,
                    )
                found[name] = target
            else:
                raise InvalidArgument(
                    f"{_show(logical)} is neither a regular file nor a directory "
                    "(FIFOs, sockets and devices cannot be uploaded)",
                    field=_FIELD,
                )
    for name in sorted(found):
        yield name, found[name]


def safe_join(root: Path, rel: str) -> Path:
    """Join a user-supplied artifact path onto a local root, for downloads.

    Args:
        root: the local directory files are written under.
        rel: the artifact path (normalised with :func:`normalize_artifact_path`).

    Returns:
        The resolved absolute path, guaranteed to be inside ``root.resolve()``: write to
        exactly this path.

    Raises:
        UnsafePath: ``rel`` is not a safe artifact path, or the joined path resolves outside
            ``root`` (through a symlink already present under it).
    """
    clean = normalize_artifact_path(rel)
    base = root.resolve()
    joined = base.joinpath(*clean.split("/")).resolve()
    if not _inside(joined, base) or joined == base:
        raise UnsafePath(
            f"the artifact path {_show(clean)} resolves outside the download root", field=_FIELD
        )
    return joined
