"""What the console and the REST API show and do, in one place: both render the same data.

Reads go through the admin's own read-only store reader; writes (outbox retry and
purge) go through the single writer with the same repository calls as ``mwl-broker outbox``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict

from broker.admin.ports import HealthSource, MappingSource, OutboxControl, Row, Writes
from broker.logs import event
from broker.mapping.schema import MappingLoadError, describe, load_mappings
from broker.metrics import LATE_STEP_MINUTES, Metrics
from broker.model.orders import StepStatus
from broker.store import admin_queries as q
from broker.store.cluster import ALIVE_WINDOW

log = logging.getLogger("broker.admin")
PURGEABLE = ("delivered", "dead")
OUTBOX_STATES = ("pending", "delivered", "dead")
#: the first scrape takes each sender's last message time from this far back in the message
#: log (an alert on a silent sender holds across a restart)
SENDER_MEMORY = 7 * 86400.0


class BadRequest(ValueError):
    """A parameter the user can correct; the text says which and how."""


def parse_date(text: str) -> str:
    """YYYYMMDD from YYYYMMDD, YYYY-MM-DD, 'today' or nothing (today)."""
    text = text.strip()
    if text in ("", "today"):
        return datetime.date.today().strftime("%Y%m%d")
    digits = text.replace("-", "")
    try:
        datetime.datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise BadRequest(f"date {text!r} must be YYYYMMDD, YYYY-MM-DD or 'today'") from None
    return digits


def parse_choice(name: str, text: str, choices: tuple[str, ...]) -> str:
    text = text.strip()
    if text and text not in choices:
        raise BadRequest(f"{name} {text!r} must be one of {', '.join(choices)}")
    return text


def parse_number(name: str, text: str, default: float, low: float, high: float) -> float:
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} {text!r} must be a number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} {text!r} must be between {low:g} and {high:g}")
    return value


STEP_STATUSES = tuple(s.value for s in StepStatus)


class AdminService:
    def __init__(self, writer: Writes, open_reader: Callable[[], Awaitable[q.AdminReader]],
                 outbox: OutboxControl, mappings: MappingSource, metrics: Metrics,
                 health: Sequence[HealthSource], node: str = "") -> None:
        """``open_reader`` opens the read-only connection of the console and the REST API;
        ``node`` is this broker's name among those sharing the database."""
        self.writer = writer
        self.node = node
        self.open_reader = open_reader
        self.outbox_control = outbox
        self.mapping_source = mappings
        self.metrics = metrics
        self.health_sources = list(health)
        self._reader: q.AdminReader | None = None
        self._senders_seeded = False

    async def open(self) -> None:
        self._reader = await self.open_reader()

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @property
    def reader(self) -> q.AdminReader:
        assert self._reader is not None, "the admin service is not open"
        return self._reader

    # -- reads ---------------------------------------------------------------------------
    async def worklist(self, date: str = "", station: str = "", text: str = "",
                       status: str = "", limit: str = "") -> Row:
        f = q.WorklistFilter(date=parse_date(date), station=station.strip(), text=text.strip(),
                             status=parse_choice("status", status, STEP_STATUSES),
                             limit=int(parse_number("limit", limit, 500, 1, 5000)))
        items = await self.reader.worklist(f)
        by_station: dict[str, int] = {}
        for item in items:
            for aet in item["stations"] or [""]:
                by_station[aet] = by_station.get(aet, 0) + 1
        return {"filter": asdict(f), "count": len(items), "by_station": by_station,
                "items": items}

    async def history(self, key: str) -> list[Row]:
        return await self.reader.procedure_history(key.strip())

    async def messages(self, text: str = "", outcome: str = "", limit: str = "") -> Row:
        outcome = parse_choice("outcome", outcome, ("AA", "AE", "AR"))
        count = int(parse_number("limit", limit, 100, 1, 1000))
        items = await self.reader.messages(text.strip(), outcome, count)
        return {"filter": {"q": text.strip(), "outcome": outcome, "limit": count},
                "items": items}

    async def message(self, pk: int) -> Row | None:
        return await self.reader.message(pk)

    async def outbox(self, state: str = "", limit: str = "") -> Row:
        state = parse_choice("state", state, OUTBOX_STATES)
        count = int(parse_number("limit", limit, 200, 1, 5000))
        stats = await self.reader.outbox_stats()
        items = await self.reader.outbox(state, count)
        return {"filter": {"state": state, "limit": count}, "stats": asdict(stats),
                "destinations": sorted(self.outbox_control.destinations), "items": items}

    async def outbox_entry(self, pk: int) -> Row | None:
        return await self.reader.outbox_entry(pk)

    def mappings(self) -> Row:
        holder = self.mapping_source
        current = holder()
        return {"directory": str(holder.directory), "loaded_at": current.loaded_at,
                "summary": describe(current),
                "last_reload": {"at": holder.last_reload_at, "ok": holder.last_reload_ok,
                                "errors": list(holder.last_errors)}}

    async def check_mappings(self) -> list[str]:
        """Validate the folder as it is on disk now, without putting it into force."""
        try:
            await asyncio.to_thread(load_mappings, self.mapping_source.directory)
        except MappingLoadError as exc:
            return list(exc.errors)
        return []

    # -- writes (through the single writer) ------------------------------------------------
    async def retry(self, pk: int | None, peer: str) -> int:
        """Dead letters (or the one given, unless delivered) back to pending, due now."""
        count: int = await self.writer.run(lambda uow: uow.outbox.requeue(pk))
        if count:
            self.outbox_control.wake()
        event(log, "admin_outbox_retry", entry=pk if pk is not None else "all-dead",
              requeued=count, peer=peer)
        return count

    async def purge(self, state: str, older_than_days: str, peer: str) -> int:
        state = parse_choice("state", state, PURGEABLE) or "delivered"
        days = parse_number("older_than_days", older_than_days, 30.0, 0.0, 36500.0)
        cutoff = time.time() - days * 86400
        count: int = await self.writer.run(lambda uow: uow.outbox.purge(state, cutoff))
        event(log, "admin_outbox_purge", state=state, older_than_days=days, purged=count,
              peer=peer)
        return count

    async def reload_mappings(self, peer: str) -> bool:
        """As SIGHUP: validate the folder and put it into force only when valid."""
        ok = await asyncio.to_thread(self.mapping_source.reload)
        event(log, "admin_mappings_reload", ok=ok, peer=peer)
        return ok

    # -- health and metrics ----------------------------------------------------------------
    def health(self) -> list[Row]:
        """Each listener and worker: up or not, where, and its counters."""
        return [source() for source in self.health_sources]

    def ready(self) -> tuple[bool, dict[str, bool]]:
        checks = {h["name"]: bool(h["up"]) for h in self.health() if not h.get("advisory")}
        return all(checks.values()), checks

    async def scrape(self) -> bytes:
        """The metrics text, with the outbox, workflow and cluster gauges read from the store
        now (every await first: the gauges are set and rendered in one go)."""
        metrics = self.metrics
        stats = await self.reader.outbox_stats()
        workflow = await self.reader.workflow_stats(LATE_STEP_MINUTES)
        cluster = await self.cluster()
        senders = None
        if not self._senders_seeded:  # senders seen before this process started
            senders = await self.reader.senders_last_seen(time.time() - SENDER_MEMORY)
            self._senders_seeded = True
        now = time.time()

        def age(oldest: float | None) -> float:
            return max(now - oldest, 0.0) if oldest else 0.0
        metrics.set_outbox(stats.depth, age(stats.oldest_pending_at), stats.dead)
        by = {name: (0, 0.0, 0) for name in self.outbox_control.destinations}
        by.update({name: (d.depth, age(d.oldest_pending_at), d.dead)
                   for name, d in stats.by_destination.items()})
        metrics.set_destinations(by)
        metrics.set_workflow(workflow.commitments_timed_out, workflow.completions_overdue,
                             workflow.steps_not_started)
        if senders is not None:
            metrics.seed_senders(senders)
        health = {row["name"]: row for row in self.health()}
        metrics.set_listeners({"admin": True, **{name: bool(health[name]["up"])
                                                 for name in ("mllp", "dicom") if name in health}})
        if "writer" in health:
            metrics.set_writer(bool(health["writer"]["up"]), health["writer"]["detail"])
        metrics.set_cluster(sum(1 for n in cluster["nodes"] if n["alive"]),
                            {lane["lane"]: lane["held"] and lane["owner"] == self.node
                             for lane in cluster["lanes"]})
        return metrics.render()

    async def cluster(self) -> Row:
        """This broker's name, every broker sharing the database, and who owns each lane."""
        return {"node": self.node, **await self.reader.cluster(ALIVE_WINDOW)}
