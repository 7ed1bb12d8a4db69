"""Waiting for something to happen, with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, what: str, timeout: float = 15.0,
               interval: float = 0.01) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something true; that value.

    Fails (``AssertionError``) naming ``what`` once ``timeout`` seconds pass first. An exception
    from ``predicate`` (an assertion that the thing waited for can no longer happen, say)
    propagates at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def waiting_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is blocked in a wait (``Condition.wait``, ``Event.wait``) called,
    directly or not, from a function named ``function``. Taking a lock on the way in or out
    does not count: only a wait, which is where a thread that cannot go on sits."""
    frame = sys._current_frames().get(thread.ident or -1)
    if (frame is None or frame.f_code.co_filename != threading.__file__
            or frame.f_code.co_name != "wait"):
        return False
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
