"""A request body metered as it arrives: refused past its size limit, and past its deadline.

The server reads bodies in pieces; a limit checked after ``request.body()`` comes too late (a
chunked body has no declared length, and the whole of it would be in memory first). So the
body's ``receive`` channel is wrapped: each piece is counted as it arrives, and the request
fails with :class:`~modelyard.errors.TooLarge` the moment the count passes the limit.

A body must also keep arriving: after a grace period, at least ``min_rate`` bytes a second on
average. A client that trickles a byte now and then would otherwise hold the request (and, for
an upload, a worker thread) for as long as it likes; past the deadline the request fails with
:class:`~modelyard.errors.RequestTimeout`. The deadline moves with every byte received:
``start + grace + received / min_rate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
from starlette.types import Message, Receive

from modelyard.errors import RequestTimeout, TooLarge


@dataclass(frozen=True, slots=True)
class BodyRules:
    """How much a body may hold, and how slowly it may arrive."""

    limit: int  # bytes
    min_rate: int  # bytes per second, after the grace period
    grace_s: float

    def describe_limit(self) -> str:
        return f"the request body exceeds the server's limit of {self.limit} bytes"


class BodyMeter:
    """The ``receive`` channel of one request, metered (see the module docstring).

    ``receive`` is the method to hand to the application; ``inner`` is the server's own channel
    (``server.direct_body`` takes the body from the socket past it, and meters it itself with
    :meth:`deadline`).
    """

    __slots__ = ("_done", "_start", "inner", "received", "rules")

    def __init__(self, inner: Receive, rules: BodyRules) -> None:
        self.inner = inner
        self.rules = rules
        self.received = 0
        self._start = time.monotonic()
        self._done = False

    def deadline(self, received: int) -> float:
        """When (``time.monotonic()``) the body must have grown past ``received`` bytes."""
        return self._start + self.rules.grace_s + received / self.rules.min_rate

    def too_slow(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request body arrived too slowly: {self.received} bytes in "
            f"{time.monotonic() - self._start:.0f} s; after {self.rules.grace_s:g} s the server "
            f"expects at least {self.rules.min_rate} bytes a second", field="body")

    def count(self, n: int) -> None:
        """Count ``n`` more bytes of the body.

        Raises:
            TooLarge: the body has passed its limit.
        """
        self.received += n
        if self.received > self.rules.limit:
            raise TooLarge(self.rules.describe_limit(), field="body")

    async def receive(self) -> Message:
        if self._done:  # the body is in: what is left is waiting for a disconnect, unbounded
            return await self.inner()
        left = self.deadline(self.received) - time.monotonic()
        message: Message | None = None
        with anyio.move_on_after(max(left, 0.0)):
            message = await self.inner()
        if message is None:
            raise self.too_slow()
        if message["type"] == "http.request":
            self.count(len(message.get("body", b"")))
            self._done = not message.get("more_body", False)
        else:
            self._done = True
        return message
