"""A client uploading 1 GiB through a real server process is SIGKILLed half-way; started again
it sends only the parts the server does not hold, and memory stays bounded on both sides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from modelyard.artifacts import hash_file
from modelyard.wire import routes as r
from support.memory import PeakRss
from support.servers import CLIENT_HOOKS, free_port, wait_healthy
from support.waiting import wait_until

MIB = 1 << 20
SIZE = 1024 * MIB
PART = 16 * MIB  # the default part size: 64 parts
# Peak RSS allowed per process. Measured here: the server ~100 MiB and each client ~55 MiB at
# their peaks (interpreter, FastAPI/SQLAlchemy or httpx imports, a few 1-8 MiB buffers); one
# part per connection held in memory would add 64 MiB to either, the file 1 GiB.
RSS_LIMIT = 200 * MIB

CLIENT = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from modelyard.client import api
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    b = api.backend(sys.argv[1])
    entry = b.upload_file(sys.argv[2], "data/big.bin", Path(sys.argv[3]))
    print("DIGEST", entry.digest, entry.size, flush=True)
    """
)


def _make_file(path: Path) -> None:
    block = bytearray(os.urandom(MIB))
    with path.open("wb") as f:  # every MiB differs (a counter in front), so no part dedups
        for i in range(SIZE // MIB):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)


def _journal(cache: Path) -> dict[str, object] | None:
    files = list((cache / "uploads").glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_upload_resumes_with_only_the_missing_parts(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    _make_file(src)
    expected = hash_file(src)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "srv"
    server = subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli.main", "server", "--port", str(port),
         "--data-dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "MODELYARD_CACHE_DIR": str(cache)}
    env.pop("MODELYARD_UPLOAD_PART_MIB", None)
    api = httpx.Client(base_url=url, timeout=30, event_hooks=CLIENT_HOOKS)
    try:
        wait_healthy(url, server)
        run_id = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
        argv = [sys.executable, "-c", CLIENT, url, run_id, str(src)]
        with PeakRss(server.pid) as server_peak:
            # 1. Upload, and SIGKILL the client once half of the parts are acknowledged.
            first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            with PeakRss(first.pid) as first_peak:

                def half_acknowledged() -> dict[str, object] | None:
                    if first.poll() is not None:
                        return {"exited": first.returncode}  # the assertion below says so
                    journal = _journal(cache)
                    if journal is None:
                        return None
                    status: dict[str, object] = api.get(r.GET_UPLOAD.url(
                        run_id=run_id, upload_id=str(journal["upload_id"]))).json()
                    return status if len(status["parts"]) >= 32 else None  # type: ignore[arg-type]

                try:
                    status = wait_until(half_acknowledged, timeout=120, interval=0.02,
                                        what="the server to acknowledge half of the parts")
                finally:
                    first.send_signal(signal.SIGKILL)  # (a no-op if it exited already)
                first.wait(30)
            out, err = first.communicate()
            assert first.returncode == -signal.SIGKILL, (first.returncode, out, err[-2000:])
            assert status["part_count"] == SIZE // PART
            # A part whose bytes were all sent before the kill may still be acknowledged:
            # wait until the server's count stops moving (the same three times in a row, 0.2 s
            # apart; nothing else tells when the server is done with the dead client's parts).
            answers: list[dict[str, Any]] = []

            def settled() -> bool:
                answers.append(api.get(r.GET_UPLOAD.url(
                    run_id=run_id, upload_id=str(status["upload_id"]))).json())
                counts = {len(answer["parts"]) for answer in answers[-3:]}
                return len(answers) >= 3 and len(counts) == 1

            wait_until(settled, timeout=60, interval=0.2,
                       what="the count of acknowledged parts to stop moving")
            acked = answers[-1]
            held = len(acked["parts"])
            assert 32 <= held < 64 and not acked["completed"]
            assert api.get(r.LIST_ARTIFACTS.url(run_id=run_id)).json()["files"] == []

            # 2. The same upload again, in a new process: it finds its session and resumes.
            second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            with PeakRss(second.pid) as second_peak:
                out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-3000:]
        report = [line for line in out.splitlines() if line.startswith("uploaded ")]
        assert report == [f"uploaded data/big.bin in 64 parts: sent {64 - held}, {held} "
                          "already on the server (resumed)"], out
        digest_line = [line for line in out.splitlines() if line.startswith("DIGEST")]
        assert digest_line == [f"DIGEST {expected.digest} {SIZE}"]
        listed = api.get(r.LIST_ARTIFACTS.url(run_id=run_id)).json()["files"]
        assert listed == [{"path": "data/big.bin", "digest": expected.digest, "size": SIZE}]
        stored = data_dir / "artifacts" / "objects" / expected.digest[:2] / expected.digest[2:]
        assert hash_file(stored) == expected  # the bytes on the server's disk, re-hashed
        assert _journal(cache) is None
        for name, peak in (("server", server_peak), ("killed client", first_peak),
                           ("resuming client", second_peak)):
            assert peak.peak < RSS_LIMIT, f"{name} peaked at {peak.peak / MIB:.0f} MiB"
        print(f"peak RSS: server {server_peak.peak / MIB:.0f} MiB, clients "
              f"{first_peak.peak / MIB:.0f} / {second_peak.peak / MIB:.0f} MiB; "
              f"resumed with {held} of 64 parts held")
    finally:
        api.close()
        server.terminate()
        server.wait(10)
        assert server.stderr is not None
        server.stderr.close()
        if psutil.pid_exists(server.pid):
            server.kill()
