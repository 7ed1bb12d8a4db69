"""docs/limits.md states the limits the code enforces."""

from __future__ import annotations

import re
from pathlib import Path

from modelyard.domain import validation

DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_every_documented_limit_matches_the_code() -> None:
    rows = re.findall(r"^\| [^|]+ \| (\d+)[^|]* \| `(\w+)` \|$", DOC.read_text(), re.M)
    assert len(rows) >= 10
    for value, name in rows:
        assert getattr(validation, name) == int(value), name


def test_every_limit_constant_is_documented() -> None:
    text = DOC.read_text()
    constants = [n for n in dir(validation) if n.startswith("MAX_") and "INT64" not in n]
    missing = [n for n in constants if f"`{n}`" not in text]
    assert not missing
