"""A large artifact streams through a real server process in constant memory, both ways."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from support.memory import PeakRss
from support.servers import free_port, wait_healthy

SIZE = 512 * 1024 * 1024  # far larger than every buffer we use, small enough for CI's disk
BUDGET = 96 * 1024 * 1024  # RSS growth allowed per process


CLIENT = textwrap.dedent(
    """
    import resource, sys, modelyard
    from pathlib import Path
    modelyard.set_uri(sys.argv[1])
    src, dest = Path(sys.argv[2]), Path(sys.argv[3])
    with modelyard.start_run(experiment="big", capture_source=False) as run:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run.log_artifact(src, path="data")
    got = modelyard.download_artifacts(run.id, "data/" + src.name, dest)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entry = modelyard.list_artifacts(run.id, "data")[0]
    print(run.id, entry.digest, entry.size, got, (after - before) * 1024)
    """
)


@pytest.mark.slow
def test_large_artifact_round_trip_in_constant_memory(tmp_path: Path) -> None:
    from modelyard.artifacts.blobs import hash_file

    src = tmp_path / "big.bin"
    with src.open("wb") as f:  # distinct 1 MiB blocks, so nothing compresses or dedups
        for i in range(SIZE // (1 << 20)):
            f.write(i.to_bytes(8, "little") * (1 << 17))
    expected = hash_file(src)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli.main", "server", "--port", str(port),
         "--data-dir", str(tmp_path / "srv")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(url, server)
        baseline = psutil.Process(server.pid).memory_info().rss
        with PeakRss(server.pid) as peak:
            out = subprocess.run(
                [sys.executable, "-c", CLIENT, url, str(src), str(tmp_path / "down")],
                capture_output=True, text=True, timeout=300,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        assert out.returncode == 0, out.stderr[-2000:]
        _run_id, digest, size, got, client_growth = out.stdout.split()
        assert digest == expected.digest
        assert int(size) == SIZE
        assert hash_file(Path(got)).digest == expected.digest
        assert peak.peak - baseline < BUDGET, f"server grew {peak.peak - baseline} bytes"
        assert int(client_growth) < BUDGET, f"client grew {client_growth} bytes"
    finally:
        server.terminate()
        server.wait(10)
        assert server.stderr is not None
        server.stderr.close()
