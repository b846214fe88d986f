"""A write job on its way to the writer thread, and how its outcome gets back to the caller:
an asyncio future settled on its own loop (one wake-up per batch) or a bare lock for a caller
in another thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from broker.store.errors import StoreTimeout
from broker.store.unit_of_work import Job


class Handoff:
    """The outcome of one job for a caller in another thread: a bare lock that the writer
    releases (lighter than a concurrent Future's condition and callbacks)."""

    __slots__ = ("_done", "_error", "_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self._result, self._done = result, True
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True
        self._lock.release()

    def result(self, timeout: float | None = None) -> Any:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise StoreTimeout("the store writer did not answer in time")
        self._lock.release()
        if self._error is not None:
            raise self._error
        return self._result


@dataclass(slots=True)
class QueuedJob:
    """Work and where its outcome goes: an asyncio future (settled on its loop, one wake-up
    per batch) or a concurrent future (for callers in other threads)."""

    work: Job[Any]
    future: asyncio.Future[Any] | concurrent.futures.Future[Any] | Handoff


#: what stops the writer thread
STOP = object()
Outcome = tuple[QueuedJob, Any, BaseException | None]


def deliver(outcomes: list[Outcome]) -> None:
    """Settle every future of a batch: one call into each event loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        future = outcome[0].future
        if isinstance(future, asyncio.Future):
            by_loop.setdefault(future.get_loop(), []).append(outcome)
        else:
            _settle(future, outcome[1], outcome[2])
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(items: list[Outcome]) -> None:
    for job, result, error in items:
        _settle(job.future, result, error)


def _settle(future: asyncio.Future[Any] | concurrent.futures.Future[Any] | Handoff,
            result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
