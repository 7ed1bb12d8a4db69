"""(h) metric histories: the part of the orchestrator ``run.py`` that runs
``workloads_history.py`` for each system and turns its answer into rows, checks and notes.

Standard library only (it runs under the project's interpreter, inside run.py).
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPT = BENCH / "workloads_history.py"

# key, workload, label, unit, path, better, goal (ratio; None = informational), goal_text
HISTORY_ROWS = [
    ("h_ds_small", "h", "(h) small history → 1,000 points, median", "ms",
     ("h", "downsample_small", "median_ms"), "lower", None, "—"),
    ("h_ds_small_p95", "h", "(h) small history → 1,000 points, p95", "ms",
     ("h", "downsample_small", "p95_ms"), "lower", None, "—"),
    ("h_ds_large", "h", "(h) large history → 1,000 points, median", "ms",
     ("h", "downsample_large", "median_ms"), "lower", None, "<100 ms"),
    ("h_ds_large_p95", "h", "(h) large history → 1,000 points, p95", "ms",
     ("h", "downsample_large", "p95_ms"), "lower", None, "—"),
    ("h_full_small", "h", "(h) full small history, get_metric_history", "points/s",
     ("h", "full_small", "points_per_s"), "higher", None, "—"),
    ("h_full_large", "h", "(h) full large history, get_metric_history", "points/s",
     ("h", "full_large", "points_per_s"), "higher", None, "—"),
    ("h_arrow_large", "h", "(h) full large history, Arrow download", "points/s",
     ("h", "arrow_large", "points_per_s"), "higher", None, "≥1,000,000/s"),
    ("h_csv_large", "h", "(h) full large history, CSV download", "points/s",
     ("h", "csv_large", "points_per_s"), "higher", None, "—"),
    ("h_ds_huge", "h", "(h) huge history → 1,000 points, median", "ms",
     ("h", "downsample_huge", "median_ms"), "lower", None, "—"),
    ("h_arrow_huge", "h", "(h) huge history, Arrow download", "points/s",
     ("h", "arrow_huge", "points_per_s"), "higher", None, "—"),
    ("h_arrow_huge_rss", "h", "(h) huge history, Arrow download: server RSS growth", "MiB",
     ("h", "arrow_huge", "server_rss_growth_mib"), "memory", None, "—"),
    ("h_csv_huge", "h", "(h) huge history, CSV download", "points/s",
     ("h", "csv_huge", "points_per_s"), "higher", None, "—"),
    ("h_csv_huge_rss", "h", "(h) huge history, CSV download: server RSS growth", "MiB",
     ("h", "csv_huge", "server_rss_growth_mib"), "memory", None, "—"),
]

# Goals that are absolute numbers for modelyard (the issue's), not ratios to MLflow.
ABSOLUTE_GOALS = {
    "h_ds_large": ("lower", 100.0),
    "h_arrow_large": ("higher", 1_000_000.0),
}


def absolute_goal_met(key: str, value: object, verified: bool,
                      goals: dict[str, tuple[str, float]] = ABSOLUTE_GOALS) -> str:
    better, bound = goals[key]
    if not isinstance(value, (int, float)):
        return "not measured"
    hit = value < bound if better == "lower" else value >= bound
    return ("met" if hit else "NOT met") + ("" if verified else " (checks failed)")


def add_history_options(ap) -> None:
    ap.add_argument("--history-points", type=int,
                    help="(h) modelyard's large history [1,000,000; quick 100,000]")
    ap.add_argument("--history-small-points", type=int,
                    help="(h) the small history, both systems [100,000; quick 20,000]")
    ap.add_argument("--history-huge-points", type=int,
                    help="(h) modelyard's huge history, streamed out with its server's RSS "
                         "sampled (0 = none) [10,000,000; quick 0]")
    ap.add_argument("--mlflow-history-points", type=int, default=0,
                    help="(h) MLflow's large history too (0 = none: logging and reading 1M "
                         "points takes MLflow tens of minutes) [0]")


def history_defaults(quick: bool) -> dict:
    return {"history_points": 100_000 if quick else 1_000_000,
            "history_small_points": 20_000 if quick else 100_000,
            "history_huge_points": 0 if quick else 10_000_000}


def history_sizes(args) -> str:
    if "h" not in getattr(args, "workloads", ()):
        return ""
    ml_large = getattr(args, "mlflow_history_points", 0)
    huge = getattr(args, "history_huge_points", 0)
    return (f"; (h) small history {args.history_small_points:,} points (both), large "
            f"{args.history_points:,} (modelyard"
            + (f"; MLflow {ml_large:,})" if ml_large else " only)")
            + (f", huge {huge:,} (modelyard only)" if huge else ""))


def run_history(sysm, kind: str, args, tmp: Path) -> dict:
    large = args.history_points if kind == "modelyard" else args.mlflow_history_points
    huge = args.history_huge_points if kind == "modelyard" else 0
    extra = ["--system", kind, "--points-small", str(args.history_small_points),
             "--points-large", str(large), "--points-huge", str(huge),
             "--searches", str(args.searches), "--scratch", str(tmp)]
    if sysm.server.proc is not None:
        extra += ["--server-pid", str(sysm.server.proc.pid)]
    # MLflow logs ≈8,000 points/s and reads ≈20,000 points/s here: allow for it.
    total = args.history_small_points + large + huge
    timeout = 600 + total / (2_000 if kind == "mlflow" else 20_000)
    res = sysm.workload("history", extra, timeout, script=SCRIPT)
    if res.get("ok"):
        for tag in ("small", "large"):
            ds = res.get(f"downsample_{tag}")
            if ds:
                sysm_say(sysm, f"(h) {tag} history → {ds['points_returned']} points: median "
                               f"{ds['median_ms']:.1f} ms")
    return res


def sysm_say(sysm, msg: str) -> None:
    print(f"[bench] {sysm.name}: {msg}", flush=True)


def history_checks(res: dict) -> dict[str, bool | None]:
    h = res.get("h") or {}
    if not h.get("ok"):
        return {"h: history workload ran": False}
    return {k: bool(v) for k, v in (h.get("checks") or {}).items()}


def history_notes(systems: dict, args) -> list[str]:
    notes = []
    for name in ("mlflow", "modelyard"):
        h = (systems.get(name) or {}).get("h") or {}
        if not h.get("ok"):
            continue
        ds = h.get("downsample_small") or {}
        method = ds.get("method", "modelyard.get_metric_history(max_points=1000)")
        notes.append(
            f"(h) {name}: logged {sum(h['sizes'].values()):,} points at "
            f"{h['load_points_per_s']:,.0f} points/s (setup, not a goal); downsampling via "
            f"{method}: {ds.get('points_returned')} points returned, spike kept: "
            f"{'yes' if ds.get('spike_kept') else 'NO'}, first and last step kept: "
            f"{'yes' if ds.get('first_last_kept') else 'no'}."
        )
    if not args.mlflow_history_points:
        notes.append("(h) MLflow gets the small history only (its get_metric_history reads "
                     "≈20,000 points/s here, so 1M points would take minutes per call); the "
                     "large-history rows are modelyard's, against the issue's absolute goals.")
    return notes
