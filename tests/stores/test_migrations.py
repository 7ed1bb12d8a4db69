"""Alembic migrations against real, empty SQLite and PostgreSQL databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from modelyard.domain.entities import LifecycleStage
from modelyard.errors import AlreadyExists, ErrorCode, SchemaOutdated
from modelyard.stores.sql import open_sql_stores
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.engine import SQLITE_BUSY_TIMEOUT_MS, make_engine
from modelyard.stores.sql.migrate import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    _alembic_config,
    current_revision,
    ensure_schema,
    upgrade,
)

TABLES = set(s.Base.metadata.tables)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: str = request.getfixturevalue("pg_database")
    name = f"modelyard_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{server.rpartition('/')[0]}/{name}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    eng = make_engine(empty_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _stamp(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_head_revision_is_alembics_head() -> None:
    script = ScriptDirectory(MIGRATIONS_DIR.as_posix())
    assert script.get_heads() == [HEAD_REVISION]  # one head, and it is the one start-up checks
    assert script.get_current_head() == HEAD_REVISION
    # an unbroken chain from the head down to the base
    chain = list(script.walk_revisions("base", "heads"))
    assert chain[0].revision == HEAD_REVISION
    assert chain[-1].down_revision is None


def test_upgrade_creates_every_table_and_the_default_experiment(engine: Engine) -> None:
    assert current_revision(engine) is None
    assert _tables(engine) == set()
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert _tables(engine) == TABLES | {"alembic_version"}
    with engine.connect() as conn:
        rows = conn.execute(select(s.experiments)).all()
    assert len(rows) == 1
    default = rows[0]
    assert (default.experiment_id, default.name, default.lifecycle_stage) == (
        0, "Default", "active")
    assert default.deleted_time is None and default.creation_time > 0
    ensure_schema(engine, create_if_empty=False)  # current: nothing to do, nothing raised
    upgrade(engine)  # upgrading a current database is a no-op
    assert current_revision(engine) == HEAD_REVISION


def test_the_first_experiment_after_default_gets_id_1(empty_url: str) -> None:
    stores = open_sql_stores(empty_url)  # creates the empty database's schema
    try:
        assert stores.experiments.create_experiment("first", description="", tags={},
                                                    now=1) == "1"
        assert stores.experiments.get_experiment("0").name == "Default"
    finally:
        stores.close()


def test_migrated_schema_matches_the_orm_metadata(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, s.Base.metadata)
    assert diffs == []


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "base")  # type: ignore[arg-type]
    assert _tables(engine) <= {"alembic_version"}
    assert current_revision(engine) is None
    upgrade(engine)
    assert _tables(engine) == TABLES | {"alembic_version"}


def test_ensure_schema_creates_an_empty_database_only_when_allowed(engine: Engine) -> None:
    with pytest.raises(SchemaOutdated) as exc:
        ensure_schema(engine, create_if_empty=False)
    assert "modelyard db upgrade" in exc.value.message
    assert "revision none" in exc.value.message
    assert _tables(engine) == set()
    ensure_schema(engine)
    assert current_revision(engine) == HEAD_REVISION


@pytest.mark.parametrize("stamp", ["0000", "9999", "not-a-revision"])
def test_ensure_schema_refuses_an_older_or_unknown_stamp(empty_url: str, stamp: str) -> None:
    # a password in the URL (ignored by the trust-auth test server) must never be echoed
    url = empty_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    engine = make_engine(url)
    try:
        upgrade(engine)
        _stamp(engine, stamp)
        with pytest.raises(SchemaOutdated) as exc:
            ensure_schema(engine)
        err = exc.value
        assert err.code is ErrorCode.SCHEMA_OUTDATED
        assert "modelyard db upgrade" in err.message
        assert stamp in err.message and HEAD_REVISION in err.message
        assert "hunter2" not in err.message
        with pytest.raises(SchemaOutdated):
            open_sql_stores(url)
        with pytest.raises(SchemaOutdated):
            open_sql_stores(url, create_if_empty=False)
        assert current_revision(engine) == stamp  # nothing was changed
    finally:
        engine.dispose()


def test_ensure_schema_refuses_a_foreign_database(engine: Engine) -> None:
    """Tables but no stamp: not ours, or made by hand. Never migrated over blindly."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE something_else (x INTEGER)"))
    with pytest.raises(SchemaOutdated) as exc:
        ensure_schema(engine)
    assert "modelyard db upgrade" in exc.value.message
    assert _tables(engine) == {"something_else"}


def test_sqlite_pragmas_are_in_effect(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        ensure_schema(engine)
        for _ in range(2):  # every pooled connection, not just the first
            with engine.connect() as conn:
                pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
                assert str(pragma("journal_mode")).lower() == "wal"
                assert pragma("foreign_keys") == 1
                assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
                assert pragma("synchronous") == 1  # NORMAL
                # case_sensitive_like cannot be read back; its effect can
                assert conn.exec_driver_sql("SELECT 'a' LIKE 'A'").scalar() == 0
        # foreign keys are enforced, and cascade
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(s.tags.insert().values(run_id="f" * 32, key="k", value="v"))
        with engine.begin() as conn:
            conn.execute(s.runs.insert().values(
                run_id="a" * 32, experiment_id=0, run_name="r", user_id="u", status="RUNNING",
                start_time=0, lifecycle_stage="active"))
            conn.execute(s.tags.insert().values(run_id="a" * 32, key="k", value="v"))
        with engine.begin() as conn:
            conn.execute(s.runs.delete().where(s.runs.c.run_id == "a" * 32))
        with engine.connect() as conn:
            assert conn.execute(select(s.tags)).all() == []
    finally:
        engine.dispose()
    assert (tmp_path / "p.db-wal").exists() or (tmp_path / "p.db").exists()


def test_bare_paths_are_sqlite_files(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "m.db"
    stores = open_sql_stores(str(target))
    try:
        assert stores.engine.dialect.name == "sqlite"
        assert stores.experiments.get_experiment("0").name == "Default"
    finally:
        stores.close()
    assert target.exists()


def test_upgrading_from_0001_keeps_every_row_and_frees_deleted_names(engine: Engine) -> None:
    """0002 recreates ``experiments`` on SQLite: runs and their rows must survive it (a table
    drop with foreign keys on would cascade), and foreign keys must be on again afterwards."""
    upgrade(engine, "0001")
    with engine.begin() as conn:
        ids = [
            conn.execute(s.experiments.insert().values(
                name=name, description="", lifecycle_stage=stage, creation_time=1,
                last_update_time=1).returning(s.experiments.c.experiment_id)).scalar_one()
            for name, stage in (("kept", "active"), ("gone", "deleted"))
        ]
        conn.execute(s.experiment_tags.insert().values(experiment_id=ids[0], key="k", value="v"))
        for i, exp_id in enumerate(ids):
            conn.execute(s.runs.insert().values(
                run_id=f"{i:032x}", experiment_id=exp_id, run_name="r", user_id="u",
                status="FINISHED", start_time=1, lifecycle_stage="active"))
            conn.execute(s.params.insert().values(run_id=f"{i:032x}", key="p", value="1"))
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM params")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM experiment_tags")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM experiments")).scalar_one() == 3
    stores = open_sql_stores(engine.url.render_as_string(hide_password=False))
    try:
        # the deleted experiment's name is free now; an active one's is not
        assert stores.experiments.create_experiment("gone", description="", tags={}, now=2)
        with pytest.raises(Exception) as exc:
            stores.experiments.create_experiment("kept", description="", tags={}, now=2)
        assert getattr(exc.value, "code", None) == ErrorCode.ALREADY_EXISTS
    finally:
        stores.close()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        # the referential integrity still holds: a run of a missing experiment is refused
        with pytest.raises(IntegrityError):
            conn.execute(s.runs.insert().values(
                run_id="f" * 32, experiment_id=99, run_name="r", user_id="u",
                status="FINISHED", start_time=1, lifecycle_stage="active"))


def _old_history(n: int, seed: int) -> list[tuple[int, int, float | None]]:
    """(step, timestamp, value or None for NaN) in logging order: steps out of order with
    repeats, so logging order decides between points that share a step and a timestamp."""
    import random

    rng = random.Random(seed)
    return [(rng.randrange(n // 3), rng.randrange(3), None if i % 97 == 5 else rng.random())
            for i in range(n)]


def test_0003_packs_histories_into_chunks_and_the_downgrade_unpacks_them(
        engine: Engine) -> None:
    """0003 moves every history of 2,048 points or more into chunks; both tiers read back
    exactly as the rows were (history order: step, timestamp, logging order), and the
    downgrade gives back the same rows in the same order."""
    import math

    upgrade(engine, "0001")
    big, small = _old_history(5_000, 1), _old_history(300, 2)
    run_id = "c" * 32
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
            "lifecycle_stage) VALUES (:r, 0, 'r', 'u', 'RUNNING', 0, 'active')"), {"r": run_id})
        for key, points in (("big", big), ("small", small)):
            conn.execute(text(
                "INSERT INTO metrics (run_id, key, value, is_nan, step, timestamp) "
                "VALUES (:r, :k, :v, :nan, :s, :t)"),
                [{"r": run_id, "k": key, "v": v, "nan": v is None, "s": st, "t": ts}
                 for st, ts, v in points])
            conn.execute(text(
                "INSERT INTO latest_metrics (run_id, key, value, is_nan, step, timestamp) "
                "VALUES (:r, :k, 0.0, false, 0, 0)"), {"r": run_id, "k": key})

    def expected(points: list[tuple[int, int, float | None]]) -> list[tuple[int, int, str]]:
        ordered = sorted(enumerate(points), key=lambda p: (p[1][0], p[1][1], p[0]))
        return [(st, ts, "nan" if v is None else repr(v)) for _, (st, ts, v) in ordered]

    def read(key: str) -> list[tuple[int, int, str]]:
        stores = open_sql_stores(engine.url.render_as_string(hide_password=False))
        try:
            return [(m.step, m.timestamp, "nan" if math.isnan(m.value) else repr(m.value))
                    for m in stores.runs.get_metric_history(run_id, key)]
        finally:
            stores.close()

    upgrade(engine)
    with engine.connect() as conn:
        tiers = dict(conn.execute(text(
            "SELECT key, count(*) FROM metrics GROUP BY key")).all())
        chunks = conn.execute(text("SELECT key, sum(n) FROM metric_chunks GROUP BY key")).all()
        pending = dict(conn.execute(text("SELECT key, pending FROM latest_metrics")).all())
    assert tiers == {"small": 300} and chunks == [("big", 5_000)]
    assert pending == {"big": 0, "small": 300}
    assert read("big") == expected(big) and read("small") == expected(small)

    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0002")  # type: ignore[arg-type]
        rows = conn.execute(text(
            "SELECT step, timestamp, value, is_nan FROM metrics WHERE key = 'big' "
            "ORDER BY step, timestamp, id")).all()
    assert "metric_chunks" not in _tables(engine)
    assert [(st, ts, "nan" if nan else repr(v)) for st, ts, v, nan in rows] == expected(big)


def test_0004_backfills_skeletons_and_keeps_existing_lookalikes_working(
        engine: Engine) -> None:
    """Experiments stored before 0004 whose names already look alike: the upgrade succeeds,
    each keeps working under its own name (rename, delete, restore), and a new look-alike is
    refused."""
    from modelyard.stores.sql.experiments import name_skeleton

    upgrade(engine, "0003")
    cyrillic, fullwidth = "b\u0430seline", "".join(chr(ord(c) + 0xFEE0) for c in "baseline")
    rows = [  # (name, stage) in id order 1..6: three active look-alikes, two deleted ones
        (cyrillic, "deleted"), ("baseline", "active"), (fullwidth, "active"),
        ("baseline", "deleted"), ("base1ine", "active"), ("other", "active"),
    ]
    with engine.begin() as conn:
        for name, stage in rows:
            conn.execute(text(
                "INSERT INTO experiments (name, description, lifecycle_stage, creation_time, "
                "last_update_time, deleted_time) VALUES (:n, '', :s, 1, 1, :d)"),
                {"n": name, "s": stage, "d": 1 if stage == "deleted" else None})
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT experiment_id, name_skeleton FROM experiments")).all())
    key = name_skeleton("baseline")
    # the oldest active one's name (id 2) keeps the skeleton, its deleted namesake (4) too;
    # the others get distinct values no digest equals
    assert stored == {0: name_skeleton("Default"), 1: "lookalike-1", 2: key, 3: "lookalike-3",
                      4: key, 5: "lookalike-5", 6: name_skeleton("other")}
    stores = open_sql_stores(engine.url.render_as_string(hide_password=False))
    try:
        ex = stores.experiments
        assert [e.name for e in (ex.get_experiment(str(i)) for i in range(1, 7))] == [
            name for name, _ in rows]
        ex.update_experiment("3", name=fullwidth, description="same name, new text", now=2)
        ex.update_experiment("5", name=None, description="renamed not", now=2)
        ex.set_experiment_lifecycle("3", stage=LifecycleStage.DELETED, now=3)
        ex.set_experiment_lifecycle("3", stage=LifecycleStage.ACTIVE, now=4)
        ex.set_experiment_lifecycle("1", stage=LifecycleStage.ACTIVE, now=4)  # restorable
        assert ex.get_experiment("1").lifecycle_stage is LifecycleStage.ACTIVE
        assert ex.get_experiment("3").description == "same name, new text"
        held = r"looks like the existing experiment 'baseline' \(id 2\)"
        with pytest.raises(AlreadyExists, match=held):
            ex.create_experiment("baseIine", description="", tags={}, now=5)
        ex.update_experiment("5", name="base one", description=None, now=6)  # renamed away
        assert ex.get_experiment("5").name == "base one"
    finally:
        stores.close()
