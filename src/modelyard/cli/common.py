"""What every command group shares: settings from flags, error rendering, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console

from modelyard.cli.safe_text import safe_markup
from modelyard.errors import ModelyardError

P = ParamSpec("P")
R = TypeVar("R")

# Help texts are Markdown: docstring paragraphs are reflowed to the terminal (the line breaks
# that wrap them in the source do not show) and ``code`` prints without its backticks. Every
# Typer app of the CLI passes this.
MARKUP_MODE: Literal["markdown"] = "markdown"

# Nothing printed is parsed as markup or emoji codes, or highlighted, unless a call asks for it:
# stored text (names, values, messages) prints as it is, escaped by ``safe_text``.
console = Console(markup=False, emoji=False, highlight=False)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    # soft_wrap: the message stays one line whatever the width; safe_markup: stored or
    # user-supplied text inside it (``[bold]``, an escape sequence...) prints literally.
    line = " ".join(message.split("\n"))
    err_console.print(f"[red]error:[/red] {safe_markup(line)}", highlight=False, markup=True,
                      emoji=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn modelyard errors into one line on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ModelyardError as exc:
            raise fail(f"{exc.message} [{exc.code}]") from None
        except OSError as exc:
            raise fail(str(exc)) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
