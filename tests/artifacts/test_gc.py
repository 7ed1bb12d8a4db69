"""Garbage collection that frees real bytes and never takes a blob an upload is about to name:
on SQLite and PostgreSQL, with a real artifact folder."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.artifacts import FsspecBlobStore, hash_bytes
from modelyard.artifacts.uploads import UploadArea
from modelyard.cli.main import app
from modelyard.stores.sql import SqlStores, open_sql_stores
from modelyard.tracking.gc import DAY_MS, GcReport, collect_garbage
from modelyard.tracking.service import TrackingService, now_ms

HOUR_MS = 3_600_000


class Env:
    def __init__(self, db_url: str, root: Path) -> None:
        self.db_url = db_url
        self.root = root
        self.stores: SqlStores = open_sql_stores(db_url)
        self.blobs = FsspecBlobStore(str(root))
        self.uploads = UploadArea(self.blobs)
        # Deletions an hour in the past, so "older than 1 minute" covers them.
        self.svc = TrackingService(experiments=self.stores.experiments, runs=self.stores.runs,
                                   artifact_index=self.stores.artifacts,
                                   maintenance=self.stores.maintenance, blobs=self.blobs,
                                   clock=lambda: now_ms() - HOUR_MS)

    def gc(self, *, dry_run: bool = False, older_than_ms: int = 60_000) -> GcReport:
        return collect_garbage(self.stores.maintenance, self.blobs, uploads=self.uploads,
                               older_than_ms=older_than_ms, now_ms=now_ms(), dry_run=dry_run)

    def run(self, experiment: str = "0") -> str:
        return self.svc.create_run(experiment).info.run_id

    def put(self, run_id: str, path: str, data: bytes) -> str:
        return self.svc.put_artifact(run_id, path, [data]).digest

    def disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(db_url, tmp_path / "artifacts")
    yield e
    e.stores.close()


def test_gc_frees_exactly_the_bytes_of_deleted_runs(env: Env, db_url: str) -> None:
    shared = os.urandom(40_000)
    gone = {name: os.urandom(n) for name, n in (("a", 10_000), ("b", 20_000), ("c", 30_000))}
    live_only = os.urandom(5_000)
    doomed = env.run()
    env.put(doomed, "a.bin", gone["a"])
    env.put(doomed, "shared.bin", shared)
    exp = env.svc.create_experiment("to-delete").experiment_id
    in_exp = env.run(exp)
    env.put(in_exp, "b.bin", gone["b"])
    env.put(in_exp, "c/c.bin", gone["c"])
    env.put(in_exp, "again.bin", gone["a"])  # the same content twice: one blob
    live = env.run()
    env.put(live, "shared.bin", shared)
    env.put(live, "mine.bin", live_only)
    env.svc.log_batch(doomed, _batch())
    env.svc.delete_run(doomed)
    env.svc.delete_experiment(exp)

    before = env.disk()
    dry = env.gc(dry_run=True)
    assert dry.bytes_freed == sum(len(d) for d in gone.values())
    assert env.disk() == before  # a dry run changes nothing
    report = env.gc()
    assert (report.blobs, report.bytes_freed) == (3, dry.bytes_freed)
    assert env.disk() == before - report.bytes_freed  # measured on disk, not just reported
    assert sorted(report.runs) == sorted([doomed, in_exp]) and report.experiments == (exp,)
    assert report.rows == dry.rows
    assert report.rows["runs"] == 2 and report.rows["artifacts"] == 5
    assert report.rows["metrics"] == 2 and report.rows["params"] == 1
    assert report.rows["experiments"] == 1
    for digest in map(hash_bytes, gone.values()):
        assert not env.blobs.exists(digest)
    assert env.blobs.read_bytes(hash_bytes(shared)) == shared  # the live run still uses it
    assert env.blobs.read_bytes(hash_bytes(live_only)) == live_only
    assert [a.path for a in env.svc.list_artifacts(live)] == ["mine.bin", "shared.bin"]
    again = env.gc()
    assert (again.blobs, again.rows_freed, again.runs) == (0, 0, ())


def _batch():  # type: ignore[no-untyped-def]
    from modelyard.domain.entities import LogBatch, Metric, Param

    return LogBatch(metrics=(Metric("m", 1.0, 0, 1), Metric("m", 2.0, 1, 2)),
                    params=(Param("p", "v"),))


def test_a_leased_blob_survives_and_a_stale_lease_does_not(env: Env) -> None:
    # An upload that has written and published its blob but not yet named it in a manifest.
    data = b"in flight"
    staged = env.blobs.stage_stream([data])
    lease = env.stores.artifacts.add_lease(staged.ref.digest, now=now_ms())
    env.blobs.publish(staged)
    report = env.gc()
    assert report.blobs == 0 and env.blobs.read_bytes(staged.ref.digest) == data
    run = env.run()
    from modelyard.domain.entities import ArtifactEntry

    env.stores.artifacts.put_artifacts(run, [ArtifactEntry("f", staged.ref.digest, 9)],
                                       release_lease=lease)
    env.blobs.settle(staged)
    assert env.gc().blobs == 0 and env.blobs.read_bytes(staged.ref.digest) == data

    # A lease a dead client left two days ago protects nothing and is dropped.
    orphan = env.blobs.put_stream([b"orphan"])
    env.stores.artifacts.add_lease(orphan.digest, now=now_ms() - 2 * DAY_MS)
    assert env.gc(dry_run=True).leases == 1
    report = env.gc()
    assert report.leases == 1 and report.blobs == 1 and not env.blobs.exists(orphan.digest)
    assert env.gc().leases == 0


def test_claims_a_crashed_collection_left_are_settled(env: Env) -> None:
    run = env.run()
    used = env.put(run, "used.bin", b"used by a run")
    unused = env.blobs.put_stream([b"nobody's"]).digest
    for digest in (used, unused):  # the state a collection killed after claiming leaves
        assert env.blobs.claim(digest) is not None
    report = env.gc()
    assert report.trash_settled == 2
    assert env.blobs.read_bytes(used) == b"used by a run"
    assert not env.blobs.exists(unused) and list(env.blobs.iter_claims()) == []


def test_abandoned_uploads_and_temp_files_are_swept(env: Env) -> None:
    run = env.run()
    old = env.uploads.create(run_id=run, path="f", size=3 << 20, part_size=1 << 20,
                             digest=None, now_ms=now_ms())
    writer = env.uploads.open_part(old, 1)
    writer.write([os.urandom(1 << 20)])
    writer.commit()
    writer.close()
    fresh = env.uploads.create(run_id=run, path="g", size=10, part_size=1 << 20, digest=None,
                               now_ms=now_ms())
    leftover = env.blobs.stage_stream([b"x" * 1000])
    two_days_ago = time.time() - 2 * 86_400
    for path in [*(env.root / "uploads" / old.upload_id).rglob("*"), Path(leftover.temp)]:
        os.utime(path, (two_days_ago, two_days_ago))
    dry = env.gc(dry_run=True)
    assert (dry.uploads, dry.temp_files, dry.temp_bytes) == (1, 1, 1000)
    assert dry.upload_bytes >= 1 << 20  # what the part occupies (the rest is sparse)
    report = env.gc()
    assert (report.uploads, report.upload_bytes) == (1, dry.upload_bytes)
    assert (report.temp_files, report.temp_bytes) == (1, 1000)
    assert not (env.root / "uploads" / old.upload_id).exists()
    assert env.uploads.get(fresh.upload_id) == fresh  # recent: kept
    assert not Path(leftover.temp).exists()


def test_gc_writes_one_audit_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    run = env.run()
    env.put(run, "f", b"bytes")
    env.svc.delete_run(run)
    with caplog.at_level(logging.INFO, logger="modelyard.audit"):
        report = env.gc()
    lines = [r.getMessage() for r in caplog.records if r.name == "modelyard.audit"]
    assert len(lines) == 1 and lines[0].startswith("gc {")
    logged = json.loads(lines[0].removeprefix("gc "))
    assert logged["runs"] == [run] and logged["bytes_freed"] == 5 == report.bytes_freed
    assert logged["dry_run"] is False and logged["rows"]["artifacts"] == 1


def test_gc_races_uploads_of_the_same_content_and_loses_nothing(env: Env) -> None:
    """Uploaders keep storing a few contents, deleting half their runs (so those blobs keep
    becoming unreferenced), while collections run back to back. Afterwards every manifest
    entry's blob exists and verifies."""
    contents = [os.urandom(2048) for _ in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []
    reports: list[GcReport] = []
    live: list[str] = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as finely as possible

    def met_an_upload_in_flight() -> bool:
        return any(r.blobs_kept for r in list(reports))

    deadline = time.monotonic() + 60

    def upload(seed: int) -> None:
        rng = random.Random(seed)
        kept: str | None = None
        try:
            # 120 rounds, and on until the collector has met an upload in flight (the race
            # this test is about is timing-dependent: some schedules need more rounds).
            for i in itertools.count():
                if i >= 120 and (met_an_upload_in_flight() or time.monotonic() > deadline):
                    break
                run = env.run()
                data = rng.choice(contents)
                digest = env.put(run, "model.bin", data)
                # The moment put returns, the blob is there and intact, race or not.
                assert env.blobs.read_bytes(digest) == data
                if kept is not None and rng.random() < 0.7:
                    env.svc.delete_run(kept)  # its blob becomes garbage unless shared
                    kept = None
                if kept is None:
                    kept = run
                else:
                    env.svc.delete_run(run)
        except BaseException as exc:
            errors.append(exc)
        if kept is not None:
            live.append(kept)

    def collect() -> None:
        try:
            while not stop.is_set():
                reports.append(env.gc(older_than_ms=0))
        except BaseException as exc:
            errors.append(exc)

    uploaders = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    collector = threading.Thread(target=collect)
    try:
        collector.start()
        for t in uploaders:
            t.start()
        for t in uploaders:
            t.join(120)
    finally:
        stop.set()
        collector.join(60)
        sys.setswitchinterval(old_interval)
    assert errors == []
    assert sum(r.blobs for r in reports) > 0  # the collector really freed blobs meanwhile
    # ... and really met uploads in flight: blobs it claimed, found taken, and put back.
    assert sum(r.blobs_kept for r in reports) > 0
    for run in live:
        (entry,) = env.svc.list_artifacts(run)
        assert env.blobs.read_bytes(entry.digest) in contents  # present and verified
    final = env.gc(older_than_ms=0)
    assert final.blobs_kept == 0
    assert {r.digest for r in env.blobs.iter_digests()} == {
        env.svc.list_artifacts(run)[0].digest for run in live}
    assert list(env.blobs.iter_claims()) == []


def test_cli_gc_against_either_database(env: Env, db_url: str) -> None:
    run = env.run()
    env.put(run, "f.bin", b"z" * 777)
    env.svc.delete_run(run)
    before = env.disk()
    argv = ["gc", "--db", db_url, "--artifacts", str(env.root), "--older-than", "1m", "--json"]
    dry = CliRunner().invoke(app, argv)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["bytes_freed"] == 777 and env.disk() == before
    real = CliRunner().invoke(app, [*argv, "--no-dry-run"])
    assert real.exit_code == 0, real.output
    report = json.loads(real.stdout)
    assert report["runs"] == [run] and report["bytes_freed"] == 777
    assert env.disk() == before - 777
    assert "audit: gc {" in real.stderr


def test_a_blob_only_another_referrer_names_survives(env: Env) -> None:
    """gc keeps what any referrer names, not only run manifests: a capability's own table of
    digests (here a real table, created for the test, standing for registry model versions)
    keeps its blobs alive once it is in the referrer registry, on both databases."""
    from sqlalchemy import Column, MetaData, String, Table

    from modelyard.stores.sql.maintenance import SqlMaintenance
    from modelyard.stores.sql.referrers import REFERRERS, BlobReferrer

    pins = Table("test_blob_pins", MetaData(), Column("digest", String(64), nullable=False))
    engine = env.stores.maintenance.engine
    pins.create(engine, checkfirst=True)
    try:
        pinned = env.blobs.put_stream([b"a model version's weights"]).digest
        loose = env.blobs.put_stream([b"nobody's"]).digest
        with engine.begin() as conn:
            conn.execute(pins.insert().values(digest=pinned))
        maintenance = SqlMaintenance(engine, referrers=(*REFERRERS,
                                                        BlobReferrer("pins", pins, pins.c.digest)))
        dry = collect_garbage(maintenance, env.blobs, older_than_ms=60_000, now_ms=now_ms(),
                              dry_run=True)
        assert dry.blobs == 1  # the loose one only
        report = collect_garbage(maintenance, env.blobs, older_than_ms=60_000,
                                 now_ms=now_ms(), dry_run=False)
        assert report.blobs == 1
        assert env.blobs.read_bytes(pinned) == b"a model version's weights"
        assert not env.blobs.exists(loose)
        # The registry as shipped does not know the test's table: the same blob is freed.
        assert env.gc().blobs == 1 and not env.blobs.exists(pinned)
    finally:
        pins.drop(engine, checkfirst=True)
