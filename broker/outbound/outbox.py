"""Delivers queued messages over MLLP: in order per order, retried with exponential backoff
and jitter when the receiver does not answer, dead-lettered with the reason when it refuses.

An acknowledgement counts only when its MSA-2 is the sent MSH-10; any other frame (a late
ACK of an earlier message) is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.hl7.ack import ack_code_of
from broker.hl7.mllp import MllpClient, MllpError
from broker.logs import event
from broker.model.ports import Settled
from broker.outbound.encoding import EncodingError, encode, with_charset
from broker.outbound.lanes import LaneLeases
from broker.store.cluster import LaneLost, Lease
from broker.store.errors import StoreError
from broker.store.ports import Listen, OpenOutboxReader, OutboxReader, Writer
from broker.store.repo import OutboxRow
from broker.store.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.outbox")
DELIVERED = ("AA", "CA")
REFUSED = ("AE", "AR", "CE", "CR")


@dataclass
class Destination:
    name: str
    host: str
    port: int
    timeout: float = 10.0
    #: TLS to this destination (None: plain TCP), and the name its certificate must hold
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str = ""
    #: MSH-18 the messages are sent with (empty: the one they were queued with)
    charset: str = ""


@dataclass
class RequestDestination:
    """A destination reached by a blocking request (a DICOM storage commitment N-ACTION),
    run in a worker thread; it answers (outcome, reason, detail) with outcome delivered,
    retry or dead."""

    name: str
    send: Callable[[OutboxRow], tuple[str, str, str]]


class OutboxWorker:
    def __init__(self, open_reader: OpenOutboxReader, writer: Writer,
                 destinations: Sequence[Destination | RequestDestination], *,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 poll: float = 1.0, on_settled: Settled | None = None,
                 batch_window: float = 0.005, metrics: Metrics | None = None,
                 node: str = "", lease_seconds: float = 5.0,
                 listen: Listen | None = None, shutdown_grace: float = 5.0) -> None:
        self.open_reader = open_reader
        #: seconds a stop waits for the answer to the message in flight on each lane
        self.shutdown_grace = shutdown_grace
        self.writer = writer
        self.destinations = {d.name: d for d in destinations}
        self.on_settled = on_settled
        self.batch_window = batch_window
        self.backoff_base, self.backoff_max, self.poll = backoff_base, backoff_max, poll
        self._clients: dict[str, MllpClient] = {}
        #: one delivery lane per destination (a slow archive does not hold the RIS up), and
        #: one (None) for entries whose destination is not configured
        self._wakes: dict[str | None, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: OutboxReader | None = None
        self.delivered = self.dead = self.retried = 0
        self.metrics = metrics
        self.leases = LaneLeases(writer, node or "local", lease_seconds)
        self.listen = listen
        self._stop_listening: Callable[[], Awaitable[None]] | None = None

    @property
    def running(self) -> bool:
        """The delivery task is alive (always false without destinations)."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    def wake(self) -> None:
        """New messages were queued (call from the event loop)."""
        for wake in self._wakes.values():
            wake.set()

    async def start(self) -> None:
        if not self.destinations:
            return
        self._reader = await self.open_reader()
        if self.listen is not None:  # other brokers' new messages wake the lanes this one owns
            self._stop_listening = await self.listen("mwl_outbox", self.wake)
        for lane in [*self.destinations, None]:
            self._wakes[lane] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(lane), name=f"outbox-{lane}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._stop_listening is not None:
            await self._stop_listening()
            self._stop_listening = None
        await self.leases.release_all()
        for client in self._clients.values():
            await client.close()
        if self._reader is not None:
            await self._reader.close()

    async def _run(self, lane: str | None) -> None:
        assert self._reader is not None
        others = tuple(self.destinations) if lane is None else ()
        wake = self._wakes[lane]
        while True:
            wake.clear()  # before reading: a wake-up during the read is not lost
            upcoming: float | None = None
            lease = await self.leases.hold(lane)
            try:
                if lease is not None:
                    rows = await self._reader.due(time.time(), destination=lane, others=others)
                    settles: list[Awaitable[None]] = []
                    try:
                        for row in rows:
                            if self.leases.valid(lane) is None:
                                break  # the lease runs out: renew before sending more
                            settles.append(await self._finish_on_stop(self._deliver(row, lease)))
                    except asyncio.CancelledError:  # stopped: what was answered is recorded,
                        await _quietly(asyncio.gather(*settles))  # so it is not sent again
                        raise
                    if settles:  # recorded together: one commit for the batch
                        await asyncio.gather(*settles)
                        continue
                    upcoming = await self._reader.next_due_at(lane, others)
            except LaneLost as exc:
                self.leases.lost(lane, str(exc))
            except StoreError as exc:
                event(log, "outbox_store_error", logging.ERROR, error=str(exc))
            wait = self.poll if upcoming is None else min(self.poll, upcoming - time.time())
            if lease is None:  # another broker owns the lane: ask again before its lease ends
                wait = min(self.poll, self.leases.seconds / 3)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancel is never lost
                async with asyncio.timeout(max(wait, 0.0)):
                    await wake.wait()
            if wake.is_set() and self.batch_window > 0:
                # woken by new messages: let the ones queued just after them join the batch
                await asyncio.sleep(self.batch_window)

    async def _finish_on_stop(self, delivery: Awaitable[Awaitable[None]]) -> Awaitable[None]:
        """Await ``delivery``; when the lane is stopped meanwhile, wait up to the shutdown
        grace for the destination's answer (so a message it took is not sent again after
        the restart), then stop."""
        sending = asyncio.ensure_future(delivery)
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:
            await _quietly(_recorded(sending), self.shutdown_grace)  # before the lane stops
            sending.cancel()
            raise

    async def _deliver(self, row: OutboxRow, lease: Lease) -> Awaitable[None]:
        """Send one message; returns the (not yet awaited) recording of its outcome."""
        outcome, reason, ack = await self._send(row)
        return self._settle(row, outcome, reason, ack, lease)

    async def _send(self, row: OutboxRow) -> tuple[str, str, str]:
        """(outcome, reason, acknowledgement) of sending one message."""
        destination = self.destinations.get(row.destination)
        if destination is None:
            return "dead", f"destination {row.destination!r} is not configured", ""
        if isinstance(destination, RequestDestination):
            try:
                outcome, reason, detail = await asyncio.to_thread(destination.send, row)
            except Exception as exc:  # a request that failed in an unforeseen way: try again
                outcome, reason, detail = "retry", f"{type(exc).__name__}: {exc}", ""
            return outcome, reason, detail
        try:
            payload = encode(with_charset(row.payload, destination.charset))
        except EncodingError as exc:
            return "dead", f"not sent to {destination.name}: {exc}", ""
        try:
            answer = await self._exchange(destination, row, payload)
        except (MllpError, OSError, TimeoutError) as exc:
            await self._drop_client(destination.name)
            return "retry", (f"{type(exc).__name__}: {exc}" if str(exc)
                             else f"no answer within {destination.timeout} s"), ""
        code, _ = ack_code_of(answer)
        if code in DELIVERED:
            return "delivered", "", answer
        if code in REFUSED:
            return "dead", f"{destination.name} answered {code}: {_reason(answer)}", answer
        return "retry", f"unexpected answer {answer[:80]!r}", ""

    async def _exchange(self, destination: Destination, row: OutboxRow, payload: bytes) -> str:
        """Send ``payload`` (the row's text in its MSH-18 character set) and wait for the
        acknowledgement whose MSA-2 is this message's MSH-10."""
        client = self._clients.get(destination.name)
        if client is None:
            client = MllpClient(destination.host, destination.port, timeout=destination.timeout,
                                ssl_context=destination.ssl_context,
                                server_hostname=destination.server_hostname)
            await client.connect()
            self._clients[destination.name] = client
        deadline = time.monotonic() + destination.timeout
        frame = await client.send(payload)
        while True:
            text = frame.decode("utf-8", errors="replace")
            if ack_code_of(text)[1] == row.control_id:
                return text
            event(log, "outbox_stray_ack", logging.WARNING, control_id=row.control_id,
                  destination=destination.name, msa2=ack_code_of(text)[1])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no acknowledgement of {row.control_id} within "
                                   f"{destination.timeout} s")
            async with asyncio.timeout(left):
                frame = await client.receive()

    async def _drop_client(self, name: str) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            await client.close()

    def _tell(self, uow: UnitOfWork, row: OutboxRow, outcome: str, reason: str) -> None:
        if self.on_settled is not None:
            self.on_settled(uow, row, outcome, reason)

    async def _settle(self, row: OutboxRow, outcome: str, reason: str, ack: str,
                      lease: Lease) -> None:
        check = lease_check(lease)
        if outcome == "retry":
            delay = min(self.backoff_max, self.backoff_base * 2 ** row.attempts)
            delay *= random.uniform(0.8, 1.2)
            when = time.time() + delay

            def work(uow: UnitOfWork) -> None:
                check(uow)
                uow.outbox.retry_later(row.id, reason, when)
                self._tell(uow, row, "retry", reason)
            self.retried += 1
            level, name = logging.WARNING, "outbox_retry"
        elif outcome == "dead":
            def work(uow: UnitOfWork) -> None:
                check(uow)
                uow.outbox.dead(row.id, reason, ack)
                self._tell(uow, row, "dead", reason)
            self.dead += 1
            level, name = logging.ERROR, "outbox_dead_letter"
        else:
            def work(uow: UnitOfWork) -> None:
                check(uow)
                uow.outbox.delivered(row.id, ack)
                self._tell(uow, row, "delivered", "")
            self.delivered += 1
            level, name = logging.INFO, "outbox_delivered"
        await self.writer.run(work)
        if self.metrics is not None:
            self.metrics.message_out(row.message_type, outcome)
        event(log, name, level, control_id=row.control_id, destination=row.destination,
              order=row.order_key, attempt=row.attempts + 1,
              **({"reason": reason} if reason else {}))


def lease_check(lease: Lease) -> Callable[[UnitOfWork], None]:
    """The fencing check a settlement runs first in its transaction."""
    def check(uow: UnitOfWork) -> None:
        uow.cluster.check(lease)
    return check


def _reason(ack: str) -> str:
    for line in ack.replace("\n", "\r").split("\r"):
        if line.startswith("ERR"):
            parts = line.split("|")
            return parts[8] if len(parts) > 8 and parts[8] else line
    parts = next((x.split("|") for x in ack.split("\r") if x.startswith("MSA")), [])
    return parts[3] if len(parts) > 3 else "no reason given"


async def _recorded(sending: asyncio.Future[Awaitable[None]]) -> None:
    """The delivery's outcome, once it is known, recorded."""
    await (await sending)


async def _quietly(work: Awaitable[object], seconds: float | None = None) -> None:
    """Await ``work`` (for at most ``seconds``) during a stop: a failure (a lost lane, the
    store, the time running out) must not turn the stop into a retry; what was not recorded
    is sent again later."""
    with contextlib.suppress(Exception):  # TimeoutError included
        async with asyncio.timeout(seconds):
            await work
