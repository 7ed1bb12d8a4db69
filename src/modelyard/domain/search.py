"""The run-search filter grammar: a tokenizer, a recursive-descent parser to an AST, a renderer.

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field op value | field "IS" ["NOT"] "NULL"
    field      := ("metrics" | "params" | "tags" | "attributes") "." key
    key        := identifier | "quoted" | `quoted`
    op         := = != > >= < <= LIKE ILIKE IN "NOT IN"
    value      := number | 'string' | "string" | "(" value ("," value)* ")"

Keywords are case-insensitive. Precedence is the usual one: ``not`` > ``and`` > ``or``. The AST is
pure data; ``modelyard.stores.sql.search`` compiles it to SQL (it is never evaluated in Python
on the query path). A syntax error names the position and what was expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from modelyard.domain.validation import (
    MAX_FILTER_COMPARISONS,
    MAX_FILTER_LENGTH,
    MAX_INT64,
    MAX_ORDER_BY,
    MIN_INT64,
)
from modelyard.errors import InvalidFilter


class FieldKind(StrEnum):
    METRIC = "metrics"
    PARAM = "params"
    TAG = "tags"
    ATTRIBUTE = "attributes"


# Attribute name (and accepted aliases) -> canonical name; numeric attributes compare as numbers.
ATTRIBUTE_ALIASES = {
    "run_id": "run_id",
    "id": "run_id",
    "run_name": "run_name",
    "name": "run_name",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
    "user_id": "user_id",
    "user": "user_id",
    "experiment_id": "experiment_id",
}
NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
_KIND_ALIASES = {
    "metric": FieldKind.METRIC,
    "metrics": FieldKind.METRIC,
    "param": FieldKind.PARAM,
    "params": FieldKind.PARAM,
    "parameter": FieldKind.PARAM,
    "parameters": FieldKind.PARAM,
    "tag": FieldKind.TAG,
    "tags": FieldKind.TAG,
    "attribute": FieldKind.ATTRIBUTE,
    "attributes": FieldKind.ATTRIBUTE,
    "attr": FieldKind.ATTRIBUTE,
    "run": FieldKind.ATTRIBUTE,
}

Op = Literal[
    "=", "!=", ">", ">=", "<", "<=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"
]
NUMERIC_OPS = frozenset({"=", "!=", ">", ">=", "<", "<="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"})
NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})
# Deepest nesting of "not", "and", "or" and parentheses. The parser, the renderer and the SQL
# compiler recurse once per level, and SQLite's own parser overflows on filters nested ~30
# deep: beyond this a filter is refused (INVALID_FILTER) instead of failing as a 500 or 503.
MAX_NESTING = 20


@dataclass(frozen=True, slots=True)
class Field:
    kind: FieldKind
    key: str

    @property
    def is_numeric(self) -> bool:
        return self.kind is FieldKind.METRIC or (
            self.kind is FieldKind.ATTRIBUTE and self.key in NUMERIC_ATTRIBUTES
        )


Value = float | str | tuple[str, ...] | tuple[float, ...] | None


@dataclass(frozen=True, slots=True)
class Comparison:
    field: Field
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Comparison | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: Field
    ascending: bool = True


# --------------------------------------------------------------------------- tokenizer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<seg>(?<=\.)\d[\w\-]*(?=\.|\s|$|[=!<>]))
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<bq>`[^`]*`)
  | (?P<op>!=|>=|<=|<>|=|>|<)
  | (?P<punct>[(),.])
  | (?P<word>[A-Za-z_][\w\-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num str bq op punct word end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    if "\x00" in text:
        # No stored key or value can hold NUL, and PostgreSQL refuses it in text parameters.
        raise InvalidFilter(
            f"filter: NUL character at position {text.index(chr(0))} is not allowed",
            field="filter",
        )
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise InvalidFilter(
                f"filter: unexpected character {text[pos]!r} at position {pos}", field="filter"
            )
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


def _unquote(tok: _Tok) -> str:
    body = tok.text[1:-1]
    if tok.text[0] == "'":
        body = body.replace("''", "'")
    return re.sub(r"\\(.)", r"\1", body) if tok.kind == "str" else body


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.comparisons = 0
        self.depth = 0  # open "not"s and parentheses (bounds the parser's recursion)
        self.levels: dict[int, int] = {}  # id(node) -> nesting levels of and/or/not below it

    # helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text.lower() in words

    def fail(self, expected: str, tok: _Tok | None = None) -> InvalidFilter:
        tok = tok or self.peek()
        found = "end of filter" if tok.kind == "end" else repr(tok.text)
        return InvalidFilter(
            f"filter: expected {expected} at position {tok.pos}, found {found}", field="filter"
        )

    def expect_punct(self, ch: str) -> None:
        tok = self.peek()
        if tok.kind != "punct" or tok.text != ch:
            raise self.fail(f"{ch!r}")
        self.advance()

    # grammar
    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or end of filter")
        return expr

    def too_deep(self, tok: _Tok) -> InvalidFilter:
        return InvalidFilter(
            f"filter: the expression at position {tok.pos} nests 'not', 'and', 'or' and "
            f"parentheses deeper than {MAX_NESTING} levels",
            field="filter",
        )

    def node(self, expr: Expr, children: Sequence[Expr], tok: _Tok) -> Expr:
        level = 1 + max(self.levels.get(id(c), 0) for c in children)
        if level > MAX_NESTING:
            raise self.too_deep(tok)
        self.levels[id(expr)] = level
        return expr

    def or_expr(self) -> Expr:
        tok = self.peek()
        items = [self.and_expr()]
        while self.is_word("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else self.node(Or(tuple(items)), items, tok)

    def and_expr(self) -> Expr:
        tok = self.peek()
        items = [self.not_expr()]
        while self.is_word("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else self.node(And(tuple(items)), items, tok)

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.too_deep(tok)

    def not_expr(self) -> Expr:
        tok = self.peek()
        if self.is_word("not"):
            self.nest(tok)
            self.advance()
            item = self.not_expr()
            self.depth -= 1
            return self.node(Not(item), [item], tok)
        if tok.kind == "punct" and tok.text == "(":
            self.nest(tok)
            self.advance()
            expr: Expr = self.or_expr()
            self.expect_punct(")")
            self.depth -= 1
            return expr
        return self.comparison()

    def field(self) -> Field:
        tok = self.peek()
        if tok.kind != "word":
            raise self.fail("a field such as metrics.<key>, params.<key>, tags.<key> or "
                            "attributes.<name>")
        self.advance()
        kind = _KIND_ALIASES.get(tok.text.lower())
        if kind is None:
            if tok.text.lower() in ATTRIBUTE_ALIASES:  # bare attribute: status = 'FINISHED'
                return Field(FieldKind.ATTRIBUTE, ATTRIBUTE_ALIASES[tok.text.lower()])
            raise self.fail("metrics., params., tags. or attributes.", tok)
        self.expect_punct(".")
        key_tok = self.peek()
        if key_tok.kind in ("str", "bq"):
            self.advance()
            key = _unquote(key_tok)
        elif key_tok.kind == "word":
            # a key may contain dots and slashes: metrics.val.loss
            self.advance()
            key = key_tok.text
            while True:
                nxt = self.peek()
                if nxt.kind == "punct" and nxt.text == "." and (
                    self.toks[self.i + 1].kind in ("word", "seg")
                ):
                    self.advance()
                    key += "." + self.advance().text
                elif nxt.kind == "num" and re.fullmatch(r"\.\d+", nxt.text):
                    key += self.advance().text  # a numeric last segment: metrics.layer.0
                else:
                    break
        else:
            raise self.fail(f"a key after {tok.text}.")
        if not key:
            raise self.fail("a non-empty key", key_tok)
        if kind is FieldKind.ATTRIBUTE:
            canonical = ATTRIBUTE_ALIASES.get(key.lower())
            if canonical is None:
                names = ", ".join(sorted(set(ATTRIBUTE_ALIASES.values())))
                raise InvalidFilter(
                    f"filter: unknown attribute {key!r} at position {key_tok.pos}; "
                    f"known: {names}",
                    field="filter",
                )
            key = canonical
        return Field(kind, key)

    def operator(self) -> Op:
        tok = self.peek()
        if tok.kind == "op":
            self.advance()
            return "!=" if tok.text == "<>" else tok.text  # type: ignore[return-value]
        if tok.kind == "word":
            word = tok.text.upper()
            if word in ("LIKE", "ILIKE", "IN"):
                self.advance()
                return word  # type: ignore[return-value]
            if word == "NOT":
                self.advance()
                if not self.is_word("in"):
                    raise self.fail("IN after NOT")
                self.advance()
                return "NOT IN"
            if word == "IS":
                self.advance()
                negate = self.is_word("not")
                if negate:
                    self.advance()
                if not self.is_word("null"):
                    raise self.fail("NULL")
                self.advance()
                return "IS NOT NULL" if negate else "IS NULL"
        raise self.fail("a comparator (=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN, IS NULL)")

    def scalar(self, numeric: bool) -> float | str:
        tok = self.peek()
        if numeric:
            if tok.kind != "num":
                raise self.fail("a number")
            self.advance()
            return float(tok.text)
        if tok.kind != "str":
            raise self.fail("a quoted string")
        self.advance()
        return _unquote(tok)

    def comparison(self) -> Comparison:
        self.comparisons += 1
        if self.comparisons > MAX_FILTER_COMPARISONS:
            raise InvalidFilter(
                f"filter: more than {MAX_FILTER_COMPARISONS} comparisons (at position "
                f"{self.peek().pos}); narrow the search or use IN (...)",
                field="filter",
            )
        field = self.field()
        op_tok = self.peek()
        op = self.operator()
        if op in NULL_OPS:
            if field.kind is FieldKind.ATTRIBUTE and field.key != "end_time":
                raise self.fail(f"a comparator other than {op} for attributes.{field.key}",
                                op_tok)
            return Comparison(field, op, None)
        allowed = NUMERIC_OPS if field.is_numeric else STRING_OPS
        if op not in allowed:
            raise InvalidFilter(
                f"filter: comparator {op} at position {op_tok.pos} does not apply to "
                f"{field.kind.value}.{field.key}; use one of {', '.join(sorted(allowed))}",
                field="filter",
            )
        if op in ("IN", "NOT IN"):
            self.expect_punct("(")
            values = [self.scalar(False)]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.advance()
                values.append(self.scalar(False))
            self.expect_punct(")")
            return Comparison(field, op, tuple(str(v) for v in values))
        value_tok = self.peek()
        value = self.scalar(field.is_numeric)
        if isinstance(value, float) and math.isinf(value):
            raise InvalidFilter(
                f"filter: number at position {value_tok.pos} is out of range", field="filter"
            )
        if (field.kind is FieldKind.ATTRIBUTE and isinstance(value, float)
                and not MIN_INT64 <= value <= MAX_INT64):
            # times are 64-bit integers in the database; a larger number cannot be bound
            raise InvalidFilter(
                f"filter: number at position {value_tok.pos} is out of range for "
                f"attributes.{field.key}",
                field="filter",
            )
        return Comparison(field, op, value)


def parse_filter(text: str | None) -> Expr | None:
    """Parse a filter string; ``None`` or blank means "no filter".

    Raises:
        InvalidFilter: naming the position and what was expected.
    """
    if text is None or not text.strip():
        return None
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(
            f"filter is {len(text)} characters; the limit is {MAX_FILTER_LENGTH}", field="filter"
        )
    return _Parser(text).parse()


def parse_order_by(clauses: list[str] | tuple[str, ...] | None) -> tuple[OrderKey, ...]:
    """Parse ``["metrics.acc DESC", "attributes.start_time"]`` into order keys (at most
    ``MAX_ORDER_BY``: each one a join, and databases cap those)."""
    if clauses is not None and len(clauses) > MAX_ORDER_BY:
        raise InvalidFilter(f"order_by has {len(clauses)} entries; the limit is {MAX_ORDER_BY}",
                            field="order_by")
    keys: list[OrderKey] = []
    for clause in clauses or ():
        if not isinstance(clause, str) or not clause.strip():
            raise InvalidFilter("order_by entries must be non-empty strings", field="order_by")
        try:
            p = _Parser(clause)
            field = p.field()
        except InvalidFilter as exc:
            raise InvalidFilter(f"order_by {clause!r}: {exc.message}", field="order_by") from None
        ascending = True
        if p.is_word("asc", "desc"):
            ascending = p.advance().text.lower() == "asc"
        if p.peek().kind != "end":
            tok = p.peek()
            raise InvalidFilter(
                f"order_by {clause!r}: expected ASC, DESC or end at position {tok.pos}",
                field="order_by",
            )
        keys.append(OrderKey(field, ascending))
    return tuple(keys)


# --------------------------------------------------------------------------- renderer


def _render_key(field: Field) -> str:
    key = field.key
    if re.fullmatch(r"[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*", key):
        return f"{field.kind.value}.{key}"
    return f"{field.kind.value}.`{key}`"


def _render_value(value: float | str) -> str:
    if isinstance(value, float):
        return repr(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(expr: Expr) -> str:
    """Render an AST back to filter text such that ``parse_filter(render(e)) == e``."""
    if isinstance(expr, Comparison):
        head = f"{_render_key(expr.field)} {expr.op}"
        if expr.value is None:
            return head
        if isinstance(expr.value, tuple):
            return head + " (" + ", ".join(_render_value(v) for v in expr.value) + ")"
        return f"{head} {_render_value(expr.value)}"
    if isinstance(expr, Not):
        return f"not ({render(expr.item)})"
    joiner = " and " if isinstance(expr, And) else " or "
    return "(" + joiner.join(render(i) for i in expr.items) + ")"
