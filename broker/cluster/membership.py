"""This broker's entry among the instances sharing its database: registered at start,
refreshed every second (the database's clock), marked stopped at a clean stop (its outbox
lanes are released then, so another broker takes over at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from functools import partial

from broker.logs import event
from broker.store.cluster import NodeRow
from broker.store.errors import StoreError
from broker.store.ports import Writer
from broker.store.unit_of_work import UnitOfWork

log = logging.getLogger("broker.cluster")


class Membership:
    def __init__(self, writer: Writer, node: str, ports: Callable[[], tuple[int, int, int]],
                 *, version: str = "", interval: float = 1.0) -> None:
        """``ports``: the (MLLP, DICOM, admin) ports this broker listens on, once bound."""
        self.writer = writer
        self.ports = ports
        self.row = NodeRow(node, socket.gethostname(), 0, 0, 0, version, 0.0, 0.0, None)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.beats = 0
        self._reached: float | None = None

    async def start(self) -> None:
        self.row.mllp_port, self.row.dicom_port, self.row.admin_port = self.ports()
        await self.writer.run(partial(_beat, row=self.row, first=True))
        self._reached = time.monotonic()
        event(log, "node_registered", node=self.row.node_id, host=self.row.host)
        self._task = asyncio.create_task(self._loop(), name="membership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(StoreError):
            await self.writer.run(partial(_beat, row=self.row, stopping=True))

    @property
    def node(self) -> str:
        return self.row.node_id

    @property
    def reachable(self) -> bool:
        """A heartbeat reached the database within the last three intervals."""
        ago = self.last_reached_ago()
        return ago is not None and ago < max(3 * self.interval, 3.0)

    def last_reached_ago(self) -> float | None:
        return None if self._reached is None else round(time.monotonic() - self._reached, 3)

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.writer.run(partial(_beat, row=self.row))
                self._reached = time.monotonic()
                self.beats += 1
                if failing:
                    event(log, "node_heartbeat_resumed", node=self.row.node_id)
                failing = False
            except StoreError as exc:
                if not failing:
                    event(log, "node_heartbeat_failed", logging.WARNING, node=self.row.node_id,
                          error=str(exc))
                failing = True


def _beat(uow: UnitOfWork, row: NodeRow, first: bool = False, stopping: bool = False) -> None:
    uow.cluster.heartbeat(row, stopping)
    if first:
        uow.cluster.started(row.node_id)
