"""Names that look alike: UTS #39 skeletons, and the characters no name may hold.

Non-ASCII test strings are written as escapes: the point of this file is that they look like
ASCII (and ruff, rightly, flags such literals).
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.domain import lookalikes
from modelyard.domain import validation as v
from modelyard.domain.lookalikes import (
    code_point,
    describe_invisible,
    invisible_character,
    skeleton,
)
from modelyard.errors import InvalidArgument

CYRILLIC_BASELINE = "b\u0430seline"  # CYRILLIC SMALL LETTER A
CYRILLIC_PAYPAL = "\u0440\u0430\u0443\u0440\u0430l"  # er, a, u, er, a (Cyrillic) + Latin l
FULLWIDTH_BASELINE = "".join(chr(ord(c) + 0xFEE0) for c in "baseline")
MODEL_RU = "\u043c\u043e\u0434\u0435\u043b\u044c"  # Russian for "model"

# -------------------------------------------------------------------------- skeletons


@pytest.mark.parametrize(("one", "other"), [
    ("baseline", CYRILLIC_BASELINE),
    ("paypal", CYRILLIC_PAYPAL),
    ("baseline", FULLWIDTH_BASELINE),
    ("l", "1"),
    ("l", "I"),
    ("1", "I"),
    ("model", "rnodel"),  # 'm' looks like 'rn'
    ("scope", "\u0455\u0441\u043e\u0440\u0435"),  # all Cyrillic
    ("Default", "DefauIt"),
    ("x2", "x\u00b2"),  # SUPERSCRIPT TWO: a compatibility character counts as its decomposition
    ("fin", "\ufb01n"),  # LATIN SMALL LIGATURE FI
    ("a/b", "a\u2215b"),  # DIVISION SLASH
    ("\u00e9t\u00e9", "e\u0301te\u0301"),  # one text in NFC and in NFD
])
def test_known_look_alikes_have_one_skeleton(one: str, other: str) -> None:
    assert one != other
    assert skeleton(one) == skeleton(other)


def test_l_1_and_i_are_consistent() -> None:
    # and SMALL ROMAN NUMERAL FIFTY, CYRILLIC LETTER PALOCHKA
    shapes = {skeleton(c) for c in ("l", "1", "I", "|", "\u217c", "\u04c0")}
    assert shapes == {"l"}


@pytest.mark.parametrize(("one", "other"), [
    (MODEL_RU, "model"),
    ("Baseline", "baseline"),  # case is visible
    ("caf\u00e9", "cafe"),  # an accent is visible
    ("experiment-1", "experiment-2"),
    ("\u65e5\u672c", "\u4e2d\u56fd"),  # two Han words
    ("run 1", "run1"),
    ("a-b", "a_b"),
])
def test_names_that_differ_visibly_have_different_skeletons(one: str, other: str) -> None:
    assert skeleton(one) != skeleton(other)


def test_ascii_prototypes_are_themselves() -> None:
    for name in ("baseline", "paypal", "Default", "model-v2_final.3", ""):
        assert skeleton(skeleton(name)) == skeleton(name)
    assert skeleton("") == ""


def test_the_whole_table_settles_and_is_stable() -> None:
    """Every character the data maps, and every character of every prototype, has a stable
    skeleton: nothing cycles, and a prototype is its own skeleton."""
    table = lookalikes._prototypes()
    assert len(table) > 6000  # the data really was read
    assert table[CYRILLIC_BASELINE[1]] == "a"
    chars = set(table) | {c for proto in table.values() for c in proto}
    for ch in chars:
        once = skeleton(ch)
        assert skeleton(once) == once, code_point(ch)
    for proto in table.values():
        assert skeleton(proto) == proto
    # The package's right-to-left entries are wrapped in LEFT-TO-RIGHT MARKs; none is left.
    assert not any("\u200e" in k or "\u200e" in p for k, p in table.items())


def test_mutual_single_look_alikes_map_to_one_prototype() -> None:
    """Two characters the data lists only as each other's look-alike (HEBREW ACCENT DEHI and
    TIPEHA) get one skeleton, whichever way round they are asked."""
    dehi, tipeha = "\u05ad", "\u0596"
    assert skeleton(dehi) == skeleton(tipeha) == tipeha  # the lower code point


_TABLE_CHARS = sorted(lookalikes._prototypes())
_MIXED = st.one_of(
    st.sampled_from(_TABLE_CHARS),
    st.sampled_from(["\u0301", "\u0308", "\u0327", "\u05b4", "\u093c", " ", "a", "1"]),
    st.characters(),
)


@settings(max_examples=500, deadline=None)
@given(text=st.text(_MIXED, max_size=20))
def test_skeleton_is_idempotent(text: str) -> None:
    once = skeleton(text)
    assert skeleton(once) == once
    assert unicodedata.is_normalized("NFD", once)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30))
def test_skeleton_is_idempotent_on_any_text(text: str) -> None:
    once = skeleton(text)
    assert skeleton(once) == once


def test_the_table_is_loaded_lazily() -> None:
    """Importing modelyard (and the stores and paths that use skeletons) reads no data; nor do
    an ASCII artifact path and a name check. The first skeleton does."""
    code = (
        "import sys, modelyard, modelyard.stores.sql.experiments, modelyard.artifacts.paths\n"
        "from modelyard.domain import lookalikes, validation\n"
        "from modelyard.artifacts.paths import normalize_artifact_path\n"
        "validation.validate_experiment_name('baseline')\n"
        "normalize_artifact_path('a/b c.txt')\n"
        "assert lookalikes._prototypes.cache_info().currsize == 0\n"
        "assert 'confusable_homoglyphs' not in sys.modules\n"
        "assert lookalikes.skeleton('b\\u0430seline') == 'baseline'\n"
        "assert lookalikes._prototypes.cache_info().currsize == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------- invisible characters

INVISIBLE = [
    ("\u200b", "invisible character U+200B ZERO WIDTH SPACE"),
    ("\u200c", "U+200C ZERO WIDTH NON-JOINER"),
    ("\u200d", "U+200D ZERO WIDTH JOINER"),
    ("\u2060", "U+2060 WORD JOINER"),
    ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("\u00ad", "U+00AD SOFT HYPHEN"),
    ("\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    ("\u180e", "U+180E MONGOLIAN VOWEL SEPARATOR"),
    # bidirectional controls: they reorder the text around them
    ("\u200e", "bidirectional control character U+200E LEFT-TO-RIGHT MARK"),
    ("\u200f", "bidirectional control character U+200F RIGHT-TO-LEFT MARK"),
    ("\u061c", "bidirectional control character U+061C ARABIC LETTER MARK"),
    ("\u202a", "U+202A LEFT-TO-RIGHT EMBEDDING"),
    ("\u202b", "U+202B RIGHT-TO-LEFT EMBEDDING"),
    ("\u202c", "U+202C POP DIRECTIONAL FORMATTING"),
    ("\u202d", "U+202D LEFT-TO-RIGHT OVERRIDE"),
    ("\u202e", "bidirectional control character U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ("\u2067", "U+2067 RIGHT-TO-LEFT ISOLATE"),
    ("\u2068", "U+2068 FIRST STRONG ISOLATE"),
    ("\u2069", "U+2069 POP DIRECTIONAL ISOLATE"),
    # surrogates, private use, unassigned
    ("\ud800", "lone surrogate U+D800"),
    ("\ue000", "private-use character U+E000"),
    ("\U000f0000", "private-use character U+F0000"),
    ("\u0378", "unassigned code point U+0378"),
    ("\U000e0fff", "unassigned code point U+E0FFF"),
    # line and paragraph separators, and every space but U+0020
    ("\u2028", "U+2028 LINE SEPARATOR"),
    ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
    ("\u00a0", "U+00A0 NO-BREAK SPACE"),
    ("\u2002", "U+2002 EN SPACE"),
    ("\u2003", "U+2003 EM SPACE"),
    ("\u2009", "U+2009 THIN SPACE"),
    ("\u202f", "U+202F NARROW NO-BREAK SPACE"),
    ("\u3000", "U+3000 IDEOGRAPHIC SPACE"),
    # variation selectors, and blanks that are letters, marks or symbols by category
    ("\ufe00", "U+FE00 VARIATION SELECTOR-1"),
    ("\ufe0f", "U+FE0F VARIATION SELECTOR-16"),
    ("\U000e0100", "U+E0100 VARIATION SELECTOR-17"),
    ("\U000e01ef", "U+E01EF VARIATION SELECTOR-256"),
    ("\u180b", "U+180B MONGOLIAN FREE VARIATION SELECTOR ONE"),
    ("\u034f", "U+034F COMBINING GRAPHEME JOINER"),
    ("\u115f", "U+115F HANGUL CHOSEONG FILLER"),
    ("\u1160", "U+1160 HANGUL JUNGSEONG FILLER"),
    ("\u3164", "U+3164 HANGUL FILLER"),
    ("\uffa0", "U+FFA0 HALFWIDTH HANGUL FILLER"),
    ("\u17b4", "U+17B4 KHMER VOWEL INHERENT AQ"),
    ("\u2800", "U+2800 BRAILLE PATTERN BLANK"),
    ("\ufffd", "replacement character U+FFFD"),
]

VALIDATORS: list[tuple[Callable[[object], str], str]] = [
    (v.validate_experiment_name, "name"),
    (v.validate_run_name, "run_name"),
    (v.validate_user_id, "user_id"),
]


@pytest.mark.parametrize(("ch", "described"), INVISIBLE,
                         ids=[f"U+{ord(c):04X}" for c, _ in INVISIBLE])
def test_invisible_characters_are_found_and_described(ch: str, described: str) -> None:
    assert invisible_character(f"base{ch}line") == ch
    assert described in describe_invisible(ch)
    assert f"U+{ord(ch):04X}" in describe_invisible(ch)


@pytest.mark.parametrize(("ch", "described"), INVISIBLE,
                         ids=[f"U+{ord(c):04X}" for c, _ in INVISIBLE])
@pytest.mark.parametrize(("validate", "field"), VALIDATORS, ids=[f for _, f in VALIDATORS])
def test_every_name_refuses_invisible_characters_naming_the_code_point(
    ch: str, described: str, validate: Callable[[object], str], field: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate(f"base{ch}line")
    assert exc.value.field == field
    assert f"U+{ord(ch):04X}" in exc.value.message
    assert exc.value.message.startswith(f"{field} ")


def test_the_message_names_the_field_and_the_character() -> None:
    with pytest.raises(InvalidArgument) as exc:
        v.validate_experiment_name("base\u200bline")
    assert exc.value.message == "name contains the invisible character U+200B ZERO WIDTH SPACE"
    with pytest.raises(InvalidArgument) as exc:
        v.validate_run_name("x\u202etxt.exe")
    assert exc.value.message == (
        "run_name contains the bidirectional control character U+202E RIGHT-TO-LEFT OVERRIDE")


@pytest.mark.parametrize("name", [
    "baseline",
    "my experiment 2",  # U+0020 is the one space allowed
    "caf\u00e9",
    MODEL_RU,
    "\u65e5\u672c\u8a9e\u306e\u5b9f\u9a13",  # Japanese
    "\u0645\u062f\u0644",  # Arabic, right to left without any control
    "\u05de\u05d5\u05d3\u05dc",  # Hebrew
    "\u0915\u094d\u0937",  # Devanagari with a virama
    "\U0001f642 smile",  # an emoji without a variation selector
    CYRILLIC_BASELINE,  # a look-alike is a store-level question, not a validation one
])
def test_visible_names_are_accepted_unchanged(name: str) -> None:
    for validate, _ in VALIDATORS:
        assert validate(name) == name


def test_names_are_nfc_but_never_nfkc() -> None:
    """Nothing a user stores is altered in silence: compatibility characters stay."""
    for name in ("x\u00b2", "\ufb01nal", FULLWIDTH_BASELINE, "\u2460 first"):
        assert v.validate_experiment_name(name) == name
    assert v.validate_experiment_name("e\u0301t\u00e9") == "\u00e9t\u00e9"


def test_surrounding_blanks_are_still_stripped_but_inner_ones_refused() -> None:
    assert v.validate_experiment_name("\u00a0baseline\u3000") == "baseline"
    with pytest.raises(InvalidArgument, match="U\\+00A0"):
        v.validate_experiment_name("base\u00a0line")


def test_controls_keep_their_message() -> None:
    with pytest.raises(InvalidArgument, match="must not contain control characters"):
        v.validate_experiment_name("a\x07b")


def test_ascii_fast_path_agrees_with_the_full_test() -> None:
    for code in range(128):
        ch = chr(code)
        assert (invisible_character(ch) is not None) == lookalikes._is_hidden(ch, False), code


def test_code_point_without_a_name() -> None:
    assert code_point("\x07") == "U+0007"
    assert code_point("\u0378") == "U+0378"
    assert code_point("a") == "U+0061 LATIN SMALL LETTER A"


# -------------------------------------------------------------------------- keys stay ASCII


@pytest.mark.parametrize("key", [
    "b\u0430seline", "base\u200bline", "a\u00a0b", "\uff41", "caf\u00e9", "x\u202e", "k\ufe0f",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit for str.isdigit, not for keys
])
def test_keys_accept_only_ascii_letters_digits_and_punctuation(key: str) -> None:
    for field in ("metric key", "param key", "tag key"):
        with pytest.raises(InvalidArgument) as exc:
            v.validate_key(key, field=field)
        assert exc.value.field == field


def test_ascii_keys_are_accepted() -> None:
    assert v.validate_key("train/loss_1-a.b c", field="metric key") == "train/loss_1-a.b c"
