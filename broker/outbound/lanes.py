"""Owning outbox lanes when several brokers share one database: each destination's lane has
one owner at a time, held by a lease in the database (its clock) and renewed while the
owner delivers; a broker that cannot renew (it lost the database, or it was killed) stops
delivering before its lease runs out, and another one takes the lane over. Every
settlement is checked against the lease's fencing token, so a broker that lost its lane
records nothing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial

from broker.logs import event
from broker.store.cluster import Lease
from broker.store.errors import StoreError
from broker.store.ports import Writer
from broker.store.unit_of_work import UnitOfWork

log = logging.getLogger("broker.outbox")
#: the name of the lane of entries whose destination is not configured
UNCONFIGURED = "*unconfigured*"


@dataclass(slots=True)
class _Held:
    lease: Lease
    #: monotonic time until which this broker may deliver on it without renewing
    until: float
    renewed: float


class LaneLeases:
    """This broker's leases, one per lane, renewed through the store's writer."""

    def __init__(self, writer: Writer, node: str, seconds: float = 5.0) -> None:
        self.writer = writer
        self.node = node
        self.seconds = max(1.0, seconds)
        self._held: dict[str, _Held] = {}
        self.takeovers = 0

    def name(self, lane: str | None) -> str:
        return UNCONFIGURED if lane is None else lane

    def valid(self, lane: str | None) -> Lease | None:
        """The lease of ``lane`` while this broker may still deliver on it."""
        held = self._held.get(self.name(lane))
        return held.lease if held is not None and time.monotonic() < held.until else None

    async def hold(self, lane: str | None) -> Lease | None:
        """The lease of ``lane``, taken or renewed when half of it has run; None while
        another broker owns the lane (or the store cannot be reached)."""
        name = self.name(lane)
        held = self._held.get(name)
        now = time.monotonic()
        if held is not None and now - held.renewed < self.seconds / 2 and now < held.until:
            return held.lease
        started = time.monotonic()
        try:
            fresh = held is None  # not held by this process: never adopt an older token
            lease = await self.writer.run(
                lambda uow: uow.cluster.acquire(name, self.node, self.seconds, fresh))
        except StoreError as exc:
            event(log, "outbox_lane_renew_failed", logging.WARNING, lane=name, node=self.node,
                  error=str(exc))
            return self.valid(lane)  # deliver on until the lease would run out, not longer
        if lease is None:
            if held is not None:
                self.lost(lane, "another broker owns it")
            return None
        if held is None or held.lease.fence != lease.fence:
            self.takeovers += 1
            event(log, "outbox_lane_taken", lane=name, node=self.node, fence=lease.fence)
        # a margin for the time the renewal took and for clock rates: stop before it expires
        self._held[name] = _Held(lease, started + self.seconds * 0.8, started)
        return lease

    def lost(self, lane: str | None, reason: str) -> None:
        name = self.name(lane)
        if self._held.pop(name, None) is not None:
            event(log, "outbox_lane_lost", logging.WARNING, lane=name, node=self.node,
                  reason=reason)

    async def release_all(self) -> None:
        """Give every lane up (a clean stop: another broker takes over at once)."""
        held, self._held = list(self._held.values()), {}
        for h in held:
            try:
                await self.writer.run(partial(_release, lease=h.lease))
            except StoreError:
                return


def _release(uow: UnitOfWork, lease: Lease) -> None:
    uow.cluster.release(lease)
