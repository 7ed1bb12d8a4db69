"""modelyard side of the side-by-side benchmark.

Run with /work/main/.venv/bin/python. Uses only the public modelyard SDK
(``import modelyard``) against ``--uri`` (an ``http://127.0.0.1:PORT``
modelyard server). Mirrors bench/workloads_mlflow.py workload for workload.

Prints exactly one JSON object on stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchdata

_REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr  # keep library chatter off the JSON channel

now = time.perf_counter


def log(msg: str) -> None:
    print(f"[modelyard-workload] {msg}", file=sys.stderr, flush=True)


def _sdk(uri: str | None):
    import modelyard

    if uri:
        modelyard.set_uri(uri)
    return modelyard


# --------------------------------------------------------------------------- warm-up
def w_warmup(args: argparse.Namespace) -> dict:
    """Touch every endpoint once after a server start (not measured)."""
    my = _sdk(args.uri)
    t0 = now()
    with my.start_run(experiment="bench-warmup", params={"p": "1"}, tags={"t": "1"}) as run:
        run.log_metric("m", 1.0, step=0)
        run.log_metrics({f"k{j}": float(j) for j in range(10)}, step=0)
        run.flush()
    try:
        my.get_metric_history(run.id, "m")
    except Exception as e:
        log(f"warm-up: get_metric_history failed: {type(e).__name__}: {e}")
    my.search_runs(
        experiment="bench-warmup",
        filter="metrics.m > 0",
        order_by=["metrics.m DESC"],
        max_results=10,
    )
    return {"elapsed_s": now() - t0}


# --------------------------------------------------------------------------- (a)
def w_metric_stream(args: argparse.Namespace) -> dict:
    """(a) run.log_metric one point per call for --seconds, then run.flush() (timed too).

    Two figures: points/s end to end (the loop and the flush), and calls/s as the caller sees
    them (the loop alone: what a training loop pays per log_metric call)."""
    my = _sdk(args.uri)
    with my.start_run(experiment="bench-a") as run:
        run_id = run.id
        n = 0
        t0 = now()
        deadline = t0 + args.seconds
        while now() < deadline:
            run.log_metric("m", benchdata.metric_value(n), step=n)
            n += 1
        t_loop = now() - t0
        run.flush()
        elapsed = now() - t0
    out = {
        "points": n,
        "loop_s": t_loop,
        "flush_s": elapsed - t_loop,
        "elapsed_s": elapsed,
        "points_per_s": n / elapsed,
        "calls_per_s": n / t_loop,
        "run_id": run_id,
        "verified": False,
    }
    try:
        t_read = now()
        hist = my.get_metric_history(run_id, "m")
        out["history_read_s"] = now() - t_read
        out["history_len"] = len(hist)
        out["verified"] = len(hist) == n and {m.step for m in hist} == set(range(n))
    except Exception as e:  # keep the throughput, flag the read-back
        traceback.print_exc()
        out["verify_error"] = f"{type(e).__name__}: {e}"
    return out


# --------------------------------------------------------------------------- (b)
def w_metric_batches(args: argparse.Namespace) -> dict:
    """(b) run.log_metrics of --width (1,000) keys, --batches times, then run.flush()."""
    my = _sdk(args.uri)
    width = args.width
    n_batches = args.batches
    calib = None
    if not n_batches:
        # Only when run alone (the orchestrator passes MLflow's N): aim at --target-seconds.
        with my.start_run(experiment="bench-b", name="calibration") as crun:
            t0 = now()
            k = 20
            for i in range(k):
                crun.log_metrics(
                    {f"m{j}": benchdata.metric_value(i + j) for j in range(width)}, step=i
                )
            crun.flush()
            per_batch = (now() - t0) / k
        n_batches = max(3, round(args.target_seconds / per_batch))
        calib = {"per_batch_s": per_batch, "target_seconds": args.target_seconds}
        log(f"calibrated: {per_batch * 1000:.2f} ms/batch -> {n_batches} batches")
    with my.start_run(experiment="bench-b", name="batches") as run:
        run_id = run.id
        t0 = now()
        for i in range(n_batches):
            run.log_metrics({f"m{j}": benchdata.metric_value(i + j) for j in range(width)}, step=i)
        t_loop = now() - t0
        run.flush()
        elapsed = now() - t0
    points = n_batches * width
    out = {
        "batches": n_batches,
        "width": width,
        "points": points,
        "loop_s": t_loop,
        "flush_s": elapsed - t_loop,
        "elapsed_s": elapsed,
        "points_per_s": points / elapsed,
        "batches_per_s": n_batches / elapsed,
        "calibration": calib,
        "run_id": run_id,
        "verified": False,
    }
    try:
        h_first = my.get_metric_history(run_id, "m0")
        h_last = my.get_metric_history(run_id, f"m{width - 1}")
        out["history_len_first_key"] = len(h_first)
        out["history_len_last_key"] = len(h_last)
        out["verified"] = len(h_first) == n_batches and len(h_last) == n_batches
    except Exception as e:  # keep the throughput, flag the read-back
        traceback.print_exc()
        out["verify_error"] = f"{type(e).__name__}: {e}"
    return out


# --------------------------------------------------------------------------- (c)
def _create_range(uri: str | None, start: int, count: int,
                  experiment: str = benchdata.SEARCH_EXPERIMENT) -> int:
    my = _sdk(uri)
    for i in range(start, start + count):
        params, metrics, tags = benchdata.run_data(i)
        # The block's end waits until the run is stored (creation, values and end travel in
        # one request), as MLflow's set_terminated returns once the run is stored.
        with my.start_run(experiment=experiment, params=params, tags=tags) as run:
            run.log_metrics(metrics, step=0)
    return count


def w_create_runs(args: argparse.Namespace) -> dict:
    """(c, part 1) start_run(params, tags) + log_metrics + end, over HTTP."""
    experiment = args.experiment or benchdata.SEARCH_EXPERIMENT
    my = _sdk(args.uri)
    my.set_experiment(experiment)
    if args.capture_source:  # as a sweep has it: the first run captures and uploads
        with my.start_run(experiment=experiment, name="capture-warmup"):
            pass
    t0 = now()
    _create_range(args.uri, args.start, args.count, experiment)
    elapsed = now() - t0
    created = my.count_runs(experiment)
    expected = args.count + (1 if args.capture_source else 0)
    return {"runs": args.count, "elapsed_s": elapsed, "runs_per_s": args.count / elapsed,
            "capture_source": args.capture_source, "verified": created >= expected}


def w_bulk_load(args: argparse.Namespace) -> dict:
    """(c, part 2) The remaining runs through the SDK and server, --procs client processes."""
    _sdk(args.uri).set_experiment(benchdata.SEARCH_EXPERIMENT)
    procs = max(1, args.procs)
    t0 = now()
    if procs == 1:
        _create_range(args.uri, args.start, args.count)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        per = -(-args.count // procs)
        slices = [
            (args.start + k * per, min(per, args.count - k * per))
            for k in range(procs)
            if args.count - k * per > 0
        ]
        with ProcessPoolExecutor(len(slices), mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_create_range, args.uri, s, c) for s, c in slices]
            done = sum(f.result() for f in futs)
        assert done == args.count
    elapsed = now() - t0
    return {
        "method": f"modelyard SDK over HTTP (start_run + log_metrics, {procs} client processes)",
        "runs": args.count,
        "elapsed_s": elapsed,
        "runs_per_s": args.count / elapsed if elapsed > 0 else None,
    }


def w_search(args: argparse.Namespace) -> dict:
    """(c, part 3) Filtered+ordered and ordered-only searches, --searches times each."""
    my = _sdk(args.uri)
    order = [benchdata.SEARCH_ORDER_BY]
    mx = benchdata.SEARCH_MAX_RESULTS
    exp = benchdata.SEARCH_EXPERIMENT

    def filtered():
        return my.search_runs(
            experiment=exp, filter=benchdata.SEARCH_FILTER, order_by=order, max_results=mx
        )

    def unfiltered():
        return my.search_runs(experiment=exp, order_by=order, max_results=mx)

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
        summ["top_m1"] = [r.metrics.get("m1") for r in res]
        if name == "filtered":
            summ["all_match_filter"] = all(
                r.params.get("p0") == "a" and r.metrics.get("m0", 0) > 0.5 for r in res
            )
        out[name] = summ

    # Untimed: totals by paging through everything.
    out["filtered_total_matches"] = _count(my, exp, benchdata.SEARCH_FILTER)
    out["experiment_runs"] = _count(my, exp, None)
    if args.count > 0:
        try:
            shapes = [_run_shape(my, exp, idx) for idx in sorted({0, args.count - 1})]
            out["run_shapes"] = shapes
            out["bulk_consistent"] = all(s["data_ok"] for s in shapes)
        except Exception as e:  # best effort: report, do not fail the workload
            out["run_shapes_error"] = f"{type(e).__name__}: {e}"
    return out


def _count(my, exp: str, flt: str | None) -> int | None:
    total = 0
    token = None
    for _ in range(10_000):
        page = my.search_runs(experiment=exp, filter=flt, max_results=1000, page_token=token)
        total += len(page)
        token = getattr(page, "next_page_token", None)
        if not token:
            return total
    return None


def _run_shape(my, exp: str, idx: int) -> dict:
    found = my.search_runs(experiment=exp, filter=f"tags.idx = '{idx}'", max_results=5)
    if len(found) != 1:
        return {"idx": idx, "found": len(found), "data_ok": False}
    run = my.get_run(found[0].id)
    params, metrics, tags = benchdata.run_data(idx)
    user_tags = {k: v for k, v in run.tags.items() if k in tags}
    return {
        "idx": idx,
        "found": 1,
        "status": str(run.status),
        "data_ok": dict(run.params) == params and run.metrics == metrics and user_tags == tags,
    }


# --------------------------------------------------------------------------- (d)
def w_artifact(args: argparse.Namespace) -> dict:
    """(d) run.log_artifact (+ flush) one large file, download_artifacts it, check the hash."""
    my = _sdk(args.uri)
    path = args.file
    size = os.path.getsize(path)
    name = os.path.basename(path)
    with my.start_run(experiment="bench-d") as run:
        run_id = run.id
        t0 = now()
        run.log_artifact(path)
        run.flush()
        up = now() - t0
    dst = tempfile.mkdtemp(prefix="dl-", dir=args.scratch or None)
    try:
        t0 = now()
        local = my.download_artifacts(run_id, name, dst)
        down = now() - t0
        got = benchdata.sha256_file(str(local))
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
    import modelyard

    return {
        "system": "modelyard",
        "version": getattr(modelyard, "__version__", "?"),
        "python": sys.version.split()[0],
        "capture_source": os.environ.get("MODELYARD_CAPTURE_SOURCE"),
    }


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
    ap = benchdata.workload_parser(__doc__, WORKLOADS, "modelyard server, http://127.0.0.1:PORT")
    ap.add_argument("--procs", type=int, default=2, help="client processes (bulk_load)")
    ap.add_argument("--experiment", default=None,
                    help="experiment of create_runs [the search experiment]")
    ap.add_argument(
        "--capture-source",
        action="store_true",
        help="let start_run capture git/packages per run (off: MlflowClient.create_run "
        "captures nothing either)",
    )
    args = ap.parse_args()
    if not args.capture_source:
        os.environ["MODELYARD_CAPTURE_SOURCE"] = "false"  # inherited by spawned workers
    return benchdata.run_workload(WORKLOADS, args, _REAL_STDOUT)


if __name__ == "__main__":
    sys.exit(main())
