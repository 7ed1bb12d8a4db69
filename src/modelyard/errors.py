"""The one exception tree of modelyard.

Every error a user can see is a :class:`ModelyardError` carrying a stable :class:`ErrorCode`.
The code is what crosses process boundaries: the server maps it to an HTTP status (in exactly one
table, ``modelyard.server.errors``) and the remote backend maps the JSON body back to the same
class with :func:`error_from_code`. This module knows nothing of HTTP.

    ModelyardError
    ├── InvalidArgument            a value the caller sent is malformed or out of limits
    │   ├── InvalidFilter          a search filter / order_by that does not parse
    │   ├── UnsafePath             an artifact path that escapes its root
    │   ├── SchemaViolation        a request body or parameter that does not fit the schema
    │   ├── RangeNotSatisfiable    a byte range outside the content
    │   ├── MethodNotAllowed       an HTTP method the path does not take
    │   └── TooLarge               a request body or upload over the server's size limit
    ├── Unauthenticated            no credentials, or credentials that identify nobody
    ├── NotFound                   an id or name that does not exist
    │   ├── ExperimentNotFound
    │   ├── RunNotFound
    │   └── ArtifactNotFound
    ├── Forbidden                  a request the server refuses to act on for whoever sent it
    │                              (a foreign web page's Origin)
    ├── UnsupportedMediaType       a body of another type than the route takes
    ├── RequestTimeout             a request body that arrived too slowly
    ├── AlreadyExists              a unique name that is taken
    ├── Conflict                   the request contradicts stored state
    │   ├── ParamOverwrite         a param logged again with a different value
    │   └── InvalidState           e.g. logging to a deleted run
    ├── IntegrityFailure           stored bytes do not match their digest
    ├── SchemaOutdated             the database schema is older than this code
    ├── Unavailable                a backend could not be reached (retryable)
    │   └── RateLimited            too many requests for now (retryable, later)
    └── LoggingRefused             values logged in the background that a backend refused
                                   (raised by flush() and at run end; lists each key)

Messages reach users: they name the offending field and never contain secrets or SQL. An error
may carry ``details``, one :class:`ErrorDetail` per failed condition (a gate that refuses for
several reasons lists each). On the wire an error also names its parent's code, so a client
that does not know a newer code raises the nearest class it knows (:func:`error_from_code`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable error codes (part of the public API; never renumber)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_FILTER = "INVALID_FILTER"
    UNSAFE_PATH = "UNSAFE_PATH"
    NOT_FOUND = "NOT_FOUND"
    EXPERIMENT_NOT_FOUND = "EXPERIMENT_NOT_FOUND"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    ARTIFACT_NOT_FOUND = "ARTIFACT_NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CONFLICT = "CONFLICT"
    PARAM_OVERWRITE = "PARAM_OVERWRITE"
    INVALID_STATE = "INVALID_STATE"
    INTEGRITY_FAILURE = "INTEGRITY_FAILURE"
    SCHEMA_OUTDATED = "SCHEMA_OUTDATED"
    UNAVAILABLE = "UNAVAILABLE"
    LOGGING_REFUSED = "LOGGING_REFUSED"
    TOO_LARGE = "TOO_LARGE"
    FORBIDDEN = "FORBIDDEN"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RATE_LIMITED = "RATE_LIMITED"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One failed condition of an error: what failed, and the field it concerns."""

    message: str
    field: str | None = None


class ModelyardError(Exception):
    """Base of every modelyard error.

    Args:
        message: a sentence for a human, naming what was wrong.
        field: the name of the offending input field, when there is one.
        details: each condition that failed, when there are several.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None,
                 details: Sequence[ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = tuple(details)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ModelyardError):
    """A value the caller sent is malformed or outside the documented limits."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidFilter(InvalidArgument):
    """A search filter or order_by clause that does not parse; the message names the position."""

    code = ErrorCode.INVALID_FILTER


class UnsafePath(InvalidArgument):
    """An artifact path that is absolute, climbs out with ``..``, holds NUL bytes or escapes."""

    code = ErrorCode.UNSAFE_PATH


class SchemaViolation(InvalidArgument):
    """A request body or parameter that does not fit the route's schema (a wrong type, an
    unknown field, a number out of range): HTTP 422. Raised by the server's edge only."""

    code = ErrorCode.SCHEMA_VIOLATION


class MethodNotAllowed(InvalidArgument):
    """An HTTP method the path does not take (GET on an upload route, ...)."""

    code = ErrorCode.METHOD_NOT_ALLOWED


class RangeNotSatisfiable(InvalidArgument):
    """A byte range (HTTP ``Range``) that is malformed or lies outside the content."""

    code = ErrorCode.RANGE_NOT_SATISFIABLE


class TooLarge(InvalidArgument):
    """A request body, an upload or a declared upload size over the server's limit."""

    code = ErrorCode.TOO_LARGE


class Unauthenticated(ModelyardError):
    """The request carries no credentials, or ones that identify nobody."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ModelyardError):
    """The server refuses the request whatever its content: it came from a web page of another
    origin (cross-site request forgery)."""

    code = ErrorCode.FORBIDDEN


class UnsupportedMediaType(ModelyardError):
    """A request body of another media type than the route takes (``application/json``, or
    ``application/octet-stream`` for uploads)."""

    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RequestTimeout(ModelyardError):
    """A request body that arrived slower than the server's minimum rate; safe to retry."""

    code = ErrorCode.REQUEST_TIMEOUT


class NotFound(ModelyardError):
    """Something addressed by id, name or path does not exist."""

    code = ErrorCode.NOT_FOUND


class ExperimentNotFound(NotFound):
    code = ErrorCode.EXPERIMENT_NOT_FOUND


class RunNotFound(NotFound):
    code = ErrorCode.RUN_NOT_FOUND


class ArtifactNotFound(NotFound):
    code = ErrorCode.ARTIFACT_NOT_FOUND


class AlreadyExists(ModelyardError):
    """A unique name (experiment name, ...) is already taken."""

    code = ErrorCode.ALREADY_EXISTS


class Conflict(ModelyardError):
    """The request contradicts what is stored."""

    code = ErrorCode.CONFLICT


class ParamOverwrite(Conflict):
    """A param was logged again with a different value (params are immutable)."""

    code = ErrorCode.PARAM_OVERWRITE


class InvalidState(Conflict):
    """The entity is in a lifecycle state that does not allow the operation."""

    code = ErrorCode.INVALID_STATE


class IntegrityFailure(ModelyardError):
    """Stored bytes do not match the digest they are named by."""

    code = ErrorCode.INTEGRITY_FAILURE


class SchemaOutdated(ModelyardError):
    """The database schema is older than this version of modelyard expects."""

    code = ErrorCode.SCHEMA_OUTDATED


class Unavailable(ModelyardError):
    """A backend could not be reached or answered with a transient failure; safe to retry."""

    code = ErrorCode.UNAVAILABLE


class RateLimited(Unavailable):
    """Too many requests for now; retry later (the message may say when)."""

    code = ErrorCode.RATE_LIMITED


class LoggingRefused(ModelyardError):
    """Values logged in the background that the backend refused: every other value was stored.

    Raised by ``ActiveRun.flush()`` and at the end of the run, after everything else has been
    stored. ``refused`` lists each refused item once per key and reason.
    """

    code = ErrorCode.LOGGING_REFUSED

    def __init__(self, message: str, *, field: str | None = None,
                 details: Sequence[ErrorDetail] = (),
                 refused: tuple[RefusedValue, ...] = ()) -> None:
        super().__init__(message, field=field, details=details)
        self.refused = refused


class RefusedValue:
    """One refused key: what it was (``metric``, ``param``, ``tag`` or ``run`` for the run's
    own creation or end), its key, how many values of it were refused, and the error."""

    __slots__ = ("count", "error", "key", "kind")

    def __init__(self, kind: str, key: str, error: ModelyardError, count: int = 1) -> None:
        self.kind = kind
        self.key = key
        self.error = error
        self.count = count

    def __repr__(self) -> str:
        return f"RefusedValue({self.kind!r}, {self.key!r}, count={self.count}, error={self.error})"

    def describe(self) -> str:
        times = f" ({self.count} values)" if self.count > 1 else ""
        return f"{self.kind} {self.key!r}{times}: {self.error.message}"


def _all_subclasses(cls: type[ModelyardError]) -> list[type[ModelyardError]]:
    out: list[type[ModelyardError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[ErrorCode, type[ModelyardError]] = {
    c.code: c for c in _all_subclasses(ModelyardError)
}


def parent_code(error: ModelyardError | type[ModelyardError]) -> ErrorCode | None:
    """The code of the nearest ancestor class with another code (None for the root)."""
    cls = error if isinstance(error, type) else type(error)
    for base in cls.__mro__[1:]:
        if issubclass(base, ModelyardError) and base.code != cls.code:
            return base.code
    return None


def error_from_code(code: str, message: str, *, field: str | None = None,
                    parent: str | None = None,
                    details: Sequence[ErrorDetail] = ()) -> ModelyardError:
    """Rebuild the exception a remote peer raised from its wire code.

    A code this version does not know (a newer server) becomes the class of ``parent``, the
    code of its nearest ancestor, when that one is known; else :class:`ModelyardError`.
    """
    for candidate in (code, parent):
        if candidate is None:
            continue
        try:
            cls = _BY_CODE[ErrorCode(candidate)]
        except ValueError:
            continue
        return cls(message, field=field, details=details)
    return ModelyardError(message, field=field, details=details)
