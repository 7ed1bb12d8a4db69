"""Unlink files in the background, after the request that let them go has been answered.

Removing the last name of a large file frees its blocks and drops its cached pages: tens of
milliseconds for a few hundred MiB here, which an upload whose content was already stored
(deduplication) would otherwise spend before it answers. The caller first renames the file
out of the way (so it is gone from where it was at once) into a folder that ``modelyard gc``
sweeps, then hands it to the reaper; a process that dies first leaves it to that sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading

log = logging.getLogger("modelyard.artifacts")


class Reaper:
    """One daemon thread that unlinks the paths it is given, in order."""

    def __init__(self) -> None:
        self._paths: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def unlink(self, path: str) -> None:
        """Remove ``path`` soon (absent by then: nothing happens)."""
        self._paths.put(path)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="modelyard-reaper",
                                                daemon=True)
                self._thread.start()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every path given so far is removed; False if ``timeout`` passed first."""
        done = threading.Event()

        def wait() -> None:
            self._paths.join()
            done.set()

        threading.Thread(target=wait, name="modelyard-reaper-drain", daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread is a task
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # yield the CPU
        while True:
            path = self._paths.get()
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            except OSError as exc:  # left to the sweep of `modelyard gc`
                log.warning("could not remove %s: %s", path, exc)
            finally:
                self._paths.task_done()


REAPER = Reaper()
