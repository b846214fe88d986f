"""Upstream worklists: each configured Modality Worklist SCP (a RIS's own) is queried every
``interval`` seconds as an SCU (in a thread) and its answer mirrored into the store in one
transaction (broker.workflow.upstream). While it cannot be reached the store keeps its last
good copy, which the broker goes on answering from; the next good poll catches up.

Brokers sharing one database poll each upstream once: the poller holds the lease of the
lane ``upstream:<name>`` (broker.store.cluster, as outbox lanes are held) for two intervals
and a timeout, renewed at each poll; the others skip their polls while it is held and one of
them takes over when it runs out (the holder stopped or lost the database). Each mirror write
checks the lease's fencing token, so a poller that lost its lane writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time

from pydicom.dataset import Dataset

from broker.config import UpstreamWorklistSettings
from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys
from broker.dicom.importer import ImportError_, order_of_attrs
from broker.dicom.status import SUCCESS
from broker.dicom.upstream_answers import Read, attrs_of
from broker.logs import event, exception_site
from broker.metrics import Metrics
from broker.model.orders import OrderChange
from broker.net.tls import client_args
from broker.store.cluster import LaneLost, Lease
from broker.store.errors import StoreError
from broker.store.unit_of_work import JobRunner, UnitOfWork
from broker.workflow.upstream import PollOutcome, apply_poll, by_study

log = logging.getLogger("broker.upstream")

#: asked on top of the client's default return keys, so the mirror holds what a modality
#: usually asks the broker for (an upstream answers only the keys it is asked)
MIRRORED_KEYS = ("PatientWeight", "PatientSize", "MedicalAlerts", "Allergies",
                 "PregnancyStatus", "OtherPatientIDsSequence", "ReferringPhysicianName",
                 "RequestedProcedurePriority", "RequestedProcedureCodeSequence",
                 "AdmissionID", "ScheduledPerformingPhysicianName", "ScheduledStationName",
                 "ScheduledProcedureStepLocation", "ScheduledProtocolCodeSequence",
                 "PlacerOrderNumberImagingServiceRequest",
                 "FillerOrderNumberImagingServiceRequest", "StudyDate", "StudyTime")


def query_for(settings: UpstreamWorklistSettings, today: datetime.date) -> Dataset:
    """The C-FIND identifier of one poll: SPS start dates around ``today``."""
    q = settings.query
    first = today - datetime.timedelta(days=q.days_before)
    last = today + datetime.timedelta(days=q.days_after)
    extra = [f"{k}=" for k in MIRRORED_KEYS] + [f"{k}={v}" for k, v in q.keys.items()]
    return build_query(query_keys(extra, station=q.station, modality=q.modality,
                                  date=f"{first:%Y%m%d}-{last:%Y%m%d}"))


class UpstreamPoller:
    """One upstream worklist, polled by an asyncio task of its own."""

    def __init__(self, settings: UpstreamWorklistSettings, writer: JobRunner, calling_ae: str,
                 metrics: Metrics | None = None, index: int = 0, node: str = "") -> None:
        self.settings = settings
        self.node = node or f"upstream-poller-{id(self):x}"
        self.name = settings.name
        self.writer = writer
        self.calling_ae = settings.calling_ae or calling_ae
        self.metrics = metrics
        self._tls = client_args(settings.tls, f"upstream_worklists[{index}].tls",
                                settings.host)
        self.up = False
        self.items = 0
        self.polls = 0
        self.failures = 0
        self.last_success: float | None = None
        self.last_error = ""
        self.last_outcome: PollOutcome | None = None
        self._client: WorklistClient | None = None
        #: this broker's lease on the upstream (None: another broker polls it)
        self.lease: Lease | None = None
        self.polled_elsewhere = 0
        #: the previous poll's answers as read (upstream_answers.attrs_of)
        self._read: Read = {}
        self._halt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if metrics is not None:
            metrics.upstream_polled(self.name, False)

    @property
    def address(self) -> str:
        s = self.settings
        return f"{s.ae_title}@{s.host}:{s.port}"

    def query(self) -> list[Dataset]:
        """One C-FIND (in a thread): every match, or QueryFailed unless it ended in success."""
        s = self.settings
        client = WorklistClient(s.host, s.port, called=s.ae_title, calling=self.calling_ae,
                                timeout=s.timeout, tls_args=self._tls)
        self._client = client
        try:
            result = client.find(query_for(s, datetime.date.today()))
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                client.close()
        if result.status != SUCCESS:  # a partial answer would remove what it left out
            raise QueryFailed(f"C-FIND ended with status 0x{result.status:04X} "
                              f"{result.comment}".strip())
        return result.matches

    def orders(self, matches: list[Dataset]) -> list[OrderChange]:
        """The matches as orders (one per procedure); an unusable one is left out. An answer
        whose encoded elements are those of the previous poll's is not read again."""
        orders: list[OrderChange] = []
        unusable = 0
        read = self._read
        self._read = {}
        for n, ds in enumerate(matches, start=1):
            attrs = attrs_of(ds, read, self._read)
            steps = attrs.get("ScheduledProcedureStepSequence") or [{}]
            seed = f"{self.name}|{steps[0].get('ScheduledProcedureStepID', n)}"
            try:
                orders.append(order_of_attrs(attrs, f"{self.name} answer {n}", seed,
                                             "UPSTREAM"))
            except ImportError_:
                unusable += 1
        if unusable:
            event(log, "upstream_items_unusable", logging.WARNING, upstream=self.name,
                  count=unusable, reason="no Patient ID")
        return by_study(orders)

    @property
    def polling(self) -> bool:
        """Whether this broker holds the upstream (polls it) at present."""
        return self.lease is not None

    @property
    def lane(self) -> str:
        return f"upstream:{self.name}"

    async def take_turn(self) -> bool:
        """Whether this broker polls now: it holds (takes or renews) the upstream's lease."""
        s = self.settings
        fresh = self.lease is None
        try:
            lease = await self.writer.run(lambda uow: uow.cluster.acquire(
                self.lane, self.node, 2 * s.interval + s.timeout, fresh))
        except StoreError as exc:
            event(log, "upstream_lease_failed", logging.WARNING, upstream=self.name,
                  error=str(exc))
            return False
        if lease is None:
            if self.lease is not None or not self.polled_elsewhere:
                event(log, "upstream_polled_elsewhere", upstream=self.name, node=self.node)
            self.lease = None
            self.polled_elsewhere += 1
            return False
        if self.lease is None or self.lease.fence != lease.fence:
            event(log, "upstream_lease_taken", upstream=self.name, node=self.node,
                  fence=lease.fence)
        self.lease = lease
        return True

    def _mirror(self, uow: UnitOfWork, orders: list[OrderChange]) -> PollOutcome:
        if self.lease is not None:
            uow.cluster.check(self.lease)  # another broker took the upstream over: no write
        return apply_poll(uow, self.name, orders, self.settings.remove_after)

    async def poll(self) -> PollOutcome | None:
        """Query the upstream and mirror its answer; None when it failed (the copy stays)."""
        self.polls += 1
        try:
            matches = await asyncio.to_thread(self.query)
        except Exception as exc:  # unreachable, refused, timed out, aborted at stop
            self._failed(str(exc) or type(exc).__name__)
            return None
        orders = await asyncio.to_thread(self.orders, matches)  # CPU: not on the loop
        try:
            outcome = await self.writer.run(lambda uow: self._mirror(uow, orders))
        except LaneLost as exc:
            event(log, "upstream_lease_lost", logging.WARNING, upstream=self.name,
                  error=str(exc))
            self.lease = None
            return None
        except StoreError as exc:
            event(log, "upstream_not_stored", logging.ERROR, upstream=self.name,
                  error=str(exc))
            return None
        if self.last_error:
            event(log, "upstream_resumed", upstream=self.name, address=self.address)
        self.up, self.items, self.last_success = True, outcome.items, time.time()
        self.last_error, self.last_outcome = "", outcome
        if self.metrics is not None:
            self.metrics.upstream_polled(self.name, True, outcome.items, self.last_success)
        for study_uid, holder in outcome.skipped:
            event(log, "upstream_item_skipped", logging.WARNING, upstream=self.name,
                  study_uid=study_uid, held_by=holder or "hl7",
                  reason="the Study Instance UID or accession number is another source's")
        if outcome.added or outcome.updated or outcome.removed:
            event(log, "upstream_mirrored", upstream=self.name, added=outcome.added,
                  updated=outcome.updated, removed=outcome.removed, items=outcome.items)
        return outcome

    def _failed(self, error: str) -> None:
        self.failures += 1
        if self.up or not self.last_error:
            event(log, "upstream_unreachable", logging.WARNING, upstream=self.name,
                  address=self.address, error=error, serving="last good copy")
        self.up, self.last_error = False, error
        if self.metrics is not None:
            self.metrics.upstream_polled(self.name, False)

    async def start(self) -> None:
        self._halt.clear()
        self._task = asyncio.create_task(self._loop(), name=f"upstream:{self.name}")

    async def stop(self) -> None:
        """Stop polling: a query under way is aborted."""
        self._halt.set()
        client = self._client
        if client is not None and client.assoc is not None:
            with contextlib.suppress(Exception):
                client.assoc.abort()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):  # the task is cancelled then
                async with asyncio.timeout(self.settings.timeout + 5):
                    await self._task
            self._task = None
        lease, self.lease = self.lease, None
        if lease is not None:  # another broker sharing the database polls from now on
            with contextlib.suppress(StoreError):
                await self.writer.run(lambda uow: uow.cluster.release(lease))

    async def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                if await self.take_turn():
                    await self.poll()
            except Exception as exc:
                event(log, "upstream_poll_failed", logging.ERROR, upstream=self.name,
                      **exception_site(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.interval):
                    await self._halt.wait()
