"""The background unlinker that frees a deduplicated upload's staging file after the answer."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import pytest

from modelyard.artifacts.reaper import Reaper


def test_it_removes_what_it_is_given_and_drain_waits_for_it(tmp_path: Path) -> None:
    reaper = Reaper()
    files = [tmp_path / f"f{i}" for i in range(50)]
    for f in files:
        f.write_bytes(os.urandom(4096))
        reaper.unlink(str(f))
    reaper.unlink(str(tmp_path / "never-existed"))  # absent: nothing happens
    assert reaper.drain(timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_is_logged_and_the_next_path_still_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reaper = Reaper()
    (tmp_path / "a-folder").mkdir()  # os.remove refuses a directory
    (tmp_path / "after").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="modelyard.artifacts"):
        reaper.unlink(str(tmp_path / "a-folder"))
        reaper.unlink(str(tmp_path / "after"))
        assert reaper.drain(timeout=10)
    assert not (tmp_path / "after").exists() and (tmp_path / "a-folder").is_dir()
    assert any("could not remove" in r.getMessage() and "a-folder" in r.getMessage()
               for r in caplog.records)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux notion")
def test_its_thread_runs_at_the_lowest_priority(tmp_path: Path) -> None:
    reaper = Reaper()
    (tmp_path / "f").write_bytes(b"x")
    reaper.unlink(str(tmp_path / "f"))
    assert reaper.drain(timeout=10)
    thread = reaper._thread
    assert thread is not None and thread.is_alive() and thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == 19
    assert thread in threading.enumerate() and thread.daemon
