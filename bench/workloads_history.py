"""(h) Metric histories for charts, for either system: ``--system mlflow|modelyard``.

Runs under the system's own interpreter (bench/.venv-mlflow/bin/python for MLflow,
.venv/bin/python for modelyard) against ``--uri``. One workload, ``history``:

1. log a history of ``--points-small`` points (key ``h_small``) and, when ``--points-large`` is
   not 0, one of that many points (key ``h_large``) into one run. Values are a slow sine with a
   little deterministic noise and ONE spike (1e3) at 61.23% of the steps. MLflow:
   ``MlflowClient().log_batch`` of 1,000 metrics per call; modelyard: ``run.log_metric`` per
   point (the SDK batches in the background), then ``run.flush()``. Not a goal row.
2. downsample each history to 1,000 points, one untimed call then ``--searches`` timed calls
   (median, p95): modelyard ``modelyard.get_metric_history(run, key, max_points=1000)``;
   MLflow the closest it has, its UI's ajax endpoint
   ``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=..&metric_key=..&max_results=1000``
   (if that endpoint fails, MLflow's full ``get_metric_history`` instead, reported as such).
3. full download of each history, best of ``--repeat`` (points/s): modelyard
   ``get_metric_history(run, key)`` (a list of Metric objects, as MLflow returns) and
   ``export_metric_history(run, key, file, format="arrow"|"csv")`` (streamed to a file); MLflow
   ``MlflowClient().get_metric_history(run_id, key)``.

With ``--points-huge N`` (modelyard; 10,000,000 in ``make bench``) a third history is logged,
downsampled (a few timed calls) and streamed out once as Arrow and once as CSV, while the
server's RSS (``--server-pid`` and its children, from /proc) is sampled every 100 ms: its growth
shows the export's memory does not depend on the history's length. No list-of-objects
download of it (that alone needs gigabytes on both ends).

Checks (reported in ``checks``; the orchestrator fails the run on any false one): every full
download holds every point with the right steps; every downsampled answer holds at most
1,000 points with steps in order. ``spike_kept`` (does the 1,000-point answer show the spike)
is reported for both, checked for modelyard only (MLflow's sampler does not promise it).

Prints exactly one JSON object on stdout; everything else goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchdata

_REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr  # keep library chatter off the JSON channel

now = time.perf_counter
MAX_POINTS = 1000
SPIKE = 1e3


def log(msg: str) -> None:
    print(f"[history-workload] {msg}", file=sys.stderr, flush=True)


def value(i: int) -> float:
    return math.sin(i / 5000.0) + ((i * 7919) % 1000) / 10_000.0


def spike_step(n: int) -> int:
    return int(n * 0.6123)


def series(n: int):
    s = spike_step(n)
    return ((i, SPIKE if i == s else value(i)) for i in range(n))


class PeakRss:
    """Samples the RSS of a process and its descendants (from /proc) in a thread."""

    def __init__(self, pid: int | None) -> None:
        import threading

        self.pid = pid
        self.start = self.peak = self.sample() if pid else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        kids: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            todo.extend(kids.get(pid, []))
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.sample())

    def __enter__(self):
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.pid:
            self._thread.join()

    def growth_mib(self) -> float | None:
        return (self.peak - self.start) / 2**20 if self.pid else None


def timed_calls(fn, k: int) -> dict:
    t0 = now()
    first = fn()
    cold = now() - t0
    lat = []
    for _ in range(k):
        t0 = now()
        first = fn()
        lat.append(now() - t0)
    out = benchdata.summarize_latencies(lat)
    out["cold_ms"] = cold * 1000.0
    return out | {"_answer": first}


def best_rate(fn, n: int, repeat: int) -> dict:
    times = []
    got = None
    for _ in range(max(1, repeat)):
        t0 = now()
        got = fn()
        times.append(now() - t0)
    best = min(times)
    return {"points": n, "seconds": best, "points_per_s": n / best, "all_s": times,
            "_answer": got}


def downsample_checks(name: str, steps: list[int], n: int, checks: dict) -> None:
    checks[f"{name}: at most {MAX_POINTS} points"] = 0 < len(steps) <= MAX_POINTS
    checks[f"{name}: steps in order"] = steps == sorted(steps)
    checks[f"{name}: steps are history steps"] = all(0 <= s < n for s in steps)


def strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- modelyard
def run_modelyard(args) -> dict:
    import modelyard

    modelyard.set_uri(args.uri)
    sizes = {"h_small": args.points_small}
    if args.points_large:
        sizes["h_large"] = args.points_large
    if args.points_huge:
        sizes["h_huge"] = args.points_huge
    out: dict = {"system": "modelyard", "sizes": sizes, "checks": {}}
    t0 = now()
    with modelyard.start_run(experiment="bench-h", capture_source=False) as run:
        for key, n in sizes.items():
            for step, v in series(n):
                run.log_metric(key, v, step=step, timestamp=1_700_000_000_000 + step)
        run.flush()
    out["load_s"] = now() - t0
    out["load_points_per_s"] = sum(sizes.values()) / out["load_s"]
    log(f"logged {sum(sizes.values()):,} points in {out['load_s']:.1f}s")
    checks = out["checks"]
    with tempfile.TemporaryDirectory(prefix="h-", dir=args.scratch or None) as tmp:
        for key, n in sizes.items():
            if key == "h_huge":
                continue
            tag = "large" if key == "h_large" else "small"
            ds = timed_calls(lambda key=key: modelyard.get_metric_history(
                run.id, key, max_points=MAX_POINTS), args.searches)
            pts = ds.pop("_answer")
            steps = [m.step for m in pts]
            ds["points_returned"] = len(pts)
            ds["spike_kept"] = any(m.step == spike_step(n) and m.value == SPIKE for m in pts)
            ds["first_last_kept"] = bool(steps) and steps[0] == 0 and steps[-1] == n - 1
            downsample_checks(f"h: downsample {tag}", steps, n, checks)
            checks[f"h: downsample {tag} keeps the spike"] = ds["spike_kept"]
            checks[f"h: downsample {tag} keeps first and last"] = ds["first_last_kept"]
            out[f"downsample_{tag}"] = ds

            full = best_rate(lambda key=key: modelyard.get_metric_history(run.id, key), n,
                             args.repeat)
            hist = full.pop("_answer")
            checks[f"h: full {tag} holds every point"] = (
                len(hist) == n and all(m.step == i for i, m in enumerate(hist)))
            del hist
            out[f"full_{tag}"] = full
            for fmt in ("arrow", "csv"):
                dest = os.path.join(tmp, f"{key}.{fmt}")
                exp = best_rate(lambda key=key, fmt=fmt, dest=dest:
                                modelyard.export_metric_history(run.id, key, dest, format=fmt),
                                n, args.repeat)
                exp.pop("_answer")
                exp["bytes"] = os.path.getsize(dest)
                checks[f"h: {fmt} export {tag} holds every point"] = _count_export(dest, fmt) == n
                out[f"{fmt}_{tag}"] = exp
        if args.points_huge:
            _huge(modelyard, run.id, args, tmp, out)
    out["run_id"] = run.id
    return out


def _huge(modelyard, run_id: str, args, tmp: str, out: dict) -> None:
    """The huge history (10M points): downsampled, and streamed out once per format while
    the server's RSS is sampled. No list-of-objects download: that needs gigabytes."""
    n, checks = args.points_huge, out["checks"]
    ds = timed_calls(lambda: modelyard.get_metric_history(run_id, "h_huge",
                                                          max_points=MAX_POINTS),
                     max(3, args.searches // 4))
    pts = ds.pop("_answer")
    steps = [m.step for m in pts]
    ds["points_returned"] = len(pts)
    ds["spike_kept"] = any(m.step == spike_step(n) and m.value == SPIKE for m in pts)
    downsample_checks("h: downsample huge", steps, n, checks)
    checks["h: downsample huge keeps the spike"] = ds["spike_kept"]
    out["downsample_huge"] = ds
    for fmt in ("arrow", "csv"):
        dest = os.path.join(tmp, f"h_huge.{fmt}")
        # warm: the server's first export imports pyarrow (~45 MB), which is not the stream's
        modelyard.export_metric_history(run_id, "h_small", dest, format=fmt)
        with PeakRss(args.server_pid) as rss:
            exp = best_rate(lambda fmt=fmt, dest=dest: modelyard.export_metric_history(
                run_id, "h_huge", dest, format=fmt), n, 1)
        exp.pop("_answer")
        exp["bytes"] = os.path.getsize(dest)
        exp["server_rss_growth_mib"] = rss.growth_mib()
        checks[f"h: {fmt} export huge holds every point"] = _count_export(dest, fmt) == n
        os.unlink(dest)
        out[f"{fmt}_huge"] = exp
        log(f"huge {fmt}: {exp['points_per_s']:,.0f} points/s, server RSS growth "
            f"{exp['server_rss_growth_mib']} MiB")


def _count_export(path: str, fmt: str) -> int:
    if fmt == "csv":
        lines = 0
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                lines += block.count(b"\n")
        return lines - 1
    import pyarrow as pa

    rows = 0
    with open(path, "rb") as f:
        for batch in pa.ipc.open_stream(f):
            rows += batch.num_rows
    return rows


# --------------------------------------------------------------------------- MLflow
def run_mlflow(args) -> dict:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(args.uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("bench-h")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench-h")
    sizes = {"h_small": args.points_small}
    if args.points_large:
        sizes["h_large"] = args.points_large
    out: dict = {"system": "mlflow", "sizes": sizes, "checks": {}}
    run_id = client.create_run(exp_id).info.run_id
    t0 = now()
    for key, n in sizes.items():
        pts = list(series(n))
        for start in range(0, n, 1000):
            batch = [Metric(key, v, 1_700_000_000_000 + s, s) for s, v in pts[start:start + 1000]]
            client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    out["load_s"] = now() - t0
    out["load_points_per_s"] = sum(sizes.values()) / out["load_s"]
    log(f"logged {sum(sizes.values()):,} points in {out['load_s']:.1f}s")
    checks = out["checks"]
    for key, n in sizes.items():
        tag = "large" if key == "h_large" else "small"
        query = urllib.parse.urlencode(
            {"run_ids": run_id, "metric_key": key, "max_results": MAX_POINTS})
        url = f"{args.uri}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{query}"

        def bulk_interval(url=url) -> list[tuple[int, float]]:
            with urllib.request.urlopen(url, timeout=600) as resp:
                body = json.loads(resp.read())
            return [(int(m["step"]), float(m["value"])) for m in body.get("metrics", [])]

        method = "get-history-bulk-interval (max_results=1000)"
        try:
            bulk_interval()
            fn = bulk_interval
        except Exception as e:  # the endpoint is the UI's; fall back to the public API
            log(f"bulk-interval failed ({type(e).__name__}: {e}); timing get_metric_history")
            method = "get_metric_history (full; bulk-interval failed)"

            def fn(key=key) -> list[tuple[int, float]]:
                return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        ds = timed_calls(fn, args.searches)
        pts = ds.pop("_answer")
        steps = [s for s, _ in pts]
        ds["method"] = method
        ds["points_returned"] = len(pts)
        ds["spike_kept"] = any(s == spike_step(n) and v == SPIKE for s, v in pts)
        ds["first_last_kept"] = bool(steps) and steps[0] == 0 and steps[-1] == n - 1
        if "bulk" in method:
            downsample_checks(f"h: downsample {tag}", steps, n, checks)
        out[f"downsample_{tag}"] = ds
        full = best_rate(lambda key=key: client.get_metric_history(run_id, key), n, args.repeat)
        hist = sorted(full.pop("_answer"), key=lambda m: (m.step, m.timestamp))
        checks[f"h: full {tag} holds every point"] = (
            len(hist) == n and all(m.step == i for i, m in enumerate(hist)))
        out[f"full_{tag}"] = full
    out["run_id"] = run_id
    return out


def w_history(args) -> dict:
    out = run_mlflow(args) if args.system == "mlflow" else run_modelyard(args)
    return {k: strip(v) if isinstance(v, dict) else v for k, v in out.items()}


WORKLOADS = {"history": w_history}


def main() -> int:
    ap = benchdata.workload_parser(__doc__, WORKLOADS, "server URL, http://127.0.0.1:PORT")
    ap.add_argument("--system", required=True, choices=["mlflow", "modelyard"])
    ap.add_argument("--points-small", type=int, default=100_000)
    ap.add_argument("--points-large", type=int, default=1_000_000, help="0 = none")
    ap.add_argument("--points-huge", type=int, default=0,
                    help="modelyard: a history this long too, streamed out (0 = none)")
    ap.add_argument("--server-pid", type=int, default=None,
                    help="sample this process tree's RSS during the huge exports")
    ap.add_argument("--repeat", type=int, default=2, help="full downloads: best of N")
    args = ap.parse_args()
    if args.system == "mlflow":
        for k, v in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "true"),
                     ("GIT_PYTHON_REFRESH", "quiet")):
            os.environ.setdefault(k, v)
    return benchdata.run_workload(WORKLOADS, args, _REAL_STDOUT)


if __name__ == "__main__":
    sys.exit(main())
