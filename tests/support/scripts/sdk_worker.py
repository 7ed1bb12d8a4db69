"""A client process for the reliability tests: logs through the public SDK, reports as JSON.

Modes:
    concurrent URI EXPERIMENT INDEX KEYS STEPS FLUSH_EVERY SYNC_DIR
        start a run, wait for ``SYNC_DIR/go``, log KEYS x STEPS points plus params and tags,
        flush every FLUSH_EVERY steps, end the run.
    stream URI EXPERIMENT POINTS FLUSH_EVERY
        log POINTS points of one metric as fast as possible, flushing every FLUSH_EVERY points
        and printing ``flushed N`` after each flush (the test kills the server meanwhile).

The last stdout line is a JSON report: run id, points enqueued, and every WARNING/ERROR record
the ``modelyard`` loggers produced. Each such record is also printed when it is made, as a line
``log LEVEL MESSAGE`` (so a test can wait for the sender to meet an outage). Any exception
prints a traceback and exits 1.

Run by path (``support.processes.start_worker``), not imported.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import modelyard

_stdout = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout, flushed: the sender's thread may print at the same time."""
    with _stdout:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"logger": record.name, "level": record.levelname,
                             "message": record.getMessage()})
        say(f"log {record.levelname} {' '.join(record.getMessage().split())}")


def value_of(index: int, key: int, step: int) -> float:
    """A distinct, exactly representable value per (worker, key, step)."""
    return index * 1000.0 + key + step / 1024.0


def concurrent(uri: str, experiment: str, index: int, keys: int, steps: int,
               flush_every: int, sync_dir: Path) -> dict[str, object]:
    modelyard.set_uri(uri)
    params = {"worker": index, "lr": 0.001 * (index + 1), "keys": keys}
    with modelyard.start_run(experiment=experiment, name=f"worker-{index}", params=params,
                             tags={"role": "concurrency"}, capture_source=False) as run:
        (sync_dir / f"ready-{index}").touch()
        # Poll for the go file, with a deadline (support.waiting is not importable here: the
        # script runs as its own program).
        deadline = time.monotonic() + 120
        while not (sync_dir / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal within 120 s")
            time.sleep(0.01)
        logged = 0
        for step in range(steps):
            if step % 2:
                run.log_metrics({f"m{k}": value_of(index, k, step) for k in range(keys)},
                                step=step)
            else:
                for k in range(keys):
                    run.log_metric(f"m{k}", value_of(index, k, step), step=step)
            logged += keys
            if step == steps // 2:
                run.log_params({"halfway": "yes"})
                run.set_tags({"progress": "half", f"worker.{index}": str(index)})
            if (step + 1) % flush_every == 0:
                run.flush()
        run.set_tag("progress", "done")
        run.flush()
    return {"run_id": run.id, "logged": logged}


def stream(uri: str, experiment: str, points: int, flush_every: int) -> dict[str, object]:
    modelyard.set_uri(uri)
    logged = 0
    with modelyard.start_run(experiment=experiment, params={"points": points},
                             capture_source=False) as run:
        say(f"run {run.id}")
        for step in range(points):
            run.log_metric("loss", step / 1024.0, step=step)
            logged += 1
            if logged % flush_every == 0:
                run.flush()
                say(f"flushed {logged}")
        run.flush()
    return {"run_id": run.id, "logged": logged}


def main(argv: list[str]) -> int:
    recorder = Recorder()
    logger = logging.getLogger("modelyard")
    logger.addHandler(recorder)
    logger.setLevel(logging.WARNING)
    mode, *rest = argv
    if mode == "concurrent":
        uri, experiment, index, keys, steps, flush_every, sync_dir = rest
        report = concurrent(uri, experiment, int(index), int(keys), int(steps),
                            int(flush_every), Path(sync_dir))
    elif mode == "stream":
        uri, experiment, points, flush_every = rest
        report = stream(uri, experiment, int(points), int(flush_every))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    report["log_records"] = recorder.records
    say(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
