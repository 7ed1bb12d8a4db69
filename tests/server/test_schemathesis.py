"""Schemathesis over every operation of ``/openapi.json``, against a real server on each
database: generated requests (valid ones, and ones that break the schema) must never get a
5xx (a 5xx is a bug), and every answer must fit the document: a documented status, a
documented media type, a body valid against the documented schema.

Bounded: a few examples per operation and generation mode, derandomized (the same requests
every run, so CI is stable); a few tens of seconds per database on 2 cores. For a deeper search
run it with ``MODELYARD_FUZZ_EXAMPLES=200`` (and ``MODELYARD_FUZZ_SEED`` to vary the inputs).

Each operation is fuzzed twice: with every input generated (ids mostly unknown: the refusal
paths), and with the path ids of a seeded experiment, run and upload (the paths that reach the
stores).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from modelyard.wire import routes as r

EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("MODELYARD_FUZZ_SEED")
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


def _seed(api: httpx.Client) -> dict[str, str]:
    """An experiment with a run that holds a metric, a param, a tag, an artifact and an open
    multipart upload: the path ids the second pass uses."""
    exp = api.post(r.CREATE_EXPERIMENT.path, json={"name": "fuzz"}).json()["experiment_id"]
    run = api.post(r.CREATE_RUN.path, json={"experiment_id": exp}).json()["info"]["run_id"]
    batch = {"metrics": [{"key": "m", "value": 1.0, "timestamp": 1}],
             "params": [{"key": "p", "value": "v"}], "tags": [{"key": "t", "value": "v"}]}
    assert api.post(r.LOG_BATCH.url(run_id=run), json=batch).status_code == 200
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=run, path="a/b.txt"),
                   content=b"hello").status_code == 201
    upload = api.post(r.CREATE_UPLOAD.url(run_id=run), json={"path": "big.bin", "size": 10})
    assert upload.status_code == 201, upload.text
    return {"experiment_id": exp, "run_id": run, "upload_id": upload.json()["upload_id"],
            "path": "a/b.txt"}


def test_fuzz_every_operation(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as api:
        ids = _seed(api)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (x.method, x.path.replace(":path}", "}")) for x in r.ALL_ROUTES}

    problems: list[str] = []
    calls = 0

    def run(case: Case) -> None:
        nonlocal calls
        calls += 1
        resp = case.call(base_url=server.url, timeout=30)
        request = case.as_curl_command(base_url=server.url)
        if resp.status_code >= 500:
            problems.append(f"{resp.status_code} {resp.text[:300]}\n  {request}")
            return
        try:
            case.validate_response(resp, checks=CHECKS)
        except Exception as exc:  # schemathesis groups every failed check in one error
            problems.append(f"{resp.status_code} does not fit the document: "
                            f"{str(exc).strip()[:600]}\n  {request}")

    for op in operations:
        fixed = {p.name: ids[p.name] for p in op.path_parameters if p.name in ids}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            variants = [op.as_strategy(generation_mode=mode)]
            if fixed:
                variants.append(op.as_strategy(generation_mode=mode, path_parameters=fixed))
            for strategy in variants:
                test = settings(max_examples=EXAMPLES, deadline=None, database=None,
                                derandomize=SEED is None, phases=[Phase.explicit,
                                                                  Phase.generate],
                                suppress_health_check=list(HealthCheck))(given(strategy)(run))
                if SEED is not None:
                    test = seed(int(SEED))(test)
                # Unsatisfiable: nothing breaks this operation's schema (no body, plain ids).
                with contextlib.suppress(Unsatisfiable):
                    test()
    assert calls >= len(operations) * EXAMPLES
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("field", ["older_than_ms", "abandoned_after_ms"])
def test_what_fuzzing_found_gc_ages_past_int64(server: Any, field: str) -> None:
    """An age past 2**63 - 1 ms was a 500: the cutoff (now minus the age) overflowed the
    database integer (found by the fuzzing above). Now the age is refused, naming it."""
    with httpx.Client(base_url=server.url) as api:
        for age in (2**63, 4043823146827321756876800):
            resp = api.post(r.COLLECT_GARBAGE.path, json={field: age})
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["field"] == field
        resp = api.post(r.COLLECT_GARBAGE.path, json={field: 2**63 - 1})
        assert resp.status_code == 200, resp.text
