"""The one escaper for text the CLI prints: stored or user-supplied strings never reach the
terminal as control sequences or as rich markup.

A stored value (a run name, a tag value, an error message quoting one...) may hold an escape
sequence that recolours or retitles the terminal (``"\\x1b]0;pwned\\x07"``), an 8-bit CSI
(U+009B), a line break or tab that fakes extra table rows, a bidirectional control that makes
text display as something else (U+202E), or rich markup (``[link=...]``). Every such string
goes through :func:`visible` before it is printed, which shows each of those characters as a
visible escape (``\\x1b``, ``\\n``, ``\\u202e``); everything else prints unchanged.

- :func:`safe_text` gives a :class:`rich.text.Text` (never parsed as markup): table cells,
  plain lines.
- :func:`safe_markup` escapes markup too, for a string interpolated into a markup string.

Output meant for machines (``--json``, CSV and Arrow exports) is not escaped: it carries the
exact values (JSON encoding escapes control characters by itself).
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

__all__ = ["safe_markup", "safe_text", "visible"]

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0 controls (tab and newline included), DEL, C1 controls (8-bit CSI U+009B among them), the
# bidirectional controls (marks, embeddings, overrides, isolates) and the Unicode line and
# paragraph separators.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(value: object) -> str:
    """``str(value)`` with every control, bidi and line-separator character shown as a visible
    escape (``\\x1b``, ``\\t``, ``\\n``, ``\\u202e``), so it prints on one line as it is."""
    return _UNSAFE.sub(_escape_char, str(value))


def safe_text(value: object, style: str = "") -> Text:
    """``value`` as a rich Text: escaped by :func:`visible`, shown literally (no markup)."""
    return Text(visible(value), style=style)


def safe_markup(value: object) -> str:
    """``value`` escaped by :func:`visible` and for rich markup, to interpolate into a markup
    string printed with ``markup=True`` (and ``emoji=False``)."""
    return escape(visible(value))
