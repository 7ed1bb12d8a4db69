"""Side-by-side benchmark orchestrator: modelyard vs MLflow.

Run with the project's interpreter (/work/main/.venv/bin/python); normally
through ``bash bench/run.sh`` (``make bench``). For each system it starts the
server on 127.0.0.1 with a SQLite backend in a fresh temp dir, runs every
workload script as a subprocess under that system's own interpreter, collects
the one JSON object each prints, and writes bench/results.md and
bench/results.json. See bench/README.md.

Standard library only (psutil is used for RSS when importable, /proc otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import benchdata  # noqa: E402
from run_history import (  # noqa: E402
    ABSOLUTE_GOALS,
    HISTORY_ROWS,
    absolute_goal_met,
    add_history_options,
    history_checks,
    history_defaults,
    history_notes,
    history_sizes,
    run_history,
)

try:  # optional
    import psutil  # type: ignore
except ImportError:  # pragma: no cover - depends on the venv
    psutil = None

MIB = 1024 * 1024

# Every subprocess and server started by this script, so cleanup can reach them.
_LIVE: set[subprocess.Popen] = set()


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (it leads its own session), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # The leader may be gone while children of the group linger: always finish them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _LIVE.discard(proc)


def cleanup_all() -> None:
    for proc in list(_LIVE):
        kill_group(proc, grace=5.0)


def _on_signal(signum, _frame):
    raise SystemExit(f"interrupted by signal {signum}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- RSS
def _proc_tree_pids(root: int) -> list[int]:
    """root and all its descendants, from /proc (fallback when psutil is absent)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: the ppid is the 2nd field after the last ')'.
        rest = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> dict:
    """RSS summed over ``pid`` and all its descendants."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
            per = []
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    per.append({"pid": p.pid, "name": p.name(), "rss": p.memory_info().rss})
            total = sum(x["rss"] for x in per)
            return {"rss_bytes": total, "rss_mib": total / MIB, "processes": per, "via": "psutil"}
        except psutil.Error as e:
            return {"rss_bytes": None, "error": str(e)}
    per = []
    for p in _proc_tree_pids(pid):
        try:
            with open(f"/proc/{p}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        per.append({"pid": p, "name": name, "rss": _rss_of(p)})
    total = sum(x["rss"] for x in per)
    return {"rss_bytes": total, "rss_mib": total / MIB, "processes": per, "via": "/proc"}


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime (s) summed over ``pid`` and its live descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _proc_tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def wait_quiet(pid: int, max_s: float, window: float = 1.0, busy: float = 0.05) -> float:
    """Wait until the process tree uses < ``busy`` of a core over ``window``; seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        c0 = tree_cpu_seconds(pid)
        time.sleep(window)
        if (tree_cpu_seconds(pid) - c0) / window < busy:
            break
    return time.perf_counter() - t0


def machine_busy_seconds() -> float:
    """CPU-seconds of non-idle time of the whole machine so far (all cores), /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_machine_idle(timeout: float, max_busy: float = 0.25, window: float = 2.0) -> dict:
    """Wait until the whole machine is below ``max_busy`` of its CPU over ``window`` seconds.

    Other people's test suites on a shared 2-core box would otherwise end up in the numbers.
    """
    ncpu = os.cpu_count() or 1
    t0 = time.perf_counter()
    told = False
    busy = 0.0
    while True:
        b0 = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - b0) / (window * ncpu)
        waited = time.perf_counter() - t0
        if busy < max_busy:
            return {"waited_s": waited, "busy": busy, "idle": True}
        if waited >= timeout:
            say(f"machine still {busy:.0%} busy after {waited:.0f}s of waiting; going on anyway")
            return {"waited_s": waited, "busy": busy, "idle": False}
        if not told:
            say(f"machine is {busy:.0%} busy (other processes); waiting up to {timeout:.0f}s")
            told = True


# --------------------------------------------------------------------------- servers
class Server:
    def __init__(self, name: str, argv_fn, health_path: str, log_dir: Path, env: dict):
        self.name = name
        self.argv_fn = argv_fn  # port -> argv
        self.health_path = health_path
        self.log_dir = log_dir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0
        self.settle_max = 60.0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> dict:
        self.port = free_port()
        self.starts += 1
        argv = self.argv_fn(self.port)
        log_path = self.log_dir / f"{self.name}-server-{self.starts}.log"
        logf = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
        say(f"{self.name}: starting server on {self.uri}: {' '.join(argv)}")
        t0 = time.perf_counter()
        busy0 = machine_busy_seconds()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(self.log_dir),
            start_new_session=True,
        )
        _LIVE.add(self.proc)
        url = self.uri + self.health_path
        deadline = t0 + timeout
        last_err = ""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with {self.proc.returncode} before becoming "
                    f"healthy; log tail:\n{tail(log_path)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
                    last_err = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as e:
                last_err = str(e)
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} server not healthy after {timeout}s ({last_err}); "
                    f"log tail:\n{tail(log_path)}"
                )
            time.sleep(0.05)
        startup = time.perf_counter() - t0
        foreign = machine_busy_seconds() - busy0 - tree_cpu_seconds(self.proc.pid)
        foreign_share = max(0.0, foreign) / (startup * (os.cpu_count() or 1))
        say(f"{self.name}: healthy after {startup:.2f}s")
        if foreign_share > 0.10:
            say(
                f"{self.name}: WARNING other processes used {foreign_share:.0%} of the machine "
                "during start-up"
            )
        # Background start-up work (worker processes still importing, ...) must not
        # eat the CPU of the first workload: let the tree go quiet, equally for both.
        settle = wait_quiet(self.proc.pid, self.settle_max)
        if settle > 1.5:
            say(f"{self.name}: server busy for another {settle:.1f}s after /health")
        return {
            "startup_s": startup,
            "foreign_cpu_share": foreign_share,
            "settle_s": settle,
            "port": self.port,
            "log": str(log_path),
        }

    def rss(self) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            return {"rss_bytes": None, "error": "server not running"}
        return tree_rss(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- workloads
class System:
    def __init__(self, name, python, script, server_argv, health_path, env, log_dir):
        self.name = name
        self.python = python
        self.script = script
        self.env = env
        self.log_dir = log_dir
        self.server = Server(name, server_argv, health_path, log_dir, env)
        self.n_wl = 0
        self.idle_timeout = 0.0
        self.idle_window = 2.0

    def workload(
        self,
        workload: str,
        extra: list[str],
        timeout: float,
        uri: bool = True,
        measured: bool = True,
        script: Path | None = None,
    ) -> dict:
        idle = None
        if measured:
            # Write back what earlier steps left dirty in the page cache (MLflow never fsyncs
            # its artifacts), so the disk is not still busy with it during this step.
            os.sync()
        if measured and self.idle_timeout > 0:
            idle = wait_machine_idle(self.idle_timeout, window=self.idle_window)
        res = self._workload(workload, extra, timeout, uri, measured, script)
        if idle is not None:
            res["idle_wait"] = idle
        return res

    def _server_cpu(self) -> float:
        p = self.server.proc
        return tree_cpu_seconds(p.pid) if p is not None and p.poll() is None else 0.0

    def _workload(
        self, workload: str, extra: list[str], timeout: float, uri: bool, measured: bool,
        script: Path | None = None,
    ) -> dict:
        self.n_wl += 1
        argv = [str(self.python), str(script or self.script), "--workload", workload, *extra]
        if uri:
            argv += ["--uri", self.server.uri]
        err_path = self.log_dir / f"{self.name}-{self.n_wl:02d}-{workload}.stderr.log"
        say(f"{self.name}: workload {workload} {' '.join(extra)} (timeout {timeout:.0f}s)")
        t0 = time.perf_counter()
        cpu0, kids0, srv0 = machine_busy_seconds(), children_cpu_seconds(), self._server_cpu()
        with open(err_path, "wb") as errf:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errf,
                env=self.env,
                cwd=str(self.log_dir),
                start_new_session=True,
            )
            _LIVE.add(proc)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc, grace=3)
                res = {"ok": False, "error": f"timeout after {timeout:.0f}s"}
                res["stderr_tail"] = tail(err_path)
                say(f"{self.name}: {workload} TIMED OUT; stderr tail:\n{res['stderr_tail']}")
                return res
            finally:
                kill_group(proc, grace=1)
        wall = time.perf_counter() - t0
        # CPU the rest of the machine burnt meanwhile (not this workload, not its server).
        foreign = (machine_busy_seconds() - cpu0) - (children_cpu_seconds() - kids0)
        foreign -= self._server_cpu() - srv0
        foreign_share = max(0.0, foreign) / (wall * (os.cpu_count() or 1))
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
        try:
            res = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            res = {"ok": False, "error": f"no JSON on stdout (exit {proc.returncode})"}
        res["wall_s"] = wall
        res["exit_code"] = proc.returncode
        if measured:
            res["foreign_cpu_share"] = foreign_share
        if measured and foreign_share > 0.10:
            say(
                f"{self.name}: WARNING other processes used {foreign_share:.0%} of the machine "
                f"during {workload}; its numbers are disturbed"
            )
        if not res.get("ok"):
            res["stderr_tail"] = tail(err_path)
            say(f"{self.name}: {workload} FAILED: {res.get('error')}\n{res['stderr_tail']}")
        return res


def best_of(k: int, keys: list[str], fn) -> dict:
    """Run a workload ``k`` times; keep the best value of each key (all samples kept too).

    Best-of-k is the least disturbed sample on a shared machine. Verification must hold
    for every sample, and the foreign-CPU share reported is the worst one.
    """
    samples = [fn() for _ in range(max(1, k))]
    if len(samples) == 1:
        return samples[0]
    good = [r for r in samples if r.get("ok")]
    if not good:
        return samples[-1]
    out = dict(good[0])
    chosen = []
    for key in keys:
        cands = [r for r in good if isinstance(r.get(key), (int, float))]
        if cands:
            best = max(cands, key=lambda r: r[key])
            out[key] = best[key]
            chosen.append(best)
    if any("verified" in r for r in good):
        out["verified"] = all(r.get("verified") for r in good)
    # The noise that matters is the one of the samples the numbers come from.
    shares = [r["foreign_cpu_share"] for r in chosen if "foreign_cpu_share" in r]
    if shares:
        out["foreign_cpu_share"] = max(shares)
    out["repeat"] = len(samples)
    out["samples"] = [
        {key: r.get(key) for key in [*keys, "foreign_cpu_share", "ok"]} for r in samples
    ]
    return out


def bench_system(sysm: System, kind: str, args, tmp: Path, art: dict, shared: dict) -> dict:
    res: dict = {"system": sysm.name, "tmp_dir": str(tmp)}
    res["info"] = sysm.workload("info", [], 180, uri=False, measured=False)
    srv = sysm.server
    st = args.startup_timeout
    sysm.idle_timeout = args.idle_timeout
    sysm.idle_window = 1.0 if args.quick else 2.0
    try:
        if args.idle_timeout > 0:
            res["idle_wait_startup"] = wait_machine_idle(args.idle_timeout, window=sysm.idle_window)
        res["startup"] = srv.start(st)
        res["rss_idle"] = srv.rss()
        res["warmup"] = sysm.workload("warmup", [], 300, measured=False)
        if "a" in args.workloads:
            res["a"] = best_of(
                args.repeat,
                ["points_per_s", "calls_per_s"],
                lambda: sysm.workload(
                    "metric_stream", ["--seconds", str(args.seconds)], args.seconds * 5 + 600
                ),
            )
            calls = res["a"].get("calls_per_s")
            per_call = f" ({1e6 / calls:.2g} µs per call)" if calls else ""
            say(f"{sysm.name}: (a) {fmt(res['a'].get('points_per_s'))} points/s; "
                f"{fmt(calls)} log_metric calls/s, the caller's side{per_call}")
        if "b" in args.workloads:
            extra = ["--width", "1000", "--target-seconds", str(args.batch_seconds)]
            n = args.batches or shared.get("batches")
            if n:
                extra += ["--batches", str(n)]
            res["b"] = best_of(
                args.repeat,
                ["points_per_s"],
                lambda: sysm.workload("metric_batches", extra, args.batch_seconds * 6 + 900),
            )
            if res["b"].get("ok") and not shared.get("batches"):
                shared["batches"] = res["b"]["batches"]
                shared["batches_from"] = (
                    "fixed by --batches"
                    if args.batches
                    else f"calibrated on {sysm.name} to ≈{args.batch_seconds:g} s"
                )
            say(f"{sysm.name}: (b) {fmt(res['b'].get('points_per_s'))} points/s")
        if "c" in args.workloads:
            http_n = min(args.http_runs, args.runs)
            res["c_create"] = sysm.workload(
                "create_runs", ["--start", "0", "--count", str(http_n)], 1800
            )
            say(f"{sysm.name}: (c) {fmt(res['c_create'].get('runs_per_s'))} runs/s over HTTP")
            if kind != "mlflow":
                # modelyard's default: source capture on (MLflow's create_run records none).
                res["c_create_capture"] = sysm.workload(
                    "create_runs",
                    ["--start", "0", "--count", str(http_n), "--experiment",
                     "bench-c-capture", "--capture-source"],
                    1800,
                )
                say(f"{sysm.name}: (c) {fmt(res['c_create_capture'].get('runs_per_s'))} "
                    "runs/s over HTTP with source capture")
            bulk = ["--start", str(http_n), "--count", str(args.runs - http_n)]
            if kind == "mlflow":
                # MLflow: stop its server, write with its own store code, start again.
                srv.stop()
                bulk += ["--db", f"sqlite:///{tmp / 'mlflow.db'}"]
                bulk += ["--bulk-method", args.mlflow_bulk_method]
                res["c_bulk"] = sysm.workload("bulk_load", bulk, 3600, uri=False)
            else:
                # modelyard: through its own SDK and server, then the same restart.
                bulk += ["--procs", str(args.modelyard_bulk_procs)]
                res["c_bulk"] = sysm.workload("bulk_load", bulk, 3600)
                srv.stop()
            say(f"{sysm.name}: bulk load {fmt(res['c_bulk'].get('runs_per_s'))} runs/s")
            if args.idle_timeout > 0:
                res["idle_wait_restart"] = wait_machine_idle(
                    args.idle_timeout, window=sysm.idle_window
                )
            res["restart"] = srv.start(st)
            res["warmup_restart"] = sysm.workload("warmup", [], 300, measured=False)
            res["c_search"] = sysm.workload(
                "search", ["--searches", str(args.searches), "--count", str(args.runs)], 1800
            )
            cs = res["c_search"]
            if cs.get("ok"):
                say(
                    f"{sysm.name}: (c) filtered search median "
                    f"{fmt(cs['filtered']['median_ms'])} ms, p95 {fmt(cs['filtered']['p95_ms'])} ms"
                )
        res["e"] = srv.rss()
        say(f"{sysm.name}: (e) server RSS {fmt(res['e'].get('rss_mib'))} MiB")
        if "d" in args.workloads:
            res["d"] = best_of(
                args.repeat,
                ["upload_mib_per_s", "download_mib_per_s", "roundtrip_mib_per_s"],
                lambda: sysm.workload(
                    "artifact",
                    ["--file", art["path"], "--sha256", art["sha256"], "--scratch", str(tmp)],
                    1800,
                ),
            )
            d = res["d"]
            say(
                f"{sysm.name}: (d) up {fmt(d.get('upload_mib_per_s'))} MiB/s, "
                f"down {fmt(d.get('download_mib_per_s'))} MiB/s"
            )
            res["rss_after_d"] = srv.rss()
        if "h" in args.workloads:
            res["h"] = run_history(sysm, kind, args, tmp)
    except Exception as e:  # record and move on to the other system
        res["error"] = f"{type(e).__name__}: {e}"
        say(f"{sysm.name}: ABORTED: {res['error']}")
    finally:
        srv.stop()
    return res


# --------------------------------------------------------------------------- report
def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def dig(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def same_values(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    return all(
        x is not None and y is not None and round(x, 6) == round(y, 6)
        for x, y in zip(a, b, strict=True)
    )


def checks_for(res: dict, expected: dict, args) -> dict[str, bool | None]:
    """name -> True/False (None = not run)."""
    c: dict[str, bool | None] = {}

    def ok(k):
        return bool(dig(res, k, "ok"))

    if "a" in args.workloads:
        c["a: server holds every point"] = ok("a") and bool(dig(res, "a", "verified"))
    if "b" in args.workloads:
        c["b: server holds every batch"] = ok("b") and bool(dig(res, "b", "verified"))
    if "c" in args.workloads:
        s = res.get("c_search") or {}
        good = bool(s.get("ok"))
        want_n = min(benchdata.SEARCH_MAX_RESULTS, expected["filtered_total_matches"])
        c["c: filtered search returns the expected count"] = (
            good and dig(s, "filtered", "count") == want_n
        )
        c["c: filtered search top values (m1) as expected"] = good and same_values(
            dig(s, "filtered", "top_m1"), expected["filtered_top"]
        )
        c["c: every filtered result matches the filter"] = good and bool(
            dig(s, "filtered", "all_match_filter")
        )
        c["c: ordered search top values (m1) as expected"] = good and same_values(
            dig(s, "unfiltered", "top_m1"), expected["unfiltered_top"]
        )
        tm = s.get("filtered_total_matches")
        c["c: total matching runs as expected"] = (
            None if tm is None else good and tm == expected["filtered_total_matches"]
        )
        er = s.get("experiment_runs")
        c["c: experiment holds all runs"] = None if er is None else good and er == args.runs
        cc = res.get("c_create_capture")
        c["c: runs created with source capture all stored"] = (
            None if cc is None else bool(cc.get("ok")) and bool(cc.get("verified")))
        bc = s.get("bulk_consistent")
        c["c: bulk-loaded run matches an HTTP-created run"] = None if bc is None else good and bc
    if "d" in args.workloads:
        c["d: downloaded file hash matches"] = ok("d") and bool(dig(res, "d", "verified"))
    if "h" in args.workloads:
        c.update(history_checks(res))
    return c


def workload_ok(checks: dict, prefix: str) -> bool:
    vals = [v for k, v in checks.items() if k.startswith(prefix) and v is not None]
    return bool(vals) and all(vals)


# issue 17: run creation through the SDK, capture off (also >=50x MLflow) and on.
CREATION_GOALS = {"c_create": ("higher", 1_000.0), "c_create_capture": ("higher", 300.0)}

ROW_SPECS = [
    # key, workload, label, unit, path, better, goal (None = informational), goal_text
    (
        "startup",
        None,
        "Server startup (spawn → /health 200)",
        "s",
        ("startup", "startup_s"),
        "lower",
        None,
        "—",
    ),
    (
        "restart",
        "c",
        "Server restart with populated DB (c)",
        "s",
        ("restart", "startup_s"),
        "lower",
        None,
        "—",
    ),
    (
        "a",
        "a",
        "(a) one metric per call",
        "points/s",
        ("a", "points_per_s"),
        "higher",
        100.0,
        "≥100x",
    ),
    (
        # The loop alone, before the flush: what the caller pays per call. MLflow's workload
        # does not report it (its calls are synchronous: its points/s row is that figure).
        "a_calls",
        "a",
        "(a) log_metric calls/s, the caller's side (the loop without the flush)",
        "calls/s",
        ("a", "calls_per_s"),
        "higher",
        None,
        "—",
    ),
    (
        "b",
        "b",
        "(b) batches of 1,000 metrics",
        "points/s",
        ("b", "points_per_s"),
        "higher",
        3.0,
        "≥3x",
    ),
    (
        "c_create",
        "c",
        "(c) run creation over HTTP (5 params, 5 metrics, 2 tags; capture off)",
        "runs/s",
        ("c_create", "runs_per_s"),
        "higher",
        50.0,  # issue 17: and at least 1,000 runs/s (CREATION_GOALS)
        "≥50x and ≥1,000/s",
    ),
    (
        "c_create_capture",
        "c",
        "(c) run creation over HTTP, source capture on (modelyard's default)",
        "runs/s",
        ("c_create_capture", "runs_per_s"),
        "higher",
        None,  # MLflow's create_run captures nothing: no ratio, an absolute goal
        "≥300/s",
    ),
    (
        "c_fmed",
        "c",
        "(c) filtered+ordered search, median",
        "ms",
        ("c_search", "filtered", "median_ms"),
        "lower",
        10.0,
        "≥10x",
    ),
    (
        "c_fp95",
        "c",
        "(c) filtered+ordered search, p95",
        "ms",
        ("c_search", "filtered", "p95_ms"),
        "lower",
        10.0,
        "≥10x",
    ),
    (
        "c_umed",
        "c",
        "(c) ordered search (no filter), median",
        "ms",
        ("c_search", "unfiltered", "median_ms"),
        "lower",
        10.0,
        "≥10x",
    ),
    (
        "c_up95",
        "c",
        "(c) ordered search (no filter), p95",
        "ms",
        ("c_search", "unfiltered", "p95_ms"),
        "lower",
        10.0,
        "≥10x",
    ),
    (
        "c_bulk",
        "c",
        "(c) bulk load (different methods, see README)",
        "runs/s",
        ("c_bulk", "runs_per_s"),
        "higher",
        None,
        "—",
    ),
    ("d_up", "d", "(d) artifact upload", "MiB/s", ("d", "upload_mib_per_s"), "higher", 2.0, "≥2x"),
    (
        "d_down",
        "d",
        "(d) artifact download",
        "MiB/s",
        ("d", "download_mib_per_s"),
        "higher",
        2.0,
        "≥2x",
    ),
    (
        "d_round",
        "d",
        "(d) artifact up and down, round trip",
        "MiB/s",
        ("d", "roundtrip_mib_per_s"),
        "higher",
        2.0,
        "≥2x",
    ),
    ("e", "c", "(e) server RSS after (c)", "MiB", ("e", "rss_mib"), "memory", 0.5, "≤0.5x"),
    *HISTORY_ROWS,
]


def build_rows(systems: dict, checks: dict, args) -> list[dict]:
    ml = systems.get("mlflow", {})
    my = systems.get("modelyard", {})
    rows = []
    for key, wl, label, unit, path, better, goal, goal_text in ROW_SPECS:
        if wl is not None and wl not in args.workloads:
            continue
        a, b = dig(ml, *path), dig(my, *path)
        ratio = None
        comparable = key != "c_bulk"  # different methods on purpose: no ratio
        if (
            comparable
            and isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and a > 0
            and b > 0
        ):
            if better == "higher":
                ratio = b / a  # modelyard throughput / MLflow throughput
            elif better == "lower":
                ratio = a / b  # MLflow time / modelyard time = "x faster"
            else:
                ratio = b / a  # modelyard memory / MLflow memory
        verified = True
        if wl is not None:
            pre = f"{wl}:"
            verified = workload_ok(checks.get("modelyard", {}), pre) and workload_ok(
                checks.get("mlflow", {}), pre
            )
        if key in ABSOLUTE_GOALS or key in CREATION_GOALS:
            met = absolute_goal_met(key, b, verified, {**ABSOLUTE_GOALS, **CREATION_GOALS})
            if goal is not None and met.startswith("met") and (ratio is None or ratio < goal):
                met = "NOT met" + met[len("met"):]  # both the ratio and the bound must hold
        elif goal is None:
            met = "—"
        elif ratio is None:
            met = "not measured"
        else:
            hit = ratio <= goal if better == "memory" else ratio >= goal
            met = ("met" if hit else "NOT met") + ("" if verified else " (checks failed)")
        rows.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "mlflow": a,
                "modelyard": b,
                "ratio": ratio,
                "ratio_kind": {
                    "higher": "modelyard/MLflow",
                    "lower": "MLflow/modelyard (x faster)",
                    "memory": "modelyard/MLflow",
                }[better],
                "goal": goal_text,
                "met": met,
            }
        )
    return rows


def step_noise(step) -> float | None:
    """Foreign-CPU share of a step; for best-of-k steps, that of the samples kept."""
    if not isinstance(step, dict):
        return None
    samples = step.get("samples")
    if samples:
        keys = [k for k in samples[0] if k not in ("foreign_cpu_share", "ok")]
        shares = []
        for key in keys:
            cands = [x for x in samples if x.get("ok") and isinstance(x.get(key), (int, float))]
            if cands:
                best = max(cands, key=lambda x: x[key])
                if best.get("foreign_cpu_share") is not None:
                    shares.append(best["foreign_cpu_share"])
        if shares:
            return max(shares)
    return step.get("foreign_cpu_share")


def render_markdown(meta: dict, rows: list[dict], checks: dict, systems: dict, notes: list[str]):
    out = []
    out.append("# modelyard vs MLflow — side-by-side benchmark\n")
    out.append(
        f"{meta['when']} · {meta['machine']} · MLflow {meta['mlflow_version']} · "
        f"modelyard {meta['modelyard_version']} · "
        f"{'QUICK smoke run' if meta['quick'] else 'full run'}"
    )
    out.append("")
    out.append(f"Sizes: {meta['sizes']}")
    out.append("")
    out.append("| Metric | Unit | MLflow | modelyard | Ratio | Goal | Status |")
    out.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        out.append(
            f"| {r['label']} | {r['unit']} | {fmt(r['mlflow'])} | {fmt(r['modelyard'])} | "
            f"{ratio} | {r['goal']} | {r['met']} |"
        )
    out.append("")
    out.append(
        "Ratio: throughput rows are modelyard/MLflow; time rows are MLflow/modelyard "
        "(how many times faster modelyard is); the RSS row is modelyard/MLflow "
        "(lower is better). A goal is only reported as met when the correctness "
        "checks of that workload passed on both systems."
    )
    out.append("")
    out.append("## Correctness checks\n")
    names = []
    for c in checks.values():
        for k in c:
            if k not in names:
                names.append(k)
    sysnames = list(systems)
    out.append("| Check | " + " | ".join(sysnames) + " |")
    out.append("| --- |" + " --- |" * len(sysnames))
    for n in names:
        cells = []
        for s in sysnames:
            v = checks.get(s, {}).get(n)
            cells.append("—" if v is None else ("pass" if v else "**FAIL**"))
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("## Machine noise\n")
    out.append(
        "Share of the machine's CPU used by *other* processes (not the workload, not its "
        "server) while each step ran; above 10% the step's numbers are disturbed.\n"
    )
    steps = []
    for res in systems.values():
        for k, v in res.items():
            if isinstance(v, dict) and "foreign_cpu_share" in v and k not in steps:
                steps.append(k)
    out.append("| Step | " + " | ".join(sysnames) + " |")
    out.append("| --- |" + " ---: |" * len(sysnames))
    for k in steps:
        cells = []
        for sname in sysnames:
            v = step_noise(systems.get(sname, {}).get(k))
            cells.append("—" if v is None else (f"**{v:.0%}**" if v > 0.10 else f"{v:.0%}"))
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    out.append("")
    if notes:
        out.append("## Notes\n")
        out.extend(f"- {n}" for n in notes)
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="modelyard vs MLflow benchmark")
    ap.add_argument("--quick", action="store_true", help="shrink every workload (smoke run)")
    ap.add_argument("--systems", default="mlflow,modelyard")
    ap.add_argument("--workloads", default="a,b,c,d,h",
                    help="subset of a,b,c,d,h ((e) rides on c)")
    ap.add_argument("--seconds", type=float, help="(a) duration [20; quick 3]")
    ap.add_argument("--batch-seconds", type=float, help="(b) MLflow target duration [15; quick 3]")
    ap.add_argument("--batches", type=int, default=0, help="(b) fixed N (default: calibrated)")
    ap.add_argument("--runs", type=int, help="(c) total runs [10000; quick 1000]")
    ap.add_argument("--http-runs", type=int, help="(c) runs created over HTTP [300; quick 100]")
    ap.add_argument("--searches", type=int, help="(c) timed searches of each kind [20]")
    ap.add_argument("--artifact-mb", type=int, help="(d) artifact size in MiB [200; quick 20]")
    ap.add_argument("--mlflow-bulk-method", default="orm", choices=["orm", "store"])
    add_history_options(ap)
    ap.add_argument("--modelyard-bulk-procs", type=int, default=2)
    ap.add_argument("--modelyard-workers", type=int, default=1,
                    help="modelyard server worker processes (MLflow runs with 1) [1]")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run (a), (b) and (d) this many times and keep the best (for noisy machines)",
    )
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument(
        "--idle-timeout",
        type=float,
        help="before each measurement wait up to this long for the machine to be <25%% busy "
        "(0 = never wait) [300; quick 10]",
    )
    ap.add_argument(
        "--mlflow-job-execution",
        action="store_true",
        help="keep MLflow's default huey job runner (off by default: see README)",
    )
    ap.add_argument("--tmp-root", default=str(BENCH / ".tmp"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the servers' data dirs")
    ap.add_argument("--mlflow-python", default=str(BENCH / ".venv-mlflow" / "bin" / "python"))
    ap.add_argument("--mlflow-bin", default=str(BENCH / ".venv-mlflow" / "bin" / "mlflow"))
    ap.add_argument("--modelyard-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--modelyard-bin", default=str(ROOT / ".venv" / "bin" / "modelyard"))
    ap.add_argument("--out-md", default=str(BENCH / "results.md"))
    ap.add_argument("--out-json", default=str(BENCH / "results.json"))
    ap.add_argument(
        "--from-json",
        metavar="PATH",
        help="only re-render --out-md from an existing results.json (runs nothing)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    defaults = {
        "seconds": 3.0 if q else 20.0,
        "batch_seconds": 3.0 if q else 15.0,
        "runs": 1000 if q else 10000,
        "http_runs": 100 if q else 300,
        "searches": 20,
        "artifact_mb": 20 if q else 200,
        "idle_timeout": 10.0 if q else 300.0,
        **history_defaults(q),
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = set(args.systems) - {"mlflow", "modelyard"}
    if bad:
        ap.error(f"unknown systems {bad}")
    return args


def make_artifact(path: Path, mib: int) -> dict:
    say(f"writing {mib} MiB of random bytes to {path}")
    import hashlib

    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            b = os.urandom(MIB)
            h.update(b)
            f.write(b)
    return {"path": str(path), "sha256": h.hexdigest(), "bytes": mib * MIB}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return report_from_json(args.from_json, args.out_md)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    tmp_root = Path(args.tmp_root)
    tmp_root.mkdir(parents=True, exist_ok=True)
    import fcntl

    lock = open(tmp_root / "run.lock", "w")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"another benchmark is running (lock {tmp_root / 'run.lock'}); not starting a second")
        return 2
    log_dir = tmp_root / "logs-latest"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    session_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root))
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    for k in ("MLFLOW_TRACKING_URI", "MODELYARD_URI", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(k, None)
    say(
        f"sizes: a={args.seconds}s, b≈{args.batch_seconds}s, c={args.runs} runs "
        f"({args.http_runs} over HTTP), searches={args.searches}, d={args.artifact_mb} MiB; "
        f"logs in {log_dir}"
    )
    systems: dict[str, dict] = {}
    shared: dict = {}
    interrupted = None
    t_all = time.perf_counter()
    try:
        art = {"path": "", "sha256": ""}
        if "d" in args.workloads:
            art_path = session_dir / f"artifact-{args.artifact_mb}MiB.bin"
            art = make_artifact(art_path, args.artifact_mb)
        for name in args.systems:
            tmp = session_dir / name
            tmp.mkdir()
            sys_env = dict(env)
            if name == "mlflow" and not args.mlflow_job_execution:
                # Tracking workloads never use MLflow's job runner; it spawns a pool
                # of worker processes that cost CPU at start and memory throughout.
                sys_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
            if name == "mlflow":
                if not Path(args.mlflow_bin).exists():
                    systems[name] = {"system": name, "error": f"{args.mlflow_bin} missing"}
                    say(f"mlflow: {args.mlflow_bin} missing (run bench/run.sh to install it)")
                    continue
                sysm = System(
                    "mlflow",
                    args.mlflow_python,
                    BENCH / "workloads_mlflow.py",
                    lambda port, tmp=tmp: [
                        args.mlflow_bin,
                        "server",
                        "--backend-store-uri",
                        f"sqlite:///{tmp / 'mlflow.db'}",
                        "--artifacts-destination",
                        str(tmp / "mlartifacts"),
                        "--serve-artifacts",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        "1",
                    ],
                    "/health",
                    sys_env,
                    log_dir,
                )
            else:
                if not Path(args.modelyard_bin).exists():
                    systems[name] = {"system": name, "error": f"{args.modelyard_bin} missing"}
                    say(f"modelyard: {args.modelyard_bin} missing (is the package installed?)")
                    continue
                sysm = System(
                    "modelyard",
                    args.modelyard_python,
                    BENCH / "workloads_modelyard.py",
                    lambda port, tmp=tmp: [
                        args.modelyard_bin,
                        "server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--db",
                        f"sqlite:///{tmp / 'my.db'}",
                        "--artifacts",
                        str(tmp / "artifacts"),
                        "--workers",
                        str(args.modelyard_workers),
                        # (d) measures the best upload path: parts taken from the socket
                        # (opt-in, off by default; docs/artifacts.md).
                        "--direct-upload-body",
                    ],
                    "/health",
                    sys_env,
                    log_dir,
                )
            say(f"===== {name} =====")
            systems[name] = bench_system(sysm, name, args, tmp, art, shared)
    except (KeyboardInterrupt, SystemExit) as e:
        say(f"interrupted ({e}); cleaning up and reporting what was measured")
        interrupted = str(e) or type(e).__name__
        cleanup_all()
    finally:
        cleanup_all()
        if not args.keep_tmp:
            shutil.rmtree(session_dir, ignore_errors=True)
    total_s = time.perf_counter() - t_all
    return report(args, systems, shared, interrupted, total_s, str(log_dir))


def report(
    args,
    systems: dict,
    shared: dict,
    interrupted: str | None,
    total_s: float,
    log_dir: str,
    when: str | None = None,
    write_json: bool = True,
) -> int:
    """Checks, ratios, Markdown and JSON; the exit status of the whole benchmark."""

    expected = benchdata.expected_search(args.runs)
    checks = {name: checks_for(res, expected, args) for name, res in systems.items()}
    if len(systems) == 2 and "c" in args.workloads:
        ml_top = dig(systems["mlflow"], "c_search", "filtered", "top_m1")
        my_top = dig(systems["modelyard"], "c_search", "filtered", "top_m1")
        cross = same_values(ml_top, my_top) if ml_top is not None and my_top is not None else None
        for name in systems:
            checks[name]["c: both systems return the same count and top values"] = cross
    rows = build_rows(systems, checks, args)

    notes = []
    for name, res in systems.items():
        if res.get("error"):
            notes.append(f"{name}: aborted: {res['error'].splitlines()[0]}")
        for k, v in res.items():
            if isinstance(v, dict) and v.get("ok") is False:
                notes.append(f"{name} {k}: {str(v.get('error')).splitlines()[0]}")
            if isinstance(v, dict) and v.get("verify_error"):
                notes.append(f"{name} {k}: read-back failed: {v['verify_error'].splitlines()[0]}")
            if isinstance(v, dict) and v.get("run_shapes_error"):
                notes.append(f"{name} {k}: run check failed: {v['run_shapes_error']}")
    ml_bulk = dig(systems, "mlflow", "c_bulk", "method")
    my_bulk = dig(systems, "modelyard", "c_bulk", "method")
    if ml_bulk or my_bulk:
        notes.append(f"(c) bulk load: MLflow via {ml_bulk}; modelyard via {my_bulk}.")
    if shared.get("batches"):
        notes.append(
            f"(b) N = {shared['batches']} batches of 1,000 for every system "
            f"({shared['batches_from']})."
        )
    if "c" in args.workloads:
        notes.append(
            f"(c) expected {expected['filtered_total_matches']:,} of {args.runs:,} runs to match "
            f"the filter `{benchdata.SEARCH_FILTER}`; each server was restarted once after the "
            "bulk load, and each search workload starts with one untimed (cold) call."
        )
    if "mlflow" in systems:
        notes.append(
            "MLflow server job execution: "
            + (
                "on (stock default, huey worker pool counted in RSS)."
                if args.mlflow_job_execution
                else "off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false; its worker pool is "
                "not needed for tracking and would add CPU load and RSS)."
            )
        )
    if "h" in args.workloads:
        notes.extend(history_notes(systems, args))
    if args.repeat > 1:
        notes.append(f"(a), (b), (d): best of {args.repeat} repetitions (all in results.json).")
    if interrupted:
        notes.insert(0, f"INTERRUPTED ({interrupted}): the numbers below are partial.")
    notes.append(f"Total wall time {total_s:.0f}s; server and workload logs in {log_dir}.")

    meta = {
        "when": when or dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "mlflow_version": dig(systems, "mlflow", "info", "version") or "—",
        "modelyard_version": dig(systems, "modelyard", "info", "version") or "—",
        "quick": args.quick,
        "sizes": (
            f"(a) {args.seconds:g} s; (b) batches of 1,000, N calibrated to "
            f"≈{args.batch_seconds:g} s on MLflow; (c) {args.runs:,} runs "
            f"({args.http_runs} over HTTP), "
            f"{args.searches} searches each; (d) {args.artifact_mb} MiB"
            + history_sizes(args)
        ),
    }
    md = render_markdown(meta, rows, checks, systems, notes)
    Path(args.out_md).write_text(md + "\n")
    raw = {
        "shared": shared,
        "interrupted": interrupted,
        "log_dir": log_dir,
        "meta": meta,
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "expected": {k: v for k, v in expected.items()},
        "systems": systems,
        "checks": checks,
        "rows": rows,
        "total_s": total_s,
    }
    if write_json:
        Path(args.out_json).write_text(json.dumps(raw, indent=2, default=str) + "\n")
    print()
    print(md)
    say(f"wrote {args.out_md}" + (f" and {args.out_json}" if write_json else ""))
    # Exit status: 0 when every workload ran and every correctness check passed
    # (goals met or not: that is what the table is for); 1 otherwise; 130 if interrupted.
    if interrupted:
        return 130
    failed = [n for n, c in checks.items() for k, v in c.items() if v is False]
    failed += [n for n, r in systems.items() if r.get("error")]
    failed += [
        n
        for n, r in systems.items()
        for v in r.values()
        if isinstance(v, dict) and v.get("ok") is False
    ]
    if failed:
        say(f"some workloads or checks failed ({', '.join(sorted(set(failed)))}): exit 1")
        return 1
    return 0


def report_from_json(path: str, out_md: str) -> int:
    """Re-render the Markdown report from a results.json (no benchmark is run)."""
    raw = json.loads(Path(path).read_text())
    args = argparse.Namespace(**raw["args"])
    args.workloads = set(args.workloads)
    args.out_md = out_md
    shared = raw.get("shared") or {}
    if not shared:  # older files: N is in the workload results
        n = dig(raw, "systems", "mlflow", "b", "batches") or dig(
            raw, "systems", "modelyard", "b", "batches"
        )
        if n:
            shared = {"batches": n, "batches_from": "see results.json"}
    return report(
        args,
        raw["systems"],
        shared,
        raw.get("interrupted"),
        raw.get("total_s", 0.0),
        raw.get("log_dir", "bench/.tmp/logs-latest"),
        when=dig(raw, "meta", "when"),
        write_json=False,
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup_all()
