"""The headers every response carries, whoever built it: the routes, the error handlers, the
edge's refusals, and Starlette's own last-resort 500."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
    # No other site may embed what the API answers (an image, a script, a download).
    ("cross-origin-resource-policy", "same-origin"),
)
_RAW = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response that does not set one itself (the
    ``/docs`` page sets a wider Content-Security-Policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in _RAW if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
