"""Experiment names that look alike, refused on SQLite and PostgreSQL, embedded and over HTTP.

Every test takes ``db_url`` (through ``settings`` or ``server``), so each runs once per
database. Non-ASCII names are written as escapes: the point is that they look like ASCII.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelyard.backend.local import LocalBackend
from modelyard.domain.entities import Experiment, LifecycleStage, ViewType
from modelyard.errors import AlreadyExists, ErrorCode, ExperimentNotFound, InvalidArgument
from modelyard.settings import Settings
from modelyard.stores.sql import open_sql_stores
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.experiments import name_skeleton
from modelyard.wire import routes as r

CYRILLIC = "b\u0430seline"  # CYRILLIC SMALL LETTER A
FULLWIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "baseline")
ZWSP = "base\u200bline"  # ZERO WIDTH SPACE
# Refused because they look like 'baseline': 409 ALREADY_EXISTS.
LOOKALIKES = [CYRILLIC, FULLWIDTH, "base1ine", "baseIine"]
# Refused before any look-up, for the invisible character: 400 INVALID_ARGUMENT.
INVISIBLE = [ZWSP, "baseline\u200d", "\u202ebaseline", "base\u00adline"]


@pytest.fixture
def service(settings: Settings) -> Iterator[LocalBackend]:
    backend = LocalBackend(settings)
    yield backend
    backend.close()


def _all(service: LocalBackend) -> list[Experiment]:
    return list(service.list_experiments(view=ViewType.ALL))


def _assert_refused_as_lookalike(exc: pytest.ExceptionInfo[AlreadyExists], name: str,
                                 holder: Experiment) -> None:
    err = exc.value
    assert err.code is ErrorCode.ALREADY_EXISTS and err.field == "name"
    assert err.message.startswith(
        f"experiment name {name!r} looks like the existing experiment {holder.name!r} "
        f"(id {holder.experiment_id}")
    assert err.message.endswith("choose a name that differs visibly")


# -------------------------------------------------------------------------- embedded


def test_create_refuses_names_that_look_like_an_existing_one(service: LocalBackend) -> None:
    baseline = service.create_experiment("baseline")
    before = _all(service)
    for name in LOOKALIKES:
        with pytest.raises(AlreadyExists) as exc:
            service.create_experiment(name)
        _assert_refused_as_lookalike(exc, name, baseline)
        assert exc.value.message == (
            f"experiment name {name!r} looks like the existing experiment 'baseline' "
            f"(id {baseline.experiment_id}); choose a name that differs visibly")
    for name in INVISIBLE:
        with pytest.raises(InvalidArgument) as bad:
            service.create_experiment(name)
        assert bad.value.field == "name" and "U+" in bad.value.message
    assert _all(service) == before  # nothing stored, the existing experiment intact
    assert service.get_experiment(baseline.experiment_id) == baseline
    # the exact name is refused as before, with its own message
    with pytest.raises(AlreadyExists, match="an experiment named 'baseline' already exists"):
        service.create_experiment("baseline")


def test_rename_refuses_a_lookalike_but_a_name_may_look_like_its_own(
        service: LocalBackend) -> None:
    baseline = service.create_experiment("baseline")
    other = service.create_experiment("other")
    before = _all(service)
    for name in LOOKALIKES:
        with pytest.raises(AlreadyExists) as exc:
            service.update_experiment(other.experiment_id, name=name)
        _assert_refused_as_lookalike(exc, name, baseline)
    for name in INVISIBLE:
        with pytest.raises(InvalidArgument):
            service.update_experiment(other.experiment_id, name=name)
    assert _all(service) == before
    # Renaming 'baseline' to a look-alike of itself is fine, and back again.
    renamed = service.update_experiment(baseline.experiment_id, name=CYRILLIC)
    assert renamed.name == CYRILLIC
    with pytest.raises(AlreadyExists) as exc:  # now the ASCII name looks like it
        service.create_experiment("baseline")
    _assert_refused_as_lookalike(exc, "baseline", renamed)
    assert service.update_experiment(baseline.experiment_id, name="baseline").name == "baseline"
    # A rename to the name it has, and a description alone, change nothing about the name.
    assert service.update_experiment(baseline.experiment_id, name="baseline").name == "baseline"
    assert service.update_experiment(other.experiment_id, description="d").description == "d"


def test_restore_under_a_new_name_follows_the_same_rule(service: LocalBackend) -> None:
    baseline = service.create_experiment("baseline")
    victim = service.create_experiment("victim")
    service.delete_experiment(victim.experiment_id)
    before = _all(service)
    for name in LOOKALIKES:
        with pytest.raises(AlreadyExists) as exc:
            service.restore_experiment(victim.experiment_id, new_name=name)
        _assert_refused_as_lookalike(exc, name, baseline)
    for name in INVISIBLE:
        with pytest.raises(InvalidArgument):
            service.restore_experiment(victim.experiment_id, new_name=name)
    assert _all(service) == before
    stored = service.get_experiment(victim.experiment_id)
    assert stored.name == "victim" and stored.lifecycle_stage is LifecycleStage.DELETED
    service.restore_experiment(victim.experiment_id, new_name="victim 2")
    assert service.get_experiment(victim.experiment_id).name == "victim 2"


def test_a_deleted_experiment_still_blocks_its_lookalikes(service: LocalBackend) -> None:
    """Its restore would collide with them; its exact name, though, is free as before."""
    baseline = service.create_experiment("baseline")
    service.delete_experiment(baseline.experiment_id)
    deleted = service.get_experiment(baseline.experiment_id)
    with pytest.raises(AlreadyExists) as exc:
        service.create_experiment(CYRILLIC)
    _assert_refused_as_lookalike(exc, CYRILLIC, deleted)
    assert f"(id {baseline.experiment_id}, deleted)" in exc.value.message
    again = service.create_experiment("baseline")  # the same name: free
    with pytest.raises(AlreadyExists) as exc:  # an active holder is named first
        service.create_experiment(FULLWIDTH)
    _assert_refused_as_lookalike(exc, FULLWIDTH, again)
    with pytest.raises(AlreadyExists, match="is taken by an active experiment"):
        service.restore_experiment(baseline.experiment_id)
    service.delete_experiment(again.experiment_id)
    service.restore_experiment(baseline.experiment_id)  # now it can come back
    assert service.get_experiment(baseline.experiment_id).name == "baseline"


def test_the_default_experiment_counts(service: LocalBackend) -> None:
    default = service.get_experiment("0")
    for name in ("DefauIt", "Defau1t", "D\u0435fault"):  # CYRILLIC SMALL LETTER IE
        with pytest.raises(AlreadyExists) as exc:
            service.create_experiment(name)
        _assert_refused_as_lookalike(exc, name, default)
    assert [e.name for e in _all(service)] == ["Default"]


def test_lookup_by_name_stays_exact(service: LocalBackend) -> None:
    baseline = service.create_experiment("baseline")
    assert service.get_experiment_by_name("baseline") == baseline
    for name in (CYRILLIC, FULLWIDTH, "Baseline"):
        with pytest.raises(ExperimentNotFound):
            service.get_experiment_by_name(name)


def test_names_that_differ_visibly_coexist(service: LocalBackend) -> None:
    names = ["model", "\u043c\u043e\u0434\u0435\u043b\u044c", "Model", "model-2", "mod\u00e9l",
             "x\u00b2", "\u65e5\u672c"]
    for name in names:
        assert service.create_experiment(name).name == name  # stored exactly as given
    assert sorted(e.name for e in _all(service)) == sorted([*names, "Default"])


def test_the_database_refuses_two_active_lookalikes(settings: Settings) -> None:
    """The unique index itself, below the store's check: what keeps concurrent writers out."""
    stores = open_sql_stores(settings.db_url)
    try:
        held = stores.experiments.create_experiment("baseline", description="", tags={}, now=1)
        row = {"description": "", "lifecycle_stage": "active", "creation_time": 1,
               "last_update_time": 1, "name_skeleton": name_skeleton(CYRILLIC)}
        with pytest.raises(IntegrityError), stores.engine.begin() as conn:
            conn.execute(s.experiments.insert().values(name=CYRILLIC, **row))
        # a deleted row may share it (its restore is what the index then refuses)
        with stores.engine.begin() as conn:
            conn.execute(s.experiments.insert().values(
                name=CYRILLIC, **{**row, "lifecycle_stage": "deleted", "deleted_time": 2}))
            exp_id = conn.execute(select(s.experiments.c.experiment_id).where(
                s.experiments.c.name == CYRILLIC)).scalar_one()
        with pytest.raises(AlreadyExists) as exc:
            stores.experiments.set_experiment_lifecycle(
                str(exp_id), stage=LifecycleStage.ACTIVE, now=3)
        assert exc.value.message.startswith(
            f"cannot restore experiment {exp_id}: its name {CYRILLIC!r} looks like the name "
            f"'baseline' of the active experiment {held}")
        with stores.engine.connect() as conn:
            stage = conn.execute(select(s.experiments.c.lifecycle_stage).where(
                s.experiments.c.experiment_id == exp_id)).scalar_one()
        assert stage == "deleted"
    finally:
        stores.close()


def test_concurrent_lookalikes_one_wins(settings: Settings) -> None:
    """Writers that all pass the check at once: exactly one is stored, the others get 409."""
    names = ["race", "r\u0430ce", "rac\u0435", "\u0433ace", "r\u0251ce", "ra\u0441e"]
    stores = [open_sql_stores(settings.db_url) for _ in names]
    barrier = threading.Barrier(len(names))
    results: dict[str, str] = {}

    def create(i: int) -> None:
        barrier.wait()
        try:
            stores[i].experiments.create_experiment(names[i], description="", tags={}, now=1)
            results[names[i]] = "created"
        except AlreadyExists as exc:
            results[names[i]] = exc.message

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        created = [n for n, res in results.items() if res == "created"]
        assert len(results) == len(names) and len(created) == 1, results
        for name, res in results.items():
            if name != created[0]:
                assert f"looks like the existing experiment {created[0]!r}" in res, res
        with stores[0].engine.connect() as conn:
            stored = conn.execute(select(s.experiments.c.name)).scalars().all()
        assert sorted(stored) == sorted(["Default", created[0]])
    finally:
        for st in stores:
            st.close()


# -------------------------------------------------------------------------- over HTTP


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["field"] == "name", err
    message: str = err["message"]
    return message


def _names(api: httpx.Client) -> list[tuple[str, str, str]]:
    listed = api.get(r.LIST_EXPERIMENTS.path, params={"view": "all"}).json()["experiments"]
    return sorted((e["experiment_id"], e["name"], e["lifecycle_stage"]) for e in listed)


def test_lookalikes_are_refused_over_http(api: httpx.Client) -> None:
    made = api.post(r.CREATE_EXPERIMENT.path, json={"name": "baseline"})
    assert made.status_code == 201, made.text
    baseline = made.json()
    exp_id = baseline["experiment_id"]
    other = api.post(r.CREATE_EXPERIMENT.path, json={"name": "other"}).json()["experiment_id"]
    victim = api.post(r.CREATE_EXPERIMENT.path, json={"name": "victim"}).json()["experiment_id"]
    assert api.delete(r.DELETE_EXPERIMENT.url(experiment_id=victim)).status_code == 200
    before = _names(api)
    expected = (f"looks like the existing experiment 'baseline' (id {exp_id}); "
                "choose a name that differs visibly")
    for name in LOOKALIKES:
        attempts = [
            api.post(r.CREATE_EXPERIMENT.path, json={"name": name}),
            api.patch(r.UPDATE_EXPERIMENT.url(experiment_id=other), json={"name": name}),
            api.post(r.RESTORE_EXPERIMENT.url(experiment_id=victim), json={"new_name": name}),
        ]
        for resp in attempts:
            message = _error(resp, 409, "ALREADY_EXISTS")
            assert message == f"experiment name {name!r} {expected}"
    for name in INVISIBLE:
        attempts = [
            api.post(r.CREATE_EXPERIMENT.path, json={"name": name}),
            api.patch(r.UPDATE_EXPERIMENT.url(experiment_id=other), json={"name": name}),
            api.post(r.RESTORE_EXPERIMENT.url(experiment_id=victim), json={"new_name": name}),
        ]
        for resp in attempts:
            assert "U+" in _error(resp, 400, "INVALID_ARGUMENT")
    # nothing stored changed: no new experiment, the existing ones intact
    assert _names(api) == before
    assert api.get(r.GET_EXPERIMENT.url(experiment_id=exp_id)).json() == baseline
    found = api.get(r.GET_EXPERIMENT_BY_NAME.path, params={"name": CYRILLIC})
    assert found.status_code == 404
    # a look-alike of its own name is fine
    renamed = api.patch(r.UPDATE_EXPERIMENT.url(experiment_id=exp_id), json={"name": CYRILLIC})
    assert renamed.status_code == 200 and renamed.json()["name"] == CYRILLIC
