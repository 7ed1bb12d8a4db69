"""A few transfers at once: a small thread pool that stops at the first failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

TRANSFERS_AT_ONCE = 4


def run_parallel(tasks: Sequence[Callable[[], T]], *,
                 workers: int = TRANSFERS_AT_ONCE) -> list[T]:
    """Run ``tasks`` on up to ``workers`` threads; their results, in order.

    Raises:
        Exception: the first failure, once the tasks already running have ended (those not
            started yet are cancelled).
    """
    if len(tasks) <= 1 or workers <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(min(workers, len(tasks)),
                            thread_name_prefix="modelyard-transfer") as pool:
        futures = [pool.submit(task) for task in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            error = future.exception() if future in done else None
            if error is not None:
                for other in futures:
                    other.cancel()
                raise error
        return [future.result() for future in futures]
