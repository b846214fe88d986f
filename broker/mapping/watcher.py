"""Reloads the mappings when their files change: polls the folder's file list, sizes and times."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broker.logs import event
from broker.mapping.holder import MappingHolder, fingerprint

log = logging.getLogger("broker.mapping")


class MappingWatcher:
    """Every ``interval`` seconds, compare the folder with what the holder last read; when it
    changed and stays unchanged for ``settle`` seconds (a file is not being written), reload
    as SIGHUP does, in a worker thread."""

    def __init__(self, holder: MappingHolder, interval: float = 2.0,
                 settle: float | None = None) -> None:
        self.holder = holder
        self.interval = interval
        self.settle = min(0.5, interval / 2) if settle is None else settle
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mapping-watcher")
        event(log, "mapping_watch_started", directory=str(self.holder.directory),
              interval=self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        directory = self.holder.directory
        while True:
            await asyncio.sleep(self.interval)
            try:
                now = await asyncio.to_thread(fingerprint, directory)
                if now == self.holder.fingerprint:
                    continue
                await asyncio.sleep(self.settle)
                if await asyncio.to_thread(fingerprint, directory) != now:
                    continue  # still being written: look again next round
                self.reloads += 1
                await asyncio.to_thread(self.holder.reload, "file_change")
            except Exception as exc:  # never let a bad round end the watching
                event(log, "mapping_watch_failed", logging.ERROR, error=str(exc))
