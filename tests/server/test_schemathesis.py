"""Schemathesis over every operation of ``/openapi.json``, against a real server on each
database. Every generated request (valid ones, and ones that break the schema) must get:

- no 5xx (a 5xx is a bug);
- an answer that fits the document: a documented status, a documented media type, a body valid
  against the documented schema (and a request that breaks the schema must be refused);
- the security headers of :data:`SECURITY_HEADERS`, whatever the status;
- when it is refused (4xx), nothing stored changed: every table of the metadata database and
  every file of the artifact folder are as they were before it (``support.stored_state``). One
  snapshot is taken after each request; it is the next request's "before". A request that
  succeeds may change stored data, so its snapshot just becomes the new baseline.

Bounded: a few examples per operation and generation mode, derandomized (the same requests
every run, so CI is stable); a few tens of seconds per database on 2 cores (a snapshot costs
about a millisecond on SQLite, a few on PostgreSQL). For a deeper search run it with
``MODELYARD_FUZZ_EXAMPLES=200`` (and ``MODELYARD_FUZZ_SEED`` to vary the inputs);
``MODELYARD_FUZZ_REPORT=1`` (with ``-s``) prints the statuses each operation got and what the
snapshots cost.

Each operation is fuzzed with every input generated (ids mostly unknown: the refusal paths);
one that takes ids of an experiment, run or upload also with the ids seeded first, in whatever
state the passes before left them (finished, deleted, aborted), and, for valid requests, with
ids seeded just for that pass (the paths that reach the stores).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from modelyard.artifacts.reaper import REAPER
from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.stored_state import DatabaseReader, StoredState, snapshot

EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("MODELYARD_FUZZ_SEED")
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]

SECURITY_HEADERS: dict[str, str | dict[str, str]] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    # A policy: these directives, with exactly these sources (others may be there too). Every
    # route of the document gets this one; the /docs page (not in the document) has a wider
    # default-src, but frame-ancestors 'none' holds on every page.
    "Content-Security-Policy": {"default-src": "'none'", "frame-ancestors": "'none'"},
}
"""Each header a response must carry exactly once, with this value."""


def header_problems(headers: Mapping[str, list[str]]) -> list[str]:
    """What ``headers`` (lowercase names, every value of each) lack of SECURITY_HEADERS."""
    out = []
    for name, want in SECURITY_HEADERS.items():
        values = headers.get(name.lower(), [])
        if len(values) != 1:
            out.append(f"{name} missing" if not values else f"{name} sent {len(values)} times")
            continue
        if isinstance(want, str):
            if values[0] != want:
                out.append(f"{name} is {values[0]!r}, not {want!r}")
            continue
        policy: dict[str, str] = {}
        for directive in values[0].split(";"):
            words = directive.split()
            if words:  # a browser obeys the first of a directive given twice
                policy.setdefault(words[0].lower(), " ".join(words[1:]))
        for directive, sources in want.items():
            if policy.get(directive) != sources:
                out.append(f"{name} {values[0]!r} lacks {directive} {sources}")
    return out


class StoredData:
    """Snapshots of what the server stores, one after each request (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.db = DatabaseReader(settings.db_url)
        self.root = settings.artifacts_url
        self.seconds, self.taken = 0.0, 0  # what snapshots cost (MODELYARD_FUZZ_REPORT)
        self.last = self.take()
        self.compared = 0

    def take(self) -> StoredState:
        # Files a request let go are unlinked by a background thread after it is answered
        # (artifacts.reaper): wait for that, or a success's removal would show up as a change
        # made by the next request.
        assert REAPER.drain(10), "the reaper did not drain in 10 s"
        start = time.perf_counter()
        try:
            return snapshot(self.db, self.root)
        finally:
            self.seconds += time.perf_counter() - start
            self.taken += 1

    def after(self, status: int) -> list[str]:
        """Take the snapshot after a request answered ``status``; for a refusal, what it
        changed."""
        before, self.last = self.last, self.take()
        if not 400 <= status < 500:
            return []
        self.compared += 1
        if self.last.digest == before.digest:
            return []
        return self.last.changes_since(before) or ["stored data changed (digest only)"]

    def close(self) -> None:
        self.db.close()


def _seed(api: httpx.Client, n: int) -> dict[str, str]:
    """An experiment with a run that holds a metric, a param, a tag, an artifact and an open
    multipart upload (of one part): the path ids the second pass uses."""
    exp = api.post(r.CREATE_EXPERIMENT.path, json={"name": f"fuzz-{n}"}).json()["experiment_id"]
    run = api.post(r.CREATE_RUN.path, json={"experiment_id": exp}).json()["info"]["run_id"]
    batch = {"metrics": [{"key": "m", "value": 1.0, "timestamp": 1}],
             "params": [{"key": "p", "value": "v"}], "tags": [{"key": "t", "value": "v"}]}
    assert api.post(r.LOG_BATCH.url(run_id=run), json=batch).status_code == 200
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=run, path="a/b.txt"), content=b"hello",
                   headers={"Content-Type": r.BINARY}).status_code == 201
    upload = api.post(r.CREATE_UPLOAD.url(run_id=run), json={"path": "big.bin", "size": 10})
    assert upload.status_code == 201, upload.text
    return {"experiment_id": exp, "run_id": run, "upload_id": upload.json()["upload_id"],
            "path": "a/b.txt", "part_number": "1"}


# A changed path names its ids and digests; a symptom names only where they are.
_HEX = re.compile(r"(?<=/)[0-9a-f]{2,}(?=/|$)")


def test_fuzz_every_operation(server: Any, settings: Settings) -> None:
    stored = StoredData(settings)
    statuses: dict[str, dict[int, int]] = {}
    start = time.perf_counter()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            _fuzz(server, api, stored, statuses)
    finally:
        stored.close()
        if os.environ.get("MODELYARD_FUZZ_REPORT"):  # what the run reached, and its cost
            print(f"\n{time.perf_counter() - start:.1f} s, {stored.taken} snapshots: "
                  f"{stored.seconds:.2f} s, {1000 * stored.seconds / stored.taken:.2f} ms each")
            for label, counts in sorted(statuses.items()):
                print(f"{label}: {sorted(counts.items())}")


def _fuzz(server: Any, api: httpx.Client, stored: StoredData,
          statuses: dict[str, dict[int, int]]) -> None:
    empty = stored.last
    seeds = 0

    def seeded_ids() -> dict[str, str]:
        nonlocal seeds
        seeds += 1
        ids = _seed(api, seeds)
        stored.after(200)  # the new baseline
        return ids

    ids = seeded_ids()
    # The snapshot sees what seeding stored (so a change cannot go unnoticed).
    seeded = " ".join(stored.last.changes_since(empty))
    for what in ("table runs:", "table params:", "table metrics:", "table artifacts:",
                 "artifacts/objects/", "artifacts/uploads/"):
        assert what in seeded, f"the snapshot missed {what!r} after seeding: {seeded}"

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (x.method, x.path.replace(":path}", "}")) for x in r.ALL_ROUTES}

    # symptom -> examples (request, and detail); grouped so that one symptom on every response
    # (a missing header) does not hide the others
    problems: dict[str, list[str]] = {}
    calls = 0
    mode = GenerationMode.POSITIVE

    def problem(symptom: str, example: str) -> None:
        problems.setdefault(symptom, []).append(example)

    def run(case: Case) -> None:
        nonlocal calls
        calls += 1
        resp = case.call(base_url=server.url, timeout=30)
        request = case.as_curl_command(base_url=server.url)
        label = f"{case.operation.method.upper()} {case.operation.path}"
        counts = statuses.setdefault(label, {})
        counts[resp.status_code] = counts.get(resp.status_code, 0) + 1
        changes = stored.after(resp.status_code)
        if changes:
            what = ", ".join(sorted({_HEX.sub("<hex>", c.split(":")[0]) for c in changes}))
            problem(f"{label} {resp.status_code} changed stored data: {what}",
                    "\n      ".join([request, resp.text[:200], *changes]))
        for missing in header_problems(resp.headers):
            problem(f"{missing} (status {resp.status_code})", f"{label}: {request}")
        if resp.status_code >= 500:
            problem(f"{label} {resp.status_code}", f"{resp.text[:300]}\n      {request}")
            return
        if resp.status_code == 415 and mode is GenerationMode.POSITIVE:
            # 415 is documented for every body, so the checks below let it pass; but a request
            # built from the document is sent as the document says: refusing its media type
            # means the two disagree (and the operation is never reached).
            problem(f"{label} 415 to a request that fits the document",
                    f"{resp.text[:300]}\n      {request}")
        try:
            case.validate_response(resp, checks=CHECKS)
        # Schemathesis groups every failed check in one FailureGroup, a BaseExceptionGroup:
        # ``except Exception`` does not catch it (it used to end the whole run at the first
        # misfit, dropping every problem collected so far).
        except FailureGroup as exc:
            titles = ", ".join(sorted({str(f.title) for f in exc.exceptions}))
            problem(f"{label} {resp.status_code} does not fit the document: {titles}",
                    f"{str(exc).strip()[:600]}\n      {request}")

    def strategies(op: APIOperation, mode: GenerationMode) -> Iterator[SearchStrategy[Case]]:
        def fixed(ids: dict[str, str]) -> SearchStrategy[Case]:
            return op.as_strategy(generation_mode=mode, path_parameters={
                p.name: ids[p.name] for p in op.path_parameters if p.name in ids})

        yield op.as_strategy(generation_mode=mode)
        if any(p.name in ids for p in op.path_parameters):
            # The ids seeded first, in whatever state the passes before left them (a finished
            # run, a deleted experiment, an aborted upload): the refusals of those states.
            yield fixed(ids)
            if mode is GenerationMode.POSITIVE:
                # And ids seeded when this pass starts: what an earlier pass deleted must not
                # leave this one only not-found refusals (uploads come after their abort).
                yield fixed(seeded_ids())

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for strategy in strategies(op, mode):
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
    # Refusals were compared (a run where none was would check nothing of stored data).
    assert stored.compared >= len(operations) * EXAMPLES // 2, stored.compared
    count = sum(len(v) for v in problems.values())
    assert not problems, f"{count} problems, {len(problems)} kinds:\n" + "\n".join(
        f"- {symptom} ({len(examples)}x), e.g.\n      " + "\n      ".join(examples[:2])
        for symptom, examples in sorted(problems.items()))


def test_the_header_check_refuses_what_it_should() -> None:
    good = {"x-content-type-options": ["nosniff"], "x-frame-options": ["DENY"],
            "referrer-policy": ["no-referrer"], "cross-origin-resource-policy": ["same-origin"],
            "content-security-policy": ["default-src 'none'; frame-ancestors 'none'"]}
    assert header_problems(good) == []
    assert header_problems({**good, "content-security-policy": [
        "frame-ancestors 'none'; default-src 'none'; img-src 'self'"]}) == []
    for name, values in [("x-frame-options", []), ("x-frame-options", ["DENY", "DENY"]),
                         ("x-frame-options", ["SAMEORIGIN"]),
                         ("cross-origin-resource-policy", ["cross-origin"]),
                         ("content-security-policy", ["default-src 'self'"]),
                         ("content-security-policy", ["default-src 'none' https:; "
                                                      "frame-ancestors 'none'"]),
                         ("content-security-policy", ["default-src 'none'; "
                                                      "frame-ancestors 'none' https:"]),
                         ("content-security-policy", ["frame-ancestors *; default-src 'none'; "
                                                      "frame-ancestors 'none'"])]:
        assert header_problems({**good, name: values}), (name, values)


@pytest.mark.parametrize("field", ["older_than_ms", "abandoned_after_ms"])
def test_what_fuzzing_found_gc_ages_past_int64(server: Any, field: str) -> None:
    """An age past 2**63 - 1 ms was a 500: the cutoff (now minus the age) overflowed the
    database integer (found by the fuzzing above). Now the schema refuses it, naming it."""
    with httpx.Client(base_url=server.url) as api:
        for age in (2**63, 4043823146827321756876800, 10**30):
            resp = api.post(r.COLLECT_GARBAGE.path, json={field: age})
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["field"] == field
        resp = api.post(r.COLLECT_GARBAGE.path, json={field: 2**63 - 1})
        assert resp.status_code == 200, resp.text
