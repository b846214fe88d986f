"""What the console and the REST API show and do, in one place: both render the same data.

Reads go through the admin's own read-only connection (aiosqlite); writes (outbox retry and
purge) go through the single writer with the same repository calls as ``mwl-broker outbox``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import aiosqlite

from broker.logs import event
from broker.mapping.schema import MappingLoadError, describe, load_mappings
from broker.model.orders import StepStatus
from broker.outbound.outbox import Destination
from broker.store import admin_queries as q
from broker.store.repo import OutboxRepo

if TYPE_CHECKING:
    from broker.app import Broker
    from broker.metrics import Metrics

log = logging.getLogger("broker.admin")
Row = dict[str, Any]
PURGEABLE = ("delivered", "dead")
OUTBOX_STATES = ("pending", "delivered", "dead")


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
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self._reader = await q.open_admin_reader(self.broker.writer.path)

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "the admin service is not open"
        return self._reader

    # -- reads ---------------------------------------------------------------------------
    async def worklist(self, date: str = "", station: str = "", text: str = "",
                       status: str = "", limit: str = "") -> Row:
        f = q.WorklistFilter(date=parse_date(date), station=station.strip(), text=text.strip(),
                             status=parse_choice("status", status, STEP_STATUSES),
                             limit=int(parse_number("limit", limit, 500, 1, 5000)))
        items = await q.worklist(self.reader, f)
        by_station: dict[str, int] = {}
        for item in items:
            for aet in item["stations"] or [""]:
                by_station[aet] = by_station.get(aet, 0) + 1
        return {"filter": asdict(f), "count": len(items), "by_station": by_station,
                "items": items}

    async def history(self, key: str) -> list[Row]:
        return await q.procedure_history(self.reader, key.strip())

    async def messages(self, text: str = "", outcome: str = "", limit: str = "") -> Row:
        outcome = parse_choice("outcome", outcome, ("AA", "AE", "AR"))
        count = int(parse_number("limit", limit, 100, 1, 1000))
        items = await q.messages(self.reader, text.strip(), outcome, count)
        return {"filter": {"q": text.strip(), "outcome": outcome, "limit": count},
                "items": items}

    async def message(self, pk: int) -> Row | None:
        return await q.message(self.reader, pk)

    async def outbox(self, state: str = "", limit: str = "") -> Row:
        state = parse_choice("state", state, OUTBOX_STATES)
        count = int(parse_number("limit", limit, 200, 1, 5000))
        stats = await q.outbox_stats(self.reader)
        items = await q.outbox(self.reader, state, count)
        return {"filter": {"state": state, "limit": count}, "stats": asdict(stats),
                "destinations": sorted(self.broker.outbox.destinations), "items": items}

    async def outbox_entry(self, pk: int) -> Row | None:
        return await q.outbox_entry(self.reader, pk)

    def mappings(self) -> Row:
        holder = self.broker.mappings
        current = holder()
        return {"directory": str(holder.directory), "loaded_at": current.loaded_at,
                "summary": describe(current),
                "last_reload": {"at": holder.last_reload_at, "ok": holder.last_reload_ok,
                                "errors": list(holder.last_errors)}}

    async def check_mappings(self) -> list[str]:
        """Validate the folder as it is on disk now, without putting it into force."""
        try:
            await asyncio.to_thread(load_mappings, self.broker.mappings.directory)
        except MappingLoadError as exc:
            return list(exc.errors)
        return []

    # -- writes (through the single writer) ------------------------------------------------
    async def retry(self, pk: int | None, peer: str) -> int:
        """Dead letters (or the one given, unless delivered) back to pending, due now."""
        count: int = await self.broker.writer.run(lambda c: OutboxRepo(c).requeue(pk))
        if count:
            self.broker.outbox.wake()
        event(log, "admin_outbox_retry", entry=pk if pk is not None else "all-dead",
              requeued=count, peer=peer)
        return count

    async def purge(self, state: str, older_than_days: str, peer: str) -> int:
        state = parse_choice("state", state, PURGEABLE) or "delivered"
        days = parse_number("older_than_days", older_than_days, 30.0, 0.0, 36500.0)
        cutoff = time.time() - days * 86400
        count: int = await self.broker.writer.run(lambda c: OutboxRepo(c).purge(state, cutoff))
        event(log, "admin_outbox_purge", state=state, older_than_days=days, purged=count,
              peer=peer)
        return count

    async def reload_mappings(self, peer: str) -> bool:
        """As SIGHUP: validate the folder and put it into force only when valid."""
        ok = await asyncio.to_thread(self.broker.mappings.reload)
        event(log, "admin_mappings_reload", ok=ok, peer=peer)
        return ok

    # -- health and metrics ----------------------------------------------------------------
    def health(self) -> list[Row]:
        """Each listener and worker: up or not, where, and its counters."""
        b = self.broker
        mllp, dicom, outbox, writer = b.mllp, b.dicom, b.outbox, b.writer
        idle_outbox = not outbox.destinations
        return [
            {"name": "mllp", "up": mllp.serving,
             "address": f"{mllp.host}:{mllp.bound_port}" if mllp.serving else "",
             "detail": {"connections": mllp.active_connections, "refused": mllp.refused,
                        "acknowledged": dict(b.ingestor.counts)}},
            {"name": "dicom", "up": dicom.serving,
             "address": f"{dicom.ae_title}@{dicom.host}:{dicom.bound_port}"
             if dicom.serving else "",
             "detail": {"associations": dicom.active_associations,
                        "worklist_queries": dicom.queries}},
            {"name": "outbox", "up": outbox.running or idle_outbox,
             "address": ", ".join(f"{d.name}={d.host}:{d.port}" if isinstance(d, Destination)
                                  else d.name for d in outbox.destinations.values()),
             "detail": {"delivered": outbox.delivered, "dead": outbox.dead,
                        "retried": outbox.retried,
                        **({"note": "no destinations configured"} if idle_outbox else {})}},
            {"name": "writer", "up": writer.alive, "address": str(writer.path),
             "detail": {"commits": writer.commits, "jobs": writer.jobs, "syncs": writer.syncs,
                        "checkpoints": writer.checkpoints}},
        ]

    def ready(self) -> tuple[bool, dict[str, bool]]:
        checks = {h["name"]: bool(h["up"]) for h in self.health()}
        return all(checks.values()), checks

    async def scrape(self) -> bytes:
        """The metrics text, with the outbox gauges read from the store now."""
        metrics: Metrics = self.broker.metrics
        stats = await q.outbox_stats(self.reader)
        age = time.time() - stats.oldest_pending_at if stats.oldest_pending_at else 0.0
        metrics.set_outbox(stats.depth, max(age, 0.0), stats.dead)
        return metrics.render()
