"""The error-code table: every code has an HTTP status, and every error class survives the trip
over the wire (code -> class) unchanged."""

from __future__ import annotations

import inspect

import orjson
import pytest

from modelyard import errors
from modelyard.backend.answers import error_for
from modelyard.errors import ErrorCode, ErrorDetail, ModelyardError, error_from_code, parent_code
from modelyard.server.errors import STATUS, error_response


def error_classes() -> list[type[ModelyardError]]:
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
            if issubclass(obj, ModelyardError) and obj.__module__ == errors.__name__]


def test_every_code_has_a_status() -> None:
    assert set(STATUS) == set(ErrorCode)
    for code, status in STATUS.items():
        assert 400 <= status <= 599, (code, status)


def test_client_mistakes_are_4xx_and_outages_5xx() -> None:
    expected = {
        ErrorCode.INVALID_ARGUMENT: 400, ErrorCode.INVALID_FILTER: 400,
        ErrorCode.UNSAFE_PATH: 400, ErrorCode.NOT_FOUND: 404,
        ErrorCode.EXPERIMENT_NOT_FOUND: 404, ErrorCode.RUN_NOT_FOUND: 404,
        ErrorCode.ARTIFACT_NOT_FOUND: 404, ErrorCode.ALREADY_EXISTS: 409,
        ErrorCode.CONFLICT: 409, ErrorCode.PARAM_OVERWRITE: 409, ErrorCode.INVALID_STATE: 409,
        ErrorCode.UNAVAILABLE: 503, ErrorCode.SCHEMA_OUTDATED: 503, ErrorCode.INTERNAL: 500,
        ErrorCode.INTEGRITY_FAILURE: 500, ErrorCode.LOGGING_REFUSED: 409,
        ErrorCode.FORBIDDEN: 403, ErrorCode.REQUEST_TIMEOUT: 408, ErrorCode.TOO_LARGE: 413,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415, ErrorCode.SCHEMA_VIOLATION: 422,
        ErrorCode.RANGE_NOT_SATISFIABLE: 416, ErrorCode.UNAUTHENTICATED: 401,
        ErrorCode.RATE_LIMITED: 429, ErrorCode.METHOD_NOT_ALLOWED: 405,
    }
    assert expected == STATUS


def test_every_class_has_its_own_code() -> None:
    classes = error_classes()
    assert len(classes) == len(ErrorCode)  # one class per code, one code per class
    assert {cls.code for cls in classes} == set(ErrorCode)


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_round_trips(cls: type[ModelyardError]) -> None:
    original = cls("something went wrong with 'x'", field="params.x",
                   details=[ErrorDetail("one condition", "a"), ErrorDetail("another")])
    # What the server renders ...
    resp = error_response(original)
    assert resp.status_code == STATUS[cls.code]
    body = orjson.loads(bytes(resp.body))
    parent = parent_code(cls)
    assert body == {"error": {
        "code": cls.code.value, "parent": None if parent is None else parent.value,
        "message": original.message, "field": "params.x",
        "details": [{"message": "one condition", "field": "a"},
                    {"message": "another", "field": None}]}}
    # ... is what the remote backend raises again.
    back = error_for(resp.status_code, bytes(resp.body))
    assert type(back) is cls
    assert back is not None and back.code is cls.code
    assert back.message == original.message and str(back) == original.message
    assert back.field == "params.x"
    assert back.details == original.details
    assert error_from_code(cls.code.value, "no field").field is None


def test_parent_codes_follow_the_tree() -> None:
    assert parent_code(errors.TooLarge) is ErrorCode.INVALID_ARGUMENT
    assert parent_code(errors.RunNotFound) is ErrorCode.NOT_FOUND
    assert parent_code(errors.RateLimited) is ErrorCode.UNAVAILABLE
    assert parent_code(errors.InvalidArgument) is ErrorCode.INTERNAL  # ModelyardError's code
    assert parent_code(ModelyardError) is None


def test_unknown_codes_become_the_base_class() -> None:
    back = error_from_code("SOMETHING_NEW", "from a newer server", field="f")
    assert type(back) is ModelyardError
    assert back.message == "from a newer server" and back.field == "f"


def test_an_unknown_code_becomes_its_parents_class() -> None:
    """An older client meeting a newer server's code raises the nearest class it knows."""
    body = orjson.dumps({"error": {"code": "QUOTA_EXCEEDED", "parent": "INVALID_ARGUMENT",
                                   "message": "over quota", "field": "size", "details": []}})
    back = error_for(413, body)
    assert type(back) is errors.InvalidArgument
    assert back is not None and back.field == "size" and back.message == "over quota"
    unknown_parent = error_from_code("NEWER", "x", parent="NEWER_STILL")
    assert type(unknown_parent) is ModelyardError


def test_an_answer_without_details_or_parent_still_maps() -> None:
    """A body from a server before details and parent existed."""
    body = orjson.dumps({"error": {"code": "RUN_NOT_FOUND", "message": "no run", "field": None}})
    back = error_for(404, body)
    assert type(back) is errors.RunNotFound and back is not None and back.details == ()


def test_hierarchy_is_the_documented_one() -> None:
    assert issubclass(errors.InvalidFilter, errors.InvalidArgument)
    assert issubclass(errors.UnsafePath, errors.InvalidArgument)
    for cls in (errors.ExperimentNotFound, errors.RunNotFound, errors.ArtifactNotFound):
        assert issubclass(cls, errors.NotFound)
    assert issubclass(errors.ParamOverwrite, errors.Conflict)
    assert issubclass(errors.InvalidState, errors.Conflict)
    assert all(issubclass(cls, Exception) for cls in error_classes())
