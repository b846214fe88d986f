"""Retention in the running broker and for ``mwl-broker purge``: expired rows are found on a
read connection and deleted through the single writer, one bounded chunk per job, so that
messages arriving meanwhile wait for one chunk at most, never for the whole purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial

from broker.config import RetentionSettings
from broker.logs import event
from broker.store.connection import Connection
from broker.store.dialect import Dialect
from broker.store.ports import Writer
from broker.store.retention import RULES, Cutoffs, Removed, Rule, plan
from broker.store.unit_of_work import UnitOfWork

log = logging.getLogger("broker.retention")
DAY = 86400.0


#: a read connection for the length of a ``with`` (None: there is no database yet)
OpenRead = Callable[[], AbstractContextManager[Connection | None]]


class Purger:
    def __init__(self, read: OpenRead, writer: Writer, settings: RetentionSettings,
                 dialect: Dialect, description: str = "") -> None:
        self.read = read
        self.writer = writer
        self.settings = settings
        self.dialect = dialect
        self.description = description
        self._halt = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def cutoffs(self, now: float | None = None) -> list[tuple[Rule, float]]:
        """Each rule whose age is set (not 0) with the time before which its rows expire."""
        now = time.time() if now is None else now
        out = []
        for rule in RULES:
            days = float(getattr(self.settings, f"{rule.name}_days"))
            if days > 0:
                out.append((rule, now - days * DAY))
        return out

    def limits(self, now: float | None = None) -> Cutoffs:
        """Every rule's cutoff by name; 0.0 for a rule whose age is 0 (nothing is older)."""
        active = {rule.name: cutoff for rule, cutoff in self.cutoffs(now)}
        return {rule.name: active.get(rule.name, 0.0) for rule in RULES}

    def expired(self, now: float | None = None) -> Removed:
        """What a purge would remove now, cascades included, by table (nothing is deleted)."""
        with self.read() as reader:
            if reader is None:
                return {}
            return plan(reader, [rule for rule, _ in self.cutoffs(now)], self.limits(now),
                        self.dialect)

    def purge(self, now: float | None = None) -> Removed:
        """Delete every expired row (blocking: call from a thread that is not the loop)."""
        started = time.perf_counter()
        removed: Removed = {}
        limits = self.limits(now)
        with self.read() as reader:
            if reader is not None:
                for rule, _ in self.cutoffs(now):
                    for table, count in self._purge_rule(reader, rule, limits).items():
                        removed[table] = removed.get(table, 0) + count
        self.runs += 1
        counts = {rule.table: 0 for rule in RULES} | removed
        event(log, "retention_purged", seconds=round(time.perf_counter() - started, 3),
              **counts)
        return removed

    def _purge_rule(self, reader: Connection, rule: Rule, limits: Cutoffs) -> Removed:
        chunk = max(1, self.settings.chunk)
        removed: Removed = {}
        while not self._halt.is_set():
            ids = rule.candidates(reader, limits, chunk, self.dialect)
            if not ids:
                break
            done = self.writer.run_sync(partial(_purge_chunk, rule=rule, ids=ids, cutoffs=limits))
            for table, count in done.items():
                removed[table] = removed.get(table, 0) + count
            if len(ids) < chunk or not done.get(rule.table):
                break  # the last chunk, or rows that changed since they were found
        return removed

    async def start(self) -> None:
        """Purge every ``retention.interval`` seconds (the first run after one interval, at
        most a minute); an interval of 0 leaves purging to ``mwl-broker purge``."""
        if self.settings.interval > 0 and self.cutoffs():
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Finish the chunk being deleted, then stop."""
        self._halt.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        delay = min(self.settings.interval, 60.0)
        while not self._halt.is_set():
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancel is never lost
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if self._halt.is_set():
                return
            try:
                await asyncio.to_thread(self.purge)
            except Exception as exc:
                event(log, "retention_failed", logging.ERROR, error=str(exc),
                      database=self.description)
            delay = self.settings.interval


def _purge_chunk(uow: UnitOfWork, rule: Rule, ids: list[int], cutoffs: Cutoffs) -> Removed:
    uow.lock("timer:retention")  # brokers sharing one database delete in turn
    return uow.retention.purge(rule, ids, cutoffs)
