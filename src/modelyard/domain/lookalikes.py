"""Characters that hide, and text that looks like other text.

Two rules keep one name from passing for another:

- :func:`invisible_character` finds a character that shows nothing, or reorders the text
  around it: ``base\\u200bline`` displays as ``baseline``, and a RIGHT-TO-LEFT OVERRIDE makes
  ``x\\u202etxt.exe`` display as ``xexe.txt``. Names and artifact paths refuse them.
- :func:`skeleton` is the Unicode UTS #39 skeleton: strings with the same skeleton look alike
  (``b\\u0430seline`` with a Cyrillic a, ``baseline`` in fullwidth letters U+FF41... and
  ``baseline`` all have the skeleton ``baseline``), strings that differ visibly have different
  ones. It is a comparison key only: nothing a user stores is replaced by its skeleton.

The confusables table is read from the ``confusable-homoglyphs`` package (Unicode's
``confusables.txt``) once per process, the first time a skeleton is asked for, so importing this
module costs nothing.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources

__all__ = ["code_point", "describe_invisible", "invisible_character", "skeleton"]

# Categories that are never visible text: controls, format characters (ZERO WIDTH SPACE, the
# joiners, LRM/RLM, the bidi embeddings, overrides and isolates, BOM, SOFT HYPHEN, WORD
# JOINER, tag characters...), lone surrogates, private use, unassigned code points, and the
# line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Blank although their category says letter, mark or symbol (Unicode's Default_Ignorable
# code points outside the categories above, and the blanks that are not).
_BLANKS = frozenset(
    "\u034f"  # COMBINING GRAPHEME JOINER
    "\u115f\u1160\u3164\uffa0"  # the Hangul fillers
    "\u17b4\u17b5"  # KHMER VOWEL INHERENT AQ and AA
    "\u180b\u180c\u180d\u180f"  # the Mongolian free variation selectors
    "\u2800"  # BRAILLE PATTERN BLANK
)
_VARIATION_SELECTORS = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
# What reorders the text around it (Trojan Source): the marks, embeddings, overrides, isolates.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067"
                           "\u2068\u2069")
_REPLACEMENT = "\ufffd"  # what undecodable bytes become: two different inputs, one text
_KINDS = {"Cc": "control character", "Cs": "lone surrogate", "Co": "private-use character",
          "Cn": "unassigned code point"}


def _is_hidden(ch: str, spaces: bool) -> bool:
    if ch in _BLANKS or ch == _REPLACEMENT:
        return True
    category = unicodedata.category(ch)
    if category in _HIDDEN_CATEGORIES or (category == "Zs" and ch != " " and not spaces):
        return True
    code = ord(ch)
    return any(low <= code <= high for low, high in _VARIATION_SELECTORS)


def invisible_character(text: str, *, spaces: bool = False) -> str | None:
    """The first character of ``text`` that is invisible or reorders text, or None.

    Refused: categories Cc, Cf, Cs, Co, Cn, Zl and Zp; every space separator (Zs) but U+0020
    SPACE (NO-BREAK SPACE, the en and em spaces, IDEOGRAPHIC SPACE...) unless ``spaces``
    (file names hold them: macOS names screenshots "... 10.00.00\u202fAM.png"); the variation
    selectors U+FE00-U+FE0F and U+E0100-U+E01EF; COMBINING GRAPHEME JOINER, the Hangul
    fillers, the Khmer inherent vowels and the Mongolian free variation selectors; U+2800
    BRAILLE PATTERN BLANK; and U+FFFD REPLACEMENT CHARACTER.
    """
    if text.isascii():  # the common case: only C0 controls and DEL can hide in ASCII
        return next((ch for ch in text if ch < " " or ch == "\x7f"), None)
    return next((ch for ch in text if _is_hidden(ch, spaces)), None)


def code_point(ch: str) -> str:
    """A character for messages: its code point and Unicode name, ``U+200B ZERO WIDTH SPACE``
    (the code point alone when it has no name: controls, unassigned code points...)."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"U+{ord(ch):04X}"


def describe_invisible(ch: str) -> str:
    """What a character :func:`invisible_character` found is, for messages: ``the invisible
    character U+200B ZERO WIDTH SPACE``, ``the bidirectional control character U+202E
    RIGHT-TO-LEFT OVERRIDE``, ``the unassigned code point U+0378``..."""
    if ch in _BIDI_CONTROLS:
        return f"the bidirectional control character {code_point(ch)}"
    if ch == _REPLACEMENT:
        return f"the replacement character U+{ord(ch):04X} (what undecodable bytes become)"
    kind = _KINDS.get(unicodedata.category(ch), "invisible character")
    return f"the {kind} {code_point(ch)}"


# -- skeletons -------------------------------------------------------------------------------

_LRM = "\u200e"  # the package wraps right-to-left characters in LEFT-TO-RIGHT MARKs
_MAX_ROUNDS = 8


def _confusables() -> dict[str, list[str]]:
    """The package's data: each character or sequence -> the ones it is confusable with.

    Read from the packaged file through importlib.resources rather than through the package's
    functions: those answer "is this string confusable with some script" and expose neither
    the prototypes nor a way to enumerate them, and the module-level ``confusables_data`` is
    loaded at import from a directory an environment variable (``CONFUSABLE_DATA``) may
    redirect. Skeletons are stored in the database, so they must come from the data as
    installed, the same in every process.
    """
    data_file = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(data_file.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for key, entries in data.items():
        out.setdefault(key.replace(_LRM, ""), []).extend(e["c"].replace(_LRM, "") for e in entries)
    return out


def _skeleton_with(table: dict[str, str], text: str) -> str:
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", text):
        proto = table.get(ch)
        if proto is None:
            # Not in the data: a compatibility character (fullwidth U+FF42 b, superscript 2,
            # the ligature fi U+FB01) looks like what it decomposes to.
            folded = unicodedata.normalize("NFKD", ch)
            proto = ch if folded == ch else "".join(table.get(c, c) for c in folded)
        out.append(proto)
    return unicodedata.normalize("NFD", "".join(out))


@functools.cache
def _prototypes() -> dict[str, str]:
    """Character -> its prototype (in skeleton form), for every character that has one.

    ``confusables.txt`` maps each confusable character onto one prototype, but the package
    stores every pair in both directions: the entry of a prototype such as ``a`` lists all its
    look-alikes, the entry of a look-alike such as U+0430 CYRILLIC SMALL LETTER A lists its
    prototype. So a character with several entries is a prototype; one whose single entry is
    a sequence, or a character with several entries, maps onto it; and of two characters that
    list only each other, the lower code point is taken as the prototype (the data no longer
    says which one Unicode chose; either way both get the same skeleton).
    """
    data = _confusables()
    direct: dict[str, str] = {}
    for char, alikes in data.items():
        if len(char) != 1 or len(alikes) != 1:
            continue  # a sequence, or a character several others look like: a prototype
        (other,) = alikes
        if len(other) == 1 and data.get(other) == [char] and char < other:
            continue  # a pair that lists only each other: the lower one is the prototype
        direct[char] = other
    # A prototype is in skeleton form itself, so that skeleton() is stable:
    # skeleton(skeleton(x)) == skeleton(x).
    table: dict[str, str] = {}
    for char, proto in direct.items():
        for _ in range(_MAX_ROUNDS):
            again = _skeleton_with(direct, proto)
            if again == proto:
                break
            proto = again
        else:  # pragma: no cover - a cycle in the data; a test loads the whole table
            raise RuntimeError(f"the confusables of U+{ord(char):04X} do not settle")
        if proto != char:
            table[char] = proto
    return table


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of ``text``: what it looks like, as a comparison key.

    Per UTS #39: the NFD form, each character replaced by its prototype from Unicode's
    confusables data, and the result in NFD again. A character the data does not list but
    that has a compatibility decomposition (fullwidth and superscript forms, ligatures) counts
    as that decomposition. Case is kept (``Baseline`` and ``baseline`` differ visibly). Stable:
    ``skeleton(skeleton(x)) == skeleton(x)``.
    """
    return _skeleton_with(_prototypes(), text)
