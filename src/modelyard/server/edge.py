"""The edge of the server: what every request must be before any route sees it.

One middleware checks, in order, and refuses with the ordinary error body:

1. the ``Host`` header: one, well-formed, naming this server (DNS rebinding; 400, field
   ``host``);
2. the URL: its percent-encoded bytes must decode as UTF-8 (two byte sequences must never
   decode to the same U+FFFD path; 400, field ``path`` or ``query``);
3. the ``Origin`` of anything but GET and HEAD: absent, this server's own, or one the operator
   allowed (a web page of another site must not drive the server; 403 ``FORBIDDEN``); CORS
   preflights are always refused, so no other origin is ever let in;
4. the ``Content-Type`` of a request with a body (or any Content-Type) to a route that
   takes one: exactly the route's media type (``application/json``, or
   ``application/octet-stream`` for uploads; 415 ``UNSUPPORTED_MEDIA_TYPE``). A page can send
   ``text/plain``, form and multipart bodies without asking, never JSON; and a request with no
   body at all from a page carries its Origin (browsers send it with every method but GET and
   HEAD). So these two rules together stop cross-site request forgery;
5. a declared ``Content-Length`` over the route's limit (413 ``TOO_LARGE``, before a byte is
   read).

Then the body is metered as it arrives (``server.body_meter``): its size, and its rate.

Room for cookie sessions (the web UI): a write authenticated by a cookie will also need a CSRF
token here; bearer tokens and the SDK need none (a page cannot set their headers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.errors import (
    Forbidden,
    InvalidArgument,
    ModelyardError,
    TooLarge,
    UnsupportedMediaType,
)
from modelyard.server.body_meter import BodyMeter, BodyRules
from modelyard.server.errors import error_response
from modelyard.settings import Settings
from modelyard.wire import routes as r

_SAFE_METHODS = frozenset({"GET", "HEAD"})
# A Host header: a name or IPv4 address, or a bracketed IPv6 literal, then an optional port.
_HOST_RE = re.compile(r"(?P<name>[a-z0-9._~-]+|\[[0-9a-f:.]+(?:%25[a-z0-9._~-]+)?\])"
                      r"(?::(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    """What the edge allows: hosts, origins, and how large and slow bodies may be."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]
    json_rules: BodyRules
    binary_rules: BodyRules

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgePolicy:
        def rules(limit: int) -> BodyRules:
            return BodyRules(limit=limit, min_rate=settings.min_body_rate,
                             grace_s=settings.body_grace_s)

        return cls(
            allowed_hosts=frozenset(h.lower() for h in settings.allowed_hosts),
            allowed_origins=frozenset(o.lower().rstrip("/") for o in settings.allowed_origins),
            json_rules=rules(settings.max_request_bytes),
            binary_rules=rules(settings.max_artifact_bytes),
        )


def parse_host(header: str) -> tuple[str, str | None] | None:
    """``(host, port)`` of a Host header value (host lowercased, an IPv6 literal keeps its
    brackets), or None when it is not a well-formed Host (junk in the port, text after
    ``[::1]``, a port over 65535, characters a host name cannot hold)."""
    m = _HOST_RE.fullmatch(header.strip().lower())
    if m is None:
        return None
    port = m.group("port")
    if port is not None and int(port) > 65535:
        return None
    return m.group("name"), port


def _authority(host: str, port: str | None, scheme: str) -> str:
    return host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"


def _same_origin(origin: str, host: tuple[str, str | None]) -> bool:
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return False
    theirs = parse_host(rest)
    if theirs is None:
        return False
    # Either scheme: a TLS-terminating proxy in front may have changed it.
    return _authority(*theirs, scheme) == _authority(*host, scheme)


def _media_type_ok(value: str, wanted: str) -> bool:
    media, _, params = value.partition(";")
    if media.strip().lower() != wanted:
        return False
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() != "utf-8":
            return False  # JSON is UTF-8 (RFC 8259): another charset would be misread
    return True


class EdgeGuard:
    """The middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: EdgePolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            rules = self.check(scope)
        except ModelyardError as exc:
            await error_response(exc, close=isinstance(exc, TooLarge))(scope, receive, send)
            return
        if rules is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, BodyMeter(receive, rules).receive, send)

    def check(self, scope: Scope) -> BodyRules | None:
        """Refuse what must not reach a route; the rules for its body (None: a websocket).

        Raises:
            ModelyardError: the refusal to answer.
        """
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, []).append(value)
        host = self._host(headers.get(b"host", []))
        if scope["type"] != "http":
            return None
        _check_url(scope)
        method: str = scope["method"]
        origins = headers.get(b"origin", [])
        if method not in _SAFE_METHODS:
            self._check_origin(method, origins, host, headers)
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted below a prefix: the routes see the rest
            path = path[len(root):]
        route = r.route_for(method, path)
        wanted = route.body if route is not None else None
        types = headers.get(b"content-type", [])
        if route is not None and wanted is not None and (types or _has_body(headers)):
            given = types[0].decode("latin-1") if len(types) == 1 else None
            if given is None or not _media_type_ok(given, wanted):
                shown = "none" if not types else ", ".join(repr(t.decode("latin-1")[:80])
                                                            for t in types)
                raise UnsupportedMediaType(
                    f"{method} {route.path} takes a body of Content-Type {wanted}; "
                    f"the request's is {shown}", field="content-type")
        rules = self.policy.binary_rules if wanted == r.BINARY else self.policy.json_rules
        lengths = headers.get(b"content-length", [])
        if len(lengths) == 1 and lengths[0].isdigit() and int(lengths[0]) > rules.limit:
            raise TooLarge(rules.describe_limit(), field="body")
        return rules

    def _host(self, values: list[bytes]) -> tuple[str, str | None]:
        if len(values) != 1:
            raise InvalidArgument(
                "the request must carry exactly one Host header" if values else
                "the request carries no Host header", field="host")
        parsed = parse_host(values[0].decode("latin-1"))
        if parsed is None:
            raise InvalidArgument("the Host header is not a host name and optional port",
                                  field="host")
        if "*" not in self.policy.allowed_hosts and parsed[0] not in self.policy.allowed_hosts:
            raise InvalidArgument("the Host header does not name this server", field="host")
        return parsed

    def _check_origin(self, method: str, origins: list[bytes], host: tuple[str, str | None],
                      headers: dict[bytes, list[bytes]]) -> None:
        if method == "OPTIONS" and b"access-control-request-method" in headers:
            raise Forbidden("cross-origin requests are not allowed (this server answers no "
                            "CORS preflight)", field="origin")
        if not origins:
            return  # not sent by a browser page (browsers send Origin with every such method)
        origin = origins[0].decode("latin-1").strip().lower()
        if len(origins) == 1 and (origin in self.policy.allowed_origins
                                  or _same_origin(origin, host)):
            return
        shown = origin[:100] if len(origins) == 1 else f"{len(origins)} Origin headers"
        raise Forbidden(
            f"a {method} from the web page origin {shown!r} is refused: only this server's "
            "own pages and origins the operator allows (--allowed-origin) may change data",
            field="origin")


def _has_body(headers: dict[bytes, list[bytes]]) -> bool:
    """Whether the request says it carries a body (a declared length other than 0, or any
    transfer coding); a request with none needs no media type."""
    return b"transfer-encoding" in headers or any(
        v.strip() not in (b"", b"0") for v in headers.get(b"content-length", []))


def _check_url(scope: Scope) -> None:
    raw_path = scope.get("raw_path")
    for what, raw in (("path", raw_path), ("query", scope.get("query_string", b""))):
        if not raw:
            continue
        data = raw.replace(b"+", b" ") if what == "query" else raw
        try:
            unquote_to_bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"the URL's {what} is not UTF-8 once percent-decoded: every byte sequence "
                "must be valid UTF-8, so that two URLs never name the same thing", field=what
            ) from None
