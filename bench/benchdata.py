"""Deterministic data shared by both workload scripts and the orchestrator.

Standard library only: it is imported by the MLflow interpreter
(bench/.venv-mlflow) and by the modelyard interpreter (.venv) alike, so both
systems receive byte-for-byte the same runs, and the orchestrator can compute
the expected search answers without asking either server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import traceback
from collections.abc import Callable
from typing import IO

SEARCH_EXPERIMENT = "bench"
SEARCH_FILTER = "metrics.m0 > 0.5 and params.p0 = 'a'"
SEARCH_ORDER_BY = "metrics.m1 DESC"
SEARCH_MAX_RESULTS = 100

N_PARAMS = 5
N_METRICS = 5
N_TAGS = 2


def run_data(i: int) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """Params, metrics and tags of search-workload run number ``i``.

    p0 is 'a' half the time and m0 is uniform on [0, 1), so the filter
    ``metrics.m0 > 0.5 and params.p0 = 'a'`` matches about a quarter of the
    runs (about 2,500 of 10,000). Values are rounded to 6 decimals so that
    they survive every float/text round trip unchanged.
    """
    rng = random.Random(1_000_003 * (i + 1))
    params = {"p0": "a" if rng.random() < 0.5 else rng.choice(["b", "c"])}
    for k in range(1, N_PARAMS):
        params[f"p{k}"] = f"v{rng.randrange(1000)}"
    metrics = {f"m{k}": round(rng.random(), 6) for k in range(N_METRICS)}
    tags = {"idx": str(i), "kind": rng.choice(["x", "y", "z"])}
    return params, metrics, tags


def expected_search(n_runs: int, max_results: int = SEARCH_MAX_RESULTS) -> dict:
    """What a correct server answers for the two searches over ``n_runs`` runs."""
    rows = [run_data(i) for i in range(n_runs)]
    matching = [m["m1"] for p, m, _t in rows if m["m0"] > 0.5 and p["p0"] == "a"]
    everything = [m["m1"] for _p, m, _t in rows]
    matching.sort(reverse=True)
    everything.sort(reverse=True)
    return {
        "n_runs": n_runs,
        "filtered_total_matches": len(matching),
        "filtered_top": matching[:max_results],
        "unfiltered_top": everything[:max_results],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in [0, 100])."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    # statistics.quantiles with n=100 gives the 1..99th percentiles.
    cuts = statistics.quantiles(sorted(values), n=100, method="inclusive")
    idx = max(1, min(99, round(q))) - 1
    return cuts[idx]


def summarize_latencies(latencies_s: list[float]) -> dict:
    return {
        "n": len(latencies_s),
        "median_ms": statistics.median(latencies_s) * 1000.0,
        "p95_ms": percentile(latencies_s, 95) * 1000.0,
        "min_ms": min(latencies_s) * 1000.0,
        "max_ms": max(latencies_s) * 1000.0,
    }


def sha256_file(path: str, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def metric_value(i: int) -> float:
    """Value logged at step i by the metric-streaming workloads."""
    return (i % 1000) / 1000.0


Workload = Callable[[argparse.Namespace], dict]


def workload_parser(doc: str | None, workloads: dict[str, Workload],
                    uri_help: str) -> argparse.ArgumentParser:
    """The options both workload scripts take; each adds its own system's extras."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--uri", default=None, help=uri_help)
    ap.add_argument("--workload", required=True, choices=sorted(workloads))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--batches", type=int, default=0, help="0 = calibrate to --target-seconds")
    ap.add_argument("--target-seconds", type=float, default=15.0)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--searches", type=int, default=20)
    ap.add_argument("--file", default=None)
    ap.add_argument("--sha256", default=None)
    ap.add_argument("--scratch", default=None, help="directory for downloads")
    return ap


def run_workload(workloads: dict[str, Workload], args: argparse.Namespace,
                 out: IO[str]) -> int:
    """Run one workload and print its result as one JSON line on ``out`` (never hang)."""
    try:
        result = workloads[args.workload](args)
        result["ok"] = True
        code = 0
    except BaseException as e:  # report, never hang
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        code = 1
    result["workload"] = args.workload
    out.write(json.dumps(result, default=str) + "\n")
    out.flush()
    return code
