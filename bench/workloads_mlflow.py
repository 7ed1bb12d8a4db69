"""MLflow side of the side-by-side benchmark.

Run with bench/.venv-mlflow/bin/python. Uses only the stock ``mlflow`` client
(fluent API and MlflowClient) against ``--uri`` (an ``http://127.0.0.1:PORT``
tracking server), except for the ``bulk_load`` workload, which writes straight
into the server's SQLite file through MLflow's own SqlAlchemyStore while the
server is stopped (see bench/README.md).

Prints exactly one JSON object on stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchdata

_REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr  # keep library chatter off the JSON channel

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

now = time.perf_counter


def log(msg: str) -> None:
    print(f"[mlflow-workload] {msg}", file=sys.stderr, flush=True)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name)


# --------------------------------------------------------------------------- warm-up
def w_warmup(args: argparse.Namespace) -> dict:
    """Touch every endpoint once after a server start (not measured)."""
    client = MlflowClient()
    t0 = now()
    exp_id = ensure_experiment(client, "bench-warmup")
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_param("p", "1")
        mlflow.set_tag("t", "1")
        mlflow.log_metric("m", 1.0, step=0)
        batch = [Metric(f"k{j}", float(j), 0, 0) for j in range(10)]
        client.log_batch(run.info.run_id, metrics=batch)
    client.get_metric_history(run.info.run_id, "m")
    client.search_runs(
        [exp_id], filter_string="metrics.m > 0", order_by=["metrics.m DESC"], max_results=10
    )
    return {"elapsed_s": now() - t0}


# --------------------------------------------------------------------------- (a)
def w_metric_stream(args: argparse.Namespace) -> dict:
    """(a) One metric per call (synchronous fluent API) for --seconds."""
    client = MlflowClient()
    exp_id = ensure_experiment(client, "bench-a")
    with mlflow.start_run(experiment_id=exp_id) as run:
        run_id = run.info.run_id
        n = 0
        t0 = now()
        deadline = t0 + args.seconds
        while now() < deadline:
            mlflow.log_metric("m", benchdata.metric_value(n), step=n)
            n += 1
        # Stock fluent logging is synchronous: nothing is left to flush.
        mlflow.flush_async_logging()
        elapsed = now() - t0
    hist = client.get_metric_history(run_id, "m")
    steps = {m.step for m in hist}
    ok = len(hist) == n and steps == set(range(n))
    return {
        "points": n,
        "elapsed_s": elapsed,
        "points_per_s": n / elapsed,
        "history_len": len(hist),
        "verified": ok,
        "run_id": run_id,
    }


# --------------------------------------------------------------------------- (b)
def _one_batch(client: MlflowClient, run_id: str, step: int, width: int) -> None:
    ts = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(f"m{j}", benchdata.metric_value(step + j), ts, step) for j in range(width)],
    )


def w_metric_batches(args: argparse.Namespace) -> dict:
    """(b) log_batch of --width (1,000) metrics, repeated --batches times."""
    client = MlflowClient()
    exp_id = ensure_experiment(client, "bench-b")
    width = args.width
    n_batches = args.batches
    calib = None
    if not n_batches:
        # Pick N so the measured run takes about --target-seconds; the
        # calibration batches go to a separate, throw-away run.
        crun = client.create_run(exp_id, run_name="calibration").info.run_id
        _one_batch(client, crun, 0, width)  # warm-up
        t0 = now()
        k = 3
        for i in range(1, k + 1):
            _one_batch(client, crun, i, width)
        per_batch = (now() - t0) / k
        client.set_terminated(crun)
        n_batches = max(3, round(args.target_seconds / per_batch))
        calib = {"per_batch_s": per_batch, "target_seconds": args.target_seconds}
        log(f"calibrated: {per_batch * 1000:.1f} ms/batch -> {n_batches} batches")
    run_id = client.create_run(exp_id, run_name="batches").info.run_id
    t0 = now()
    for i in range(n_batches):
        _one_batch(client, run_id, i, width)
    elapsed = now() - t0
    client.set_terminated(run_id)
    h_first = client.get_metric_history(run_id, "m0")
    h_last = client.get_metric_history(run_id, f"m{width - 1}")
    ok = len(h_first) == n_batches and len(h_last) == n_batches
    points = n_batches * width
    return {
        "batches": n_batches,
        "width": width,
        "points": points,
        "elapsed_s": elapsed,
        "points_per_s": points / elapsed,
        "batches_per_s": n_batches / elapsed,
        "history_len_first_key": len(h_first),
        "history_len_last_key": len(h_last),
        "verified": ok,
        "calibration": calib,
        "run_id": run_id,
    }


# --------------------------------------------------------------------------- (c)
def _run_payload(i: int, ts: int) -> tuple[list, list, list]:
    params, metrics, tags = benchdata.run_data(i)
    return (
        [Metric(k, v, ts, 0) for k, v in metrics.items()],
        [Param(k, v) for k, v in params.items()],
        [RunTag(k, v) for k, v in tags.items()],
    )


def w_create_runs(args: argparse.Namespace) -> dict:
    """(c, part 1) create run + log_batch(params, metrics, tags) + end run, over HTTP."""
    client = MlflowClient()
    exp_id = ensure_experiment(client, benchdata.SEARCH_EXPERIMENT)
    t0 = now()
    for i in range(args.start, args.start + args.count):
        run_id = client.create_run(exp_id).info.run_id
        metrics, params, tags = _run_payload(i, int(time.time() * 1000))
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        client.set_terminated(run_id)
    elapsed = now() - t0
    return {
        "runs": args.count,
        "elapsed_s": elapsed,
        "runs_per_s": args.count / elapsed,
        "experiment_id": exp_id,
    }


def w_bulk_load(args: argparse.Namespace) -> dict:
    """(c, part 2) The remaining runs, written straight into the server's SQLite file.

    Runs while the tracking server is stopped. Two methods, both MLflow's own code:

    * ``orm`` (default): MLflow's own SQLAlchemy table models
      (mlflow.store.tracking.dbmodels.models: SqlRun, SqlTag, SqlParam,
      SqlMetric, SqlLatestMetric), inserted with executemany through
      SqlAlchemyStore's own session maker (its SQLite pragmas included),
      1,000 runs per transaction. The rows are the ones create_run + log_batch +
      update_run_info would write (same columns, the generated run name and
      its mlflow.runName tag, metrics *and* latest_metrics, FINISHED status);
      the search workload afterwards checks a bulk run against an HTTP run.
    * ``store``: SqlAlchemyStore.create_run / log_batch / update_run_info per
      run. Same rows, but ~7 commits per run: about 20 runs/s on this machine,
      i.e. no faster than the HTTP server, so it is only kept as a reference.
    """
    from mlflow.entities import RunStatus, SourceType
    from mlflow.entities.lifecycle_stage import LifecycleStage
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not args.db:
        raise SystemExit("--db is required for bulk_load")
    t_open = now()
    store = SqlAlchemyStore(args.db, "mlflow-artifacts:/")
    exp = store.get_experiment_by_name(benchdata.SEARCH_EXPERIMENT)
    if exp is None:
        exp_id = store.create_experiment(benchdata.SEARCH_EXPERIMENT)
        exp = store.get_experiment(exp_id)
    exp_id = exp.experiment_id
    open_s = now() - t_open
    end = args.start + args.count
    t0 = now()
    if args.bulk_method == "store":
        for n, i in enumerate(range(args.start, end)):
            ts = int(time.time() * 1000)
            run_id = store.create_run(exp_id, "unknown", ts, [], None).info.run_id
            metrics, params, tags = _run_payload(i, ts)
            store.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            store.update_run_info(run_id, RunStatus.FINISHED, int(time.time() * 1000), None)
            if n and n % 1000 == 0:
                log(f"bulk-loaded {n}/{args.count} runs ({n / (now() - t0):.0f} runs/s)")
        method = "mlflow SqlAlchemyStore.create_run/log_batch/update_run_info (server stopped)"
    else:
        import uuid

        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
        from mlflow.utils.name_utils import _generate_random_name
        from mlflow.utils.uri import append_to_uri_path

        chunk = 1000
        for lo in range(args.start, end, chunk):
            rows: dict[str, list] = {"runs": [], "tags": [], "params": [], "metrics": []}
            for i in range(lo, min(lo + chunk, end)):
                params, metrics, tags = benchdata.run_data(i)
                ts = int(time.time() * 1000)
                run_id = uuid.uuid4().hex
                name = _generate_random_name()
                rows["runs"].append(
                    {
                        "name": name,
                        "artifact_uri": append_to_uri_path(
                            exp.artifact_location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME
                        ),
                        "run_uuid": run_id,
                        "experiment_id": int(exp_id),
                        "source_type": SourceType.to_string(SourceType.UNKNOWN),
                        "source_name": "",
                        "entry_point_name": "",
                        "user_id": "unknown",
                        "status": RunStatus.to_string(RunStatus.FINISHED),
                        "start_time": ts,
                        "end_time": ts,
                        "deleted_time": None,
                        "source_version": "",
                        "lifecycle_stage": LifecycleStage.ACTIVE,
                    }
                )
                rows["tags"].append({"key": MLFLOW_RUN_NAME, "value": name, "run_uuid": run_id})
                rows["tags"].extend(
                    {"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()
                )
                rows["params"].extend(
                    {"key": k, "value": v, "run_uuid": run_id} for k, v in params.items()
                )
                rows["metrics"].extend(
                    {
                        "key": k,
                        "value": v,
                        "timestamp": ts,
                        "step": 0,
                        "is_nan": False,
                        "run_uuid": run_id,
                    }
                    for k, v in metrics.items()
                )
            # One transaction per chunk; executemany over MLflow's own tables.
            with store.ManagedSessionMaker(read_only=False) as session:
                session.execute(SqlRun.__table__.insert(), rows["runs"])
                session.execute(SqlTag.__table__.insert(), rows["tags"])
                session.execute(SqlParam.__table__.insert(), rows["params"])
                session.execute(SqlMetric.__table__.insert(), rows["metrics"])
                session.execute(SqlLatestMetric.__table__.insert(), rows["metrics"])
            done = min(lo + chunk, end) - args.start
            if done % 2000 == 0:
                log(f"bulk-loaded {done}/{args.count} runs ({done / (now() - t0):.0f} runs/s)")
        method = (
            "mlflow dbmodels tables, executemany via SqlAlchemyStore sessions, "
            "1000 runs/transaction (server stopped)"
        )
    elapsed = now() - t0
    store.engine.dispose()
    return {
        "method": method,
        "runs": args.count,
        "elapsed_s": elapsed,
        "open_s": open_s,
        "runs_per_s": args.count / elapsed if elapsed > 0 else None,
    }


def w_search(args: argparse.Namespace) -> dict:
    """(c, part 3) Filtered+ordered and ordered-only searches, --searches times each."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(benchdata.SEARCH_EXPERIMENT)
    if exp is None:
        raise SystemExit("experiment 'bench' not found")
    exp_id = exp.experiment_id
    order = [benchdata.SEARCH_ORDER_BY]
    mx = benchdata.SEARCH_MAX_RESULTS

    def filtered():
        return client.search_runs(
            [exp_id], filter_string=benchdata.SEARCH_FILTER, order_by=order, max_results=mx
        )

    def unfiltered():
        return client.search_runs([exp_id], order_by=order, max_results=mx)

    out: dict = {}
    for name, fn in (("filtered", filtered), ("unfiltered", unfiltered)):
        t0 = now()
        res = fn()  # first (cold) call, reported but not in the percentiles
        cold = now() - t0
        lat = []
        for _ in range(args.searches):
            t0 = now()
            res = fn()
            lat.append(now() - t0)
        summ = benchdata.summarize_latencies(lat)
        summ["cold_ms"] = cold * 1000.0
        summ["count"] = len(res)
        summ["top_m1"] = [r.data.metrics.get("m1") for r in res]
        if name == "filtered":
            summ["all_match_filter"] = all(
                r.data.params.get("p0") == "a" and r.data.metrics.get("m0", 0) > 0.5 for r in res
            )
        out[name] = summ

    # Untimed: total number of matching runs, by paging through everything.
    total = 0
    token = None
    while True:
        page = client.search_runs(
            [exp_id], filter_string=benchdata.SEARCH_FILTER, max_results=1000, page_token=token
        )
        total += len(page)
        token = page.token
        if not token:
            break
    out["filtered_total_matches"] = total
    out["experiment_runs"] = _count_runs(client, exp_id)

    # Untimed: a run made over HTTP and one written by bulk_load must look alike
    # (and both must carry exactly the data benchdata.run_data() defines).
    if args.count > 0:
        shapes = [_run_shape(client, exp_id, idx) for idx in sorted({0, args.count - 1})]
        out["run_shapes"] = shapes
        first = {k: v for k, v in shapes[0].items() if k not in ("idx", "data_ok")}
        last = {k: v for k, v in shapes[-1].items() if k not in ("idx", "data_ok")}
        out["bulk_consistent"] = first == last and all(s["data_ok"] for s in shapes)
    return out


def _count_runs(client: MlflowClient, exp_id: str) -> int:
    total = 0
    token = None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            return total


def _run_shape(client: MlflowClient, exp_id: str, idx: int) -> dict:
    found = client.search_runs([exp_id], filter_string=f"tags.idx = '{idx}'", max_results=5)
    if len(found) != 1:
        return {"idx": idx, "found": len(found), "data_ok": False}
    run = client.get_run(found[0].info.run_id)
    params, metrics, tags = benchdata.run_data(idx)
    user_tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    hist = client.get_metric_history(run.info.run_id, "m0")
    return {
        "idx": idx,
        "found": 1,
        "status": run.info.status,
        "user_id": run.info.user_id,
        "lifecycle_stage": run.info.lifecycle_stage,
        "has_end_time": run.info.end_time is not None,
        "artifact_uri_ok": run.info.artifact_uri.endswith(f"/{run.info.run_id}/artifacts"),
        "tag_keys": sorted(run.data.tags),
        "run_name_tag_ok": run.data.tags.get("mlflow.runName") == run.info.run_name,
        "m0_history_len": len(hist),
        "data_ok": run.data.params == params and run.data.metrics == metrics and user_tags == tags,
    }


# --------------------------------------------------------------------------- (d)
def w_artifact(args: argparse.Namespace) -> dict:
    """(d) Upload one large file with log_artifact, download it, check the hash."""
    client = MlflowClient()
    exp_id = ensure_experiment(client, "bench-d")
    path = args.file
    size = os.path.getsize(path)
    name = os.path.basename(path)
    with mlflow.start_run(experiment_id=exp_id) as run:
        run_id = run.info.run_id
        t0 = now()
        mlflow.log_artifact(path)
        up = now() - t0
    dst = tempfile.mkdtemp(prefix="dl-", dir=args.scratch or None)
    try:
        t0 = now()
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=dst)
        down = now() - t0
        got = benchdata.sha256_file(local)
        dl_size = os.path.getsize(local)
    finally:
        shutil.rmtree(dst, ignore_errors=True)
    mib = size / (1024 * 1024)
    return {
        "bytes": size,
        "upload_s": up,
        "download_s": down,
        "upload_mib_per_s": mib / up,
        "download_mib_per_s": mib / down,
        "roundtrip_mib_per_s": mib / (up + down),  # the file up and down, one after the other
        "verified": got == args.sha256 and dl_size == size,
        "sha256": got,
        "run_id": run_id,
    }


def w_info(args: argparse.Namespace) -> dict:
    return {"system": "mlflow", "version": mlflow.__version__, "python": sys.version.split()[0]}


WORKLOADS = {
    "warmup": w_warmup,
    "metric_stream": w_metric_stream,
    "metric_batches": w_metric_batches,
    "create_runs": w_create_runs,
    "bulk_load": w_bulk_load,
    "search": w_search,
    "artifact": w_artifact,
    "info": w_info,
}


def main() -> int:
    ap = benchdata.workload_parser(__doc__, WORKLOADS, "tracking server, http://127.0.0.1:PORT")
    ap.add_argument("--db", default=None, help="sqlite URI (bulk_load only)")
    ap.add_argument("--bulk-method", default="orm", choices=["orm", "store"])
    args = ap.parse_args()
    if args.uri:
        mlflow.set_tracking_uri(args.uri)
    return benchdata.run_workload(WORKLOADS, args, _REAL_STDOUT)


if __name__ == "__main__":
    sys.exit(main())
