"""The artifact path normaliser, the upload walker and the download joiner, attacked for real."""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.artifacts.paths import iter_local_tree, normalize_artifact_path, safe_join
from modelyard.errors import ArtifactNotFound, InvalidArgument, UnsafePath

needs_symlinks = pytest.mark.skipif(
    sys.platform == "win32", reason="symlinks need privileges on Windows"
)
_PERCENT_HEX = re.compile(r"%[0-9a-fA-F]{2}")

# (hostile path, a fragment the error message must contain): one row per security.md form,
# then its encoded, double-encoded and look-alike variants.
HOSTILE: list[tuple[str, str]] = [
    # '..' segments, with either separator
    ("..", "'..' segment"),
    ("../etc/passwd", "'..' segment"),
    ("a/../../etc/passwd", "'..' segment"),
    ("a/b/..", "'..' segment"),
    ("..\\x", "'..' segment"),
    ("a\\..\\..\\x", "'..' segment"),
    ("a/..\\b", "'..' segment"),
    (".. /x", "only of dots and spaces"),
    ("a/.../b", "only of dots and spaces"),
    ("a/. ./b", "only of dots and spaces"),
    # absolute paths
    ("/etc/passwd", "absolute"),
    ("/", "absolute"),
    ("//server/share", "absolute"),
    ("\\x", "absolute"),
    ("\\\\server\\share\\x", "absolute"),
    # Windows drive letters and other colons
    ("C:", "drive letter"),
    ("C:x", "drive letter"),
    ("c:/windows/win.ini", "drive letter"),
    ("C:\\Windows", "drive letter"),
    ("a/C:/b", "':'"),
    ("a/file.txt:stream", "':'"),
    # NUL and control characters
    ("a\x00b", "NUL"),
    ("a.txt\x00.png", "NUL"),
    ("a\nb", "control character U+000A"),
    ("a\rb", "control character U+000D"),
    ("a\tb", "control character U+0009"),
    ("a\x7fb", "control character U+007F"),
    ("a\x85b", "control character U+0085"),
    ("x\u202etxt.exe", "bidirectional"),
    ("\udcff", "surrogate"),
    # URL-encoded forms
    ("%2e%2e/x", "'..' segment"),
    ("%2E%2E%2Fetc%2Fpasswd", "'..' segment"),
    ("..%2fx", "'..' segment"),
    ("..%5cx", "'..' segment"),
    ("%2e%2e%5c", "'..' segment"),
    ("a/%2e%2e/%2e%2e/x", "'..' segment"),
    ("%2fetc/passwd", "absolute"),
    ("%5c%5cserver", "absolute"),
    ("%00", "NUL"),
    ("a%00.txt", "NUL"),
    ("a%0ab", "control character"),
    ("C%3a/x", "drive letter"),
    ("file%3a///etc/passwd", "URL scheme"),
    ("a%3bb", "';'"),
    ("a%3Fb", "'?'"),
    ("a%23b", "'#'"),
    # double- and deeper-encoded forms
    ("%252e%252e/x", "'..' segment"),
    ("%252e%252e%252fx", "'..' segment"),
    ("%25252e%25252e/x", "'..' segment"),
    ("%%32%65%%32%65/x", "'..' segment"),
    ("%252fetc", "absolute"),
    ("%2500", "NUL"),
    ("a%253bb", "';'"),
    # an invalid (overlong) UTF-8 encoding of '/', and any other literal %XX
    ("..%c0%af", "percent-encoded"),
    ("a%41b", "percent-encoded"),
    ("100%25", "percent-encoded"),
    # ';' parameters, '?' queries, '#' fragments
    ("a;jsessionid=1", "';'"),
    ("model.pkl;.txt", "';'"),
    ("a?x=1", "'?'"),
    ("a#frag", "'#'"),
    ("a/b\u037e", "';'"),  # GREEK QUESTION MARK, which NFC turns into ';'
    # schemes
    ("file:///etc/passwd", "URL scheme 'file:'"),
    ("file:x", "URL scheme 'file:'"),
    ("FILE:/x", "URL scheme"),
    ("s3://bucket/key", "URL scheme 's3:'"),
    ("http://169.254.169.254/latest", "URL scheme 'http:'"),
    ("mlflow-artifacts:/x", "URL scheme"),
    # look-alike characters that fold (NFKC, best-fit) onto separators and dots
    ("\uff0e\uff0e/x", "fold to '..'"),
    ("a/\uff0e\uff0e/b", "fold to '..'"),
    ("\uff0fetc", "look-alike"),
    ("a\uff3cb", "look-alike"),
    ("\uff05\uff12\uff45", "look-alike"),
    # look-alikes of separators (their UTS #39 skeleton is or holds '/', '\\' or ':')
    ("..\u2215x", "U+2215 DIVISION SLASH, a look-alike of '/'"),
    ("a/..\u2215..\u2215etc", "U+2215 DIVISION SLASH"),
    ("a\u2044b", "U+2044 FRACTION SLASH, a look-alike of '/'"),
    ("a\u29f8b", "U+29F8 BIG SOLIDUS"),
    ("a\u2571b", "U+2571"),
    ("a\u2216b", "U+2216 SET MINUS, a look-alike of '\\\\'"),
    ("a\u29f5b", "U+29F5 REVERSE SOLIDUS OPERATOR"),
    ("a\ufe68b", "look-alike"),  # SMALL REVERSE SOLIDUS, which NFKC also folds onto '\\'
    ("a\ua789b", "U+A789 MODIFIER LETTER COLON, a look-alike of ':'"),
    ("a\u2236b", "U+2236 RATIO"),
    ("a\u02d0b", "U+02D0 MODIFIER LETTER TRIANGULAR COLON"),
    ("\u00bd.txt", "U+00BD VULGAR FRACTION ONE HALF, which holds a look-alike of '/'"),
    ("a%e2%88%95b", "U+2215"),  # percent-encoded: refused for that, and says what it hid
    # segments of look-alike dots
    ("\ua4f8\ua4f8/x", "looks like '..'"),  # LISU LETTER TONE MYA TI
    ("a/\u0660\u0660/b", "looks like '..'"),  # ARABIC-INDIC DIGIT ZERO
    ("a/\u2026", "look-alikes of dots"),  # HORIZONTAL ELLIPSIS, which looks like '...'
    # invisible characters, in any segment
    ("a\u200bb", "invisible character U+200B ZERO WIDTH SPACE"),
    ("a/b\u200d.txt", "U+200D ZERO WIDTH JOINER"),
    ("\ufeffa", "U+FEFF"),
    ("a\u00adb", "U+00AD SOFT HYPHEN"),
    ("a\u2060b", "U+2060 WORD JOINER"),
    ("a\u061cb", "U+061C ARABIC LETTER MARK"),
    ("a\u2066b\u2069", "bidirectional"),
    ("x/a\u2028b", "U+2028 LINE SEPARATOR"),
    ("a\ufe0fb", "U+FE0F VARIATION SELECTOR-16"),
    ("a\U000e0100b", "U+E0100 VARIATION SELECTOR-17"),
    ("a\u3164b", "U+3164 HANGUL FILLER"),
    ("a\u2800b", "U+2800 BRAILLE PATTERN BLANK"),
    ("a\ue000b", "private-use character U+E000"),
    ("a\u0378b", "unassigned code point U+0378"),
    ("a\U000e0041b", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    # U+FFFD, literal or what invalid UTF-8 in a URL decodes to: two inputs, one path
    ("a\ufffdb", "replacement character U+FFFD"),
    ("a%ffb", "U+FFFD"),
    # empty
    ("", "empty"),
    (".", "empty"),
    ("./", "empty"),
    ("a/..", "'..' segment"),
    # lengths
    ("a" * 256, "255 bytes"),
    ("\u00e9" * 128, "255 bytes"),  # 128 characters but 256 UTF-8 bytes
    ("/".join(["abc"] * 300), "1024 characters"),
    ("a/" * 513, "1024 characters"),
]


@pytest.mark.parametrize(("path", "reason"), HOSTILE)
def test_hostile_paths_are_refused_naming_the_problem(path: str, reason: str) -> None:
    with pytest.raises(UnsafePath) as info:
        normalize_artifact_path(path)
    assert info.value.field == "path"
    assert reason in info.value.message
    if _PERCENT_HEX.search(path):
        assert "percent-encoded" in info.value.message


@pytest.mark.parametrize(("path", "reason"), HOSTILE)
def test_hostile_paths_are_refused_by_safe_join(tmp_path: Path, path: str, reason: str) -> None:
    with pytest.raises(UnsafePath):
        safe_join(tmp_path, path)


@pytest.mark.parametrize("path", ["", ".", "./", ".//./"])
def test_root_is_accepted_only_when_allowed(path: str) -> None:
    assert normalize_artifact_path(path, allow_empty=True) == ""


@pytest.mark.parametrize("path", ["/", "..", "%2e", "C:"])
def test_allow_empty_does_not_relax_anything_else(path: str) -> None:
    with pytest.raises(UnsafePath):
        normalize_artifact_path(path, allow_empty=True)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(UnsafePath):
        normalize_artifact_path(b"a/b")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b/c.txt", "a/b/c.txt"),
        ("a//b///c", "a/b/c"),
        ("./a/./b/", "a/b"),
        ("a/b/", "a/b"),
        ("a\\b\\c.txt", "a/b/c.txt"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFD -> NFC
        ("\u212b", "\u00c5"),  # ANGSTROM SIGN -> A WITH RING (canonical singleton)
        (".hidden/..dots", ".hidden/..dots"),
        ("...a", "...a"),
        ("100%", "100%"),
        ("a%zz/%", "a%zz/%"),
        ("a%2", "a%2"),
        ("with space/x y.bin", "with space/x y.bin"),
        ("model (1)/weights+bias=@~.bin", "model (1)/weights+bias=@~.bin"),
        ("a" * 255, "a" * 255),
        ("/".join(["abcd"] * 204) + "/abc", "/".join(["abcd"] * 204) + "/abc"),  # 1023 chars
        ("\u4e2d\u6587/\U0001f600.txt", "\u4e2d\u6587/\U0001f600.txt"),
        # non-ASCII text stays accepted: accents, Japanese, Cyrillic, emoji, spaces
        ("caf\u00e9/r\u00e9sum\u00e9 final.pdf", "caf\u00e9/r\u00e9sum\u00e9 final.pdf"),
        ("\u65e5\u672c\u8a9e/\u30c7\u30fc\u30bf.csv", "\u65e5\u672c\u8a9e/\u30c7\u30fc\u30bf.csv"),
        ("\u043c\u043e\u0434\u0435\u043b\u044c/\u0432\u0435\u0441\u0430.bin",
         "\u043c\u043e\u0434\u0435\u043b\u044c/\u0432\u0435\u0441\u0430.bin"),
        ("\U0001f642 smile/\U0001f680.png", "\U0001f642 smile/\U0001f680.png"),
        # letters and marks of a script whose skeleton is a separator: KATAKANA LETTER NO
        # (in "note"), DEVANAGARI SIGN VISARGA (in "sorrow")
        ("\u30ce\u30fc\u30c8/x.txt", "\u30ce\u30fc\u30c8/x.txt"),
        ("\u0926\u0941\u0903\u0916.txt", "\u0926\u0941\u0903\u0916.txt"),
        ("x\u00b2.txt", "x\u00b2.txt"),  # kept as given, NFC but never NFKC
        ("100%/a %.txt", "100%/a %.txt"),  # '%' has the skeleton 'o/o', but it is ASCII
        ("\u0661\u0660\u0660/\u0660.5", "\u0661\u0660\u0660/\u0660.5"),  # Arabic-Indic digits
        # spaces other than U+0020: visible, and file names hold them (macOS screenshots)
        ("Screenshot 10.00.00\u202fAM.png", "Screenshot 10.00.00\u202fAM.png"),
        ("a\u00a0b/c\u3000d", "a\u00a0b/c\u3000d"),
    ],
)
def test_accepted_paths_are_normalised(path: str, expected: str) -> None:
    assert normalize_artifact_path(path) == expected


# -- properties -------------------------------------------------------------------------------

# An alphabet that hits every rule: separators, dots, percent, hex digits, URL punctuation,
# colons, controls, combining and compatibility characters.
_ALPHABET = [
    *"ab.e2f5c/\\%:;?# ",
    "\x00",
    "\n",
    "\u0301",
    "\u00e9",
    "\u212b",
    "\u037e",
    "\uff0e",
    "\uff0f",
    "\u202e",
]
_SEGMENTS = st.sampled_from(["a", "b.txt", ".", "..", "", "%2e", "\u00e9", "e\u0301", "x y", "%"])


@pytest.fixture(scope="module")
def join_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("join-root")


def _check_accepted(raw: str, root: Path) -> None:
    try:
        once = normalize_artifact_path(raw)
    except UnsafePath:
        return
    assert normalize_artifact_path(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert once and not once.startswith("/") and not once.endswith("/")
    assert "\\" not in once and "//" not in once
    assert all(seg not in ("", ".", "..") for seg in once.split("/"))
    joined = safe_join(root, raw)
    assert joined.is_relative_to(root.resolve()) and joined != root.resolve()
    assert joined == safe_join(root, once)


@settings(max_examples=400, deadline=None)
@given(raw=st.text(alphabet=st.sampled_from(_ALPHABET), max_size=24))
def test_accepted_paths_normalise_idempotently_and_join_inside(raw: str, join_root: Path) -> None:
    _check_accepted(raw, join_root)


@settings(max_examples=300, deadline=None)
@given(
    segments=st.lists(_SEGMENTS, max_size=8),
    separators=st.lists(st.sampled_from(["/", "\\", "//", "/./"]), min_size=8, max_size=8),
)
def test_joined_segments_normalise_idempotently(
    segments: list[str], separators: list[str], join_root: Path
) -> None:
    raw = "".join(seg + sep for seg, sep in zip(segments, separators, strict=False))
    _check_accepted(raw, join_root)


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=40))
def test_arbitrary_text_normalises_idempotently(raw: str, join_root: Path) -> None:
    _check_accepted(raw, join_root)


# -- safe_join --------------------------------------------------------------------------------


def test_safe_join_returns_the_resolved_path_inside_root(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a\\b/./c.txt") == tmp_path.resolve() / "a" / "b" / "c.txt"


@needs_symlinks
def test_safe_join_refuses_a_symlink_under_root_that_leads_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="outside the download root"):
        safe_join(root, "link/evil.sh")
    (root / "self").symlink_to(root, target_is_directory=True)
    with pytest.raises(UnsafePath):
        safe_join(root, "self")


@needs_symlinks
def test_safe_join_follows_a_symlink_that_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert safe_join(tmp_path, "alias/x") == tmp_path.resolve() / "real" / "x"


# -- iter_local_tree --------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_tree_yields_every_regular_file_sorted(tmp_path: Path) -> None:
    _tree(tmp_path, {"b.txt": b"b", "a/z.bin": b"z", "a/b/c.txt": b"c", ".hidden": b"h"})
    (tmp_path / "empty-dir" / "nested").mkdir(parents=True)
    got = list(iter_local_tree(tmp_path))
    assert [name for name, _ in got] == [".hidden", "a/b/c.txt", "a/z.bin", "b.txt"]
    base = tmp_path.resolve()
    assert all(path.is_absolute() and path.is_relative_to(base) for _, path in got)
    assert dict(got)["a/b/c.txt"].read_bytes() == b"c"


def test_tree_of_an_empty_directory_is_empty(tmp_path: Path) -> None:
    assert list(iter_local_tree(tmp_path)) == []


def test_tree_root_must_be_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        list(iter_local_tree(tmp_path / "absent"))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidArgument):
        list(iter_local_tree(tmp_path / "file"))


@needs_symlinks
def test_tree_refuses_a_symlink_that_escapes_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "upload"
    _tree(root, {"ok.txt": b"ok"})
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    (root / "sub").mkdir()
    (root / "sub" / "innocent.txt").symlink_to(secret)
    with pytest.raises(UnsafePath, match=re.escape("'sub/innocent.txt' points outside")):
        list(iter_local_tree(root))


@needs_symlinks
@pytest.mark.parametrize("target", ["/etc", "../..", "/"])
def test_tree_refuses_directory_symlinks_that_escape(tmp_path: Path, target: str) -> None:
    root = tmp_path / "upload"
    root.mkdir()
    (root / "escape").symlink_to(target)
    with pytest.raises(UnsafePath, match="'escape' points outside"):
        list(iter_local_tree(root))


@needs_symlinks
def test_tree_follows_symlinks_that_stay_inside(tmp_path: Path) -> None:
    _tree(tmp_path, {"data/real.txt": b"real"})
    (tmp_path / "alias.txt").symlink_to(tmp_path / "data" / "real.txt")
    (tmp_path / "relative.txt").symlink_to("data/real.txt")
    (tmp_path / "data-alias").symlink_to(tmp_path / "data", target_is_directory=True)
    got = dict(iter_local_tree(tmp_path))
    assert sorted(got) == ["alias.txt", "data-alias/real.txt", "data/real.txt", "relative.txt"]
    real = (tmp_path / "data" / "real.txt").resolve()
    assert got["alias.txt"] == real and got["relative.txt"] == real
    assert got["data-alias/real.txt"] == real


@needs_symlinks
def test_tree_works_when_root_itself_is_a_symlink(tmp_path: Path) -> None:
    _tree(tmp_path / "real", {"x.txt": b"x"})
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert [name for name, _ in iter_local_tree(tmp_path / "link")] == ["x.txt"]


@needs_symlinks
def test_tree_refuses_symlink_cycles(tmp_path: Path) -> None:
    _tree(tmp_path, {"a/x.txt": b"x"})
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafePath, match="cycle"):
        list(iter_local_tree(tmp_path))


@needs_symlinks
def test_tree_refuses_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "one").symlink_to(tmp_path / "two")
    (tmp_path / "two").symlink_to(tmp_path / "one")
    with pytest.raises(UnsafePath, match="loop"):
        list(iter_local_tree(tmp_path))


@needs_symlinks
def test_tree_refuses_dangling_symlinks(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(ArtifactNotFound, match="'dangling'"):
        list(iter_local_tree(tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_tree_refuses_special_files_instead_of_skipping_them(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InvalidArgument, match="'pipe' is neither a regular file"):
        list(iter_local_tree(tmp_path))


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem that keeps any bytes")
@pytest.mark.parametrize(
    "name",
    ["a%2e%2e", "bad:name", "x?y", "ctl\x01", b"\xff-not-utf8".decode(errors="surrogateescape")],
)
def test_tree_refuses_local_names_that_are_not_safe_paths(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(UnsafePath):
        list(iter_local_tree(tmp_path))


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem that keeps NFD and NFC")
def test_tree_refuses_names_that_normalise_to_the_same_path(tmp_path: Path) -> None:
    (tmp_path / "\u00e9.txt").write_bytes(b"nfc")
    (tmp_path / "e\u0301.txt").write_bytes(b"nfd")
    with pytest.raises(InvalidArgument, match="two local files"):
        list(iter_local_tree(tmp_path))
