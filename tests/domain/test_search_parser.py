"""The search grammar: what it accepts, how it groups, how it refuses, and render/parse."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.domain.search import (
    ATTRIBUTE_ALIASES,
    MAX_NESTING,
    NULL_OPS,
    NUMERIC_OPS,
    STRING_OPS,
    And,
    Comparison,
    Expr,
    Field,
    FieldKind,
    Not,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
    render,
)
from modelyard.domain.validation import MAX_FILTER_LENGTH, MAX_KEY_LENGTH, validate_key
from modelyard.errors import InvalidArgument, InvalidFilter

M, P, T, A = FieldKind.METRIC, FieldKind.PARAM, FieldKind.TAG, FieldKind.ATTRIBUTE


def cmp(kind: FieldKind, key: str, op: str, value: object = None) -> Comparison:
    return Comparison(Field(kind, key), op, value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- accepted grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # every comparator on its kind of field
        ("metrics.acc > 0.9", cmp(M, "acc", ">", 0.9)),
        ("metrics.acc >= 1", cmp(M, "acc", ">=", 1.0)),
        ("metrics.acc < 1", cmp(M, "acc", "<", 1.0)),
        ("metrics.acc <= 1", cmp(M, "acc", "<=", 1.0)),
        ("metrics.acc = 1", cmp(M, "acc", "=", 1.0)),
        ("metrics.acc != 1", cmp(M, "acc", "!=", 1.0)),
        ("metrics.acc <> 1", cmp(M, "acc", "!=", 1.0)),
        ("metrics.acc IS NULL", cmp(M, "acc", "IS NULL")),
        ("metrics.acc IS NOT NULL", cmp(M, "acc", "IS NOT NULL")),
        ("params.lr = '0.1'", cmp(P, "lr", "=", "0.1")),
        ("params.lr != '0.1'", cmp(P, "lr", "!=", "0.1")),
        ("params.opt LIKE 'ad%'", cmp(P, "opt", "LIKE", "ad%")),
        ("params.opt ILIKE 'AD_m'", cmp(P, "opt", "ILIKE", "AD_m")),
        ("params.opt IN ('adam', 'sgd')", cmp(P, "opt", "IN", ("adam", "sgd"))),
        ("params.opt NOT IN ('adam')", cmp(P, "opt", "NOT IN", ("adam",))),
        ("tags.team IS NULL", cmp(T, "team", "IS NULL")),
        ("tags.team IS NOT NULL", cmp(T, "team", "IS NOT NULL")),
        ("attributes.status = 'FINISHED'", cmp(A, "status", "=", "FINISHED")),
        ("attributes.start_time >= 1700000000000", cmp(A, "start_time", ">=", 1.7e12)),
        ("attributes.end_time IS NULL", cmp(A, "end_time", "IS NULL")),
        ("attributes.end_time IS NOT NULL", cmp(A, "end_time", "IS NOT NULL")),
        # quoted keys: backticks and double quotes
        ("metrics.`val loss` < 1", cmp(M, "val loss", "<", 1.0)),
        ('tags."team/owner" = \'ml\'', cmp(T, "team/owner", "=", "ml")),
        ("params.`a.b c/d` = 'x'", cmp(P, "a.b c/d", "=", "x")),
        # dotted keys without quotes
        ("metrics.val.loss < 1", cmp(M, "val.loss", "<", 1.0)),
        ("metrics.a.b.c_d-e > 0", cmp(M, "a.b.c_d-e", ">", 0.0)),
        ("metrics.train-loss < 0", cmp(M, "train-loss", "<", 0.0)),
        # numbers: negative, explicit plus, fractions, exponents of every shape
        ("metrics.loss < -1e-3", cmp(M, "loss", "<", -0.001)),
        ("metrics.loss < +2.5E+4", cmp(M, "loss", "<", 25000.0)),
        ("metrics.loss < .5", cmp(M, "loss", "<", 0.5)),
        ("metrics.loss < -.5e1", cmp(M, "loss", "<", -5.0)),
        ("metrics.loss < 3.", cmp(M, "loss", "<", 3.0)),
        ("metrics.loss < 1e308", cmp(M, "loss", "<", 1e308)),
        ("metrics.loss>-1", cmp(M, "loss", ">", -1.0)),
        ("metrics.loss=-0", cmp(M, "loss", "=", 0.0)),
        # strings: both quote styles, doubled and escaped quotes, backslashes, unicode
        ("params.s = 'it''s'", cmp(P, "s", "=", "it's")),
        ("params.s = 'it\\'s'", cmp(P, "s", "=", "it's")),
        ('params.s = "say \\"hi\\""', cmp(P, "s", "=", 'say "hi"')),
        ("params.s = 'a\\\\b'", cmp(P, "s", "=", "a\\b")),
        ("params.s = ''", cmp(P, "s", "=", "")),
        ("params.s = 'ünï cödé ✓'", cmp(P, "s", "=", "ünï cödé ✓")),
        ("params.s = 'and or not'", cmp(P, "s", "=", "and or not")),
        # keywords and kinds in any case; aliases of kinds and attributes
        ("METRICS.acc > 1", cmp(M, "acc", ">", 1.0)),
        ("Metric.acc > 1", cmp(M, "acc", ">", 1.0)),
        ("param.a = 'x'", cmp(P, "a", "=", "x")),
        ("parameters.a = 'x'", cmp(P, "a", "=", "x")),
        ("tag.a = 'x'", cmp(T, "a", "=", "x")),
        ("attr.name = 'x'", cmp(A, "run_name", "=", "x")),
        ("run.id = 'x'", cmp(A, "run_id", "=", "x")),
        ("attributes.USER = 'x'", cmp(A, "user_id", "=", "x")),
        ("status = 'RUNNING'", cmp(A, "status", "=", "RUNNING")),
        ("start_time > 5", cmp(A, "start_time", ">", 5.0)),
        ("params.a like 'x'", cmp(P, "a", "LIKE", "x")),
        ("params.a iLiKe 'x'", cmp(P, "a", "ILIKE", "x")),
        ("params.a not in ('x')", cmp(P, "a", "NOT IN", ("x",))),
        ("params.a Not In ('x', \"y\")", cmp(P, "a", "NOT IN", ("x", "y"))),
        ("params.a in ('x')", cmp(P, "a", "IN", ("x",))),
        ("metrics.a is null", cmp(M, "a", "IS NULL")),
        ("metrics.a Is Not Null", cmp(M, "a", "IS NOT NULL")),
        # keys that look like keywords are still keys
        ("metrics.and > 1", cmp(M, "and", ">", 1.0)),
        ("params.not = 'x'", cmp(P, "not", "=", "x")),
        # whitespace of any kind
        ("\tmetrics.acc\n>\r\n1  ", cmp(M, "acc", ">", 1.0)),
    ],
)
def test_accepts_the_documented_grammar(text: str, expected: Expr) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_blank_filter_means_no_filter(text: str | None) -> None:
    assert parse_filter(text) is None


a = cmp(M, "a", ">", 1.0)
b = cmp(M, "b", ">", 2.0)
c = cmp(M, "c", ">", 3.0)
d = cmp(M, "d", ">", 4.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.a > 1 or metrics.b > 2 and metrics.c > 3", Or((a, And((b, c))))),
        ("metrics.a > 1 and metrics.b > 2 or metrics.c > 3", Or((And((a, b)), c))),
        ("not metrics.a > 1 and metrics.b > 2", And((Not(a), b))),
        ("not metrics.a > 1 or metrics.b > 2", Or((Not(a), b))),
        ("metrics.a > 1 and not metrics.b > 2", And((a, Not(b)))),
        ("not not metrics.a > 1", Not(Not(a))),
        ("not (metrics.a > 1 or metrics.b > 2)", Not(Or((a, b)))),
        ("(metrics.a > 1 or metrics.b > 2) and metrics.c > 3", And((Or((a, b)), c))),
        ("metrics.a > 1 and (metrics.b > 2 or metrics.c > 3)", And((a, Or((b, c))))),
        ("metrics.a > 1 and metrics.b > 2 and metrics.c > 3", And((a, b, c))),
        ("metrics.a > 1 or metrics.b > 2 or metrics.c > 3", Or((a, b, c))),
        (
            "metrics.a > 1 or metrics.b > 2 and not metrics.c > 3 or metrics.d > 4",
            Or((a, And((b, Not(c))), d)),
        ),
        ("((metrics.a > 1))", a),
        ("(metrics.a > 1) AND (metrics.b > 2)", And((a, b))),
        ("metrics.a > 1 AND metrics.b > 2 OR metrics.c > 3", Or((And((a, b)), c))),
    ],
)
def test_precedence_not_binds_tighter_than_and_tighter_than_or(text: str, expected: Expr) -> None:
    assert parse_filter(text) == expected


# --------------------------------------------------------------------------- refused filters


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("metrics.x > 'a'", ["expected a number", "position 12", "'a'"]),
        ("metrics.x >", ["expected a number", "position 11", "end of filter"]),
        ("metrics.x", ["expected a comparator", "position 9", "end of filter"]),
        ("metrics.x = = 1", ["expected a number", "position 12"]),
        ("params.a = 1", ["expected a quoted string", "position 11"]),
        ("params.a > 'x'", ["comparator >", "position 9", "params.a", "LIKE"]),
        ("params.a < 'b'", ["comparator <", "position 9", "params.a"]),
        ("metrics.x LIKE 'a'", ["comparator LIKE", "position 10", "metrics.x"]),
        ("attributes.start_time LIKE 'a'", ["comparator LIKE", "position 22", "start_time"]),
        ("foo.x = 1", ["expected metrics., params., tags. or attributes.", "position 0", "'foo'"]),
        ("metrics x = 1", ["expected '.'", "position 8"]),
        ("metrics. = 1", ["expected a key after metrics.", "position 9"]),
        ("metrics.`` = 1", ["expected a non-empty key", "position 8"]),
        ("attributes.foo = 'x'", ["unknown attribute 'foo'", "position 11", "start_time"]),
        ("attributes.status IS NULL", ["IS NULL", "attributes.status", "position 18"]),
        ("metrics.x = 1 and", ["expected a field", "position 17", "end of filter"]),
        ("metrics.x = 1 or", ["expected a field", "position 16", "end of filter"]),
        ("and metrics.x = 1", ["position 0", "'and'"]),
        ("not", ["expected a field", "position 3"]),
        ("()", ["expected a field", "position 1", "')'"]),
        ("(metrics.x = 1", ["expected ')'", "position 14", "end of filter"]),
        ("metrics.x = 1)", ["expected 'and', 'or' or end of filter", "position 13", "')'"]),
        ("metrics.x = 1 metrics.y = 2", ["expected 'and', 'or' or end of filter", "position 14"]),
        ("params.a NOT LIKE 'x'", ["expected IN after NOT", "position 13", "'LIKE'"]),
        ("params.a IS 'x'", ["expected NULL", "position 12"]),
        ("params.a IS NOT 'x'", ["expected NULL", "position 16"]),
        ("params.a IN 'x'", ["expected '('", "position 12"]),
        ("params.a IN ('x' 'y')", ["expected ')'", "position 17"]),
        ("params.a IN ()", ["expected a quoted string", "position 13"]),
        ("metrics.x = 1 # 2", ["unexpected character '#'", "position 14"]),
        ("params.a = 'unterminated", ["position 11"]),
        ("metrics.x = 1e", ["position 12"]),
        ("metrics.x = --1", ["position 12"]),
        ("metrics.x > 1e999", ["out of range", "position 12"]),
        ("attributes.start_time > 1e30", ["out of range", "position 24", "start_time"]),
        ("metrics.x = 1\x00", ["NUL", "position 13"]),
    ],
)
def test_errors_name_the_position_and_what_was_expected(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidFilter) as exc:
        parse_filter(text)
    err = exc.value
    assert err.field == "filter"
    assert isinstance(err, InvalidArgument)
    for fragment in fragments:
        assert fragment in err.message, (fragment, err.message)


def test_filter_length_limit() -> None:
    # a valid filter of exactly the limit is parsed; one character more is refused
    head = "params.a = '"
    at_limit = head + "x" * (MAX_FILTER_LENGTH - len(head) - 1) + "'"
    assert len(at_limit) == MAX_FILTER_LENGTH
    assert parse_filter(at_limit) == cmp(P, "a", "=", "x" * (MAX_FILTER_LENGTH - len(head) - 1))
    with pytest.raises(InvalidFilter, match=str(MAX_FILTER_LENGTH)):
        parse_filter(at_limit[:-1] + "x'")


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "not " * n + "metrics.a > 1",
        lambda n: "(" * n + "metrics.a > 1" + ")" * n,
        lambda n: "not (metrics.a > 1 or " * n + "metrics.b > 2" + ")" * n,
        lambda n: "(metrics.a > 1 and " * n + "metrics.b > 2" + ")" * n,
    ],
    ids=["not", "parens", "not-or", "and"],
)
def test_nesting_is_bounded(make: object) -> None:
    """Deep nesting is refused with a position, never a RecursionError (a 500)."""
    build = make  # type: ignore[assignment]
    parse_filter(build(MAX_NESTING // 2))  # type: ignore[operator]
    with pytest.raises(InvalidFilter, match="deeper than"):
        parse_filter(build(300))  # type: ignore[operator]


# --------------------------------------------------------------------------- render / parse

_KEY_CHARS = "abcxyzABZ019_-. /"


def _valid_key(text: str) -> bool:
    try:
        validate_key(text, field="k")
    except InvalidArgument:
        return False
    return True


keys = st.one_of(
    st.sampled_from(["acc", "val.loss", "a-b", "x_1", "and", "not", "loss/train", "my key"]),
    st.text(alphabet=_KEY_CHARS, min_size=1, max_size=12),
).filter(_valid_key)

strings = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
) | st.sampled_from(["", "'", "''", "\\", "\\'", '"', "%", "_", "a'b\\c", "`", "\n"])

numbers = st.floats(allow_nan=False, allow_infinity=False)
times = st.floats(min_value=-1e18, max_value=1e18) | st.integers(0, 2**53).map(float)


@st.composite
def comparisons(draw: st.DrawFn) -> Comparison:
    kind = draw(st.sampled_from([M, P, T, A]))
    if kind is A:
        key = draw(st.sampled_from(sorted(set(ATTRIBUTE_ALIASES.values()))))
    else:
        key = draw(keys)
    field = Field(kind, key)
    ops = sorted(NUMERIC_OPS if field.is_numeric else STRING_OPS)
    if kind is not A or key == "end_time":
        ops += sorted(NULL_OPS)
    op = draw(st.sampled_from(ops))
    if op in NULL_OPS:
        return Comparison(field, op, None)
    if op in ("IN", "NOT IN"):
        return Comparison(field, op, tuple(draw(st.lists(strings, min_size=1, max_size=4))))
    if field.is_numeric:
        return Comparison(field, op, draw(times if kind is A else numbers))
    return Comparison(field, op, draw(strings))


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    many = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(many.map(And), many.map(Or), children.map(Not))


asts: st.SearchStrategy[Expr] = st.recursive(comparisons(), _extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(asts)
def test_parse_of_render_is_identity(expr: Expr) -> None:
    text = render(expr)
    assert parse_filter(text) == expr
    # rendering is canonical: a second round gives the same text
    assert render(parse_filter(text)) == text  # type: ignore[arg-type]


@given(keys)
def test_any_valid_key_roundtrips_as_a_field(key: str) -> None:
    for kind in (M, P, T):
        expr = Comparison(Field(kind, key), "IS NULL", None)
        assert parse_filter(render(expr)) == expr


def test_longest_key_roundtrips() -> None:
    key = "k" * MAX_KEY_LENGTH
    assert parse_filter(f"metrics.{key} > 1") == cmp(M, key, ">", 1.0)


def test_render_quotes_only_what_needs_quoting() -> None:
    assert render(cmp(M, "val.loss", "<", 1.0)) == "metrics.val.loss < 1.0"
    assert render(cmp(M, "val loss", "<", 1.0)) == "metrics.`val loss` < 1.0"
    assert render(cmp(P, "a", "=", "it's")) == "params.a = 'it\\'s'"
    assert re.fullmatch(r"\(.* and .*\)", render(And((a, b))))


# --------------------------------------------------------------------------- order_by


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        ("metrics.acc DESC", OrderKey(Field(M, "acc"), ascending=False)),
        ("metrics.acc desc", OrderKey(Field(M, "acc"), ascending=False)),
        ("metrics.acc ASC", OrderKey(Field(M, "acc"), ascending=True)),
        ("metrics.acc", OrderKey(Field(M, "acc"), ascending=True)),
        ("params.`a b` asc", OrderKey(Field(P, "a b"), ascending=True)),
        ("tags.x DeSc", OrderKey(Field(T, "x"), ascending=False)),
        ("metrics.val.loss DESC", OrderKey(Field(M, "val.loss"), ascending=False)),
        ("attributes.start_time", OrderKey(Field(A, "start_time"))),
        ("start_time DESC", OrderKey(Field(A, "start_time"), ascending=False)),
        ("attributes.name", OrderKey(Field(A, "run_name"))),
        ("  attributes.end_time   ASC  ", OrderKey(Field(A, "end_time"))),
    ],
)
def test_order_by_parses(clause: str, expected: OrderKey) -> None:
    assert parse_order_by([clause]) == (expected,)


def test_order_by_several_keys_and_none() -> None:
    assert parse_order_by(None) == ()
    assert parse_order_by([]) == ()
    assert parse_order_by(("metrics.a DESC", "params.b")) == (
        OrderKey(Field(M, "a"), False),
        OrderKey(Field(P, "b"), True),
    )


@pytest.mark.parametrize(
    ("clause", "fragment"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        (1, "non-empty"),
        (None, "non-empty"),
        ("metrics.acc sideways", "expected ASC, DESC or end at position 12"),
        ("metrics.acc desc desc", "expected ASC, DESC or end at position 17"),
        ("foo.x", "expected metrics., params., tags. or attributes. at position 0"),
        ("metrics.", "expected a key after metrics."),
        ("attributes.nope", "unknown attribute 'nope'"),
        ("metrics.a\x00", "NUL"),
    ],
)
def test_order_by_errors(clause: object, fragment: str) -> None:
    with pytest.raises(InvalidFilter) as exc:
        parse_order_by([clause])  # type: ignore[list-item]
    assert exc.value.field == "order_by"
    assert fragment in exc.value.message
