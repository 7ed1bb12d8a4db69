"""Server answers back into modelyard errors: the inverse of the server's status table."""

from __future__ import annotations

import orjson

from modelyard.errors import ErrorDetail, ModelyardError, NotFound, Unavailable, error_from_code

NOT_A_BASE_URL = ("is the URI the modelyard server's base URL (such as http://127.0.0.1:8750, "
                  "without /api/v1)?")


def error_for(status: int, body: bytes) -> ModelyardError | None:
    """The error a server answer carries (by its code), or None for a 2xx."""
    if status < 300:  # a redirect means the request went somewhere unintended
        return None
    try:
        err = orjson.loads(body)["error"]
        details = [ErrorDetail(d["message"], d.get("field")) for d in err.get("details") or ()]
        return error_from_code(err["code"], err["message"], field=err.get("field"),
                               parent=err.get("parent"), details=details)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        if status == 404:  # not a modelyard answer: the URI names something else
            return NotFound(f"server answered HTTP 404 without a modelyard error body: "
                            f"{NOT_A_BASE_URL}", field="uri")
        cls = Unavailable if status in (502, 503, 504) else ModelyardError
        return cls(f"server answered HTTP {status}")


def raise_for(status: int, body: bytes) -> None:
    """Raise the error a server answer carries, or nothing for a 2xx."""
    error = error_for(status, body)
    if error is not None:
        raise error
