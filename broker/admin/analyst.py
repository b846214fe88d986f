"""The integration analyst's answers to "why isn't my exam on the scanner?", for the console,
the REST API and the CLI alike: the query log, preview, explanation, trace and replay."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydicom.dataset import Dataset

from broker.admin.service import BadRequest, parse_number
from broker.analyst import explain as explaining
from broker.analyst.preview import (
    BadKey,
    identifier_from_keys,
    identifier_of,
    preview,
)
from broker.dicom.status import DimseFailure
from broker.dicom.worklist_matching import WorklistMatching
from broker.flows.hl7_in import Outcome, Replay
from broker.logs import event
from broker.model.worklist import WorklistQuery
from broker.store.analyst_queries import AnalystReader
from broker.store.ports import WorklistReader

log = logging.getLogger("broker.admin")
Row = dict[str, Any]
#: what re-processes a stored message: the ingest path (bytes, first address, replay)
Ingest = Callable[[bytes, str, Replay], Awaitable[Outcome]]
QUERY_OUTCOMES = ("done", "cancelled", "refused", "failed")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(name: str, text: str) -> float:
    """A Unix time from '' (none), seconds since the epoch, a local date or date-time
    (YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]) or an age such as 30m, 2h, 1d (that long ago)."""
    text = text.strip()
    if not text:
        return 0.0
    relative = _RELATIVE.match(text)
    if relative:
        return time.time() - float(relative[1]) * _UNITS[relative[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadRequest(f"{name} {text!r} must be a date (2026-12-03), a date and time "
                         "(2026-12-03T08:30), Unix seconds or an age (30m, 2h, 1d)") from None


def parse_station(text: str) -> str:
    station = text.strip()
    if len(station) > 16 or not station.isprintable() or "\\" in station:
        raise BadRequest(f"station {station[:20]!r} is not an AE title (1 to 16 characters)")
    return station


class AnalystService:
    """``reader`` gives the admin side's open read connection, ``open_worklist`` a worklist
    reader (the SCP's own SQL), ``matching`` the SCP's reading of queries, ``ingest`` the
    inbound HL7 path that replays go through."""

    def __init__(self, reader: Callable[[], AnalystReader],
                 open_worklist: Callable[[], WorklistReader], matching: WorklistMatching,
                 ingest: Ingest | None = None) -> None:
        self._reader = reader
        self.open_worklist = open_worklist
        self.matching = matching
        self.ingest = ingest

    @property
    def reader(self) -> AnalystReader:
        return self._reader()

    # -- query log -------------------------------------------------------------------------
    async def queries(self, station: str = "", since: str = "", until: str = "",
                      outcome: str = "", limit: str = "") -> Row:
        aet, outcome = parse_station(station), outcome.strip()
        start, end = parse_time("since", since), parse_time("until", until)
        count = int(parse_number("limit", limit, 100, 1, 5000))
        if outcome and outcome not in QUERY_OUTCOMES:
            raise BadRequest(f"outcome {outcome!r} must be one of {', '.join(QUERY_OUTCOMES)}")
        items = await self.reader.queries(aet, start, end, outcome, count)
        return {"filter": {"station": aet, "since": start, "until": end, "outcome": outcome,
                           "limit": count}, "count": len(items), "items": items}

    async def query(self, pk: int) -> Row | None:
        """One recorded query, its identifier as DICOM JSON."""
        found = await self.reader.query(pk)
        if found is None:
            return None
        return _with_identifier(found)

    async def last_seen(self) -> dict[str, Row]:
        return await self.reader.last_seen()

    # -- preview ---------------------------------------------------------------------------
    async def preview(self, station: str, keys: dict[str, str] | None = None,
                      query_id: int | None = None, limit: str = "") -> Row:
        """What ``station`` gets now for its last recorded query (or query ``query_id``),
        with ``keys`` changed; without any recorded query, for ``keys`` alone."""
        station = parse_station(station)
        if not station:
            raise BadRequest("station: give the calling AE title of the modality")
        count = int(parse_number("limit", limit, 500, 1, 5000))
        source, template = await self._query_of(station, query_id)
        if template is None and not keys:
            raise BadRequest(f"no query from {station} is in the query log: give the keys "
                             "to run (e.g. ScheduledStationAETitle, "
                             "ScheduledProcedureStepStartDate)")
        identifier = self._edited(template, keys)
        try:
            result = await asyncio.to_thread(self._run_preview, identifier, station, count)
        except DimseFailure as exc:
            return {"station": station, "source": source, "refused": True,
                    "status": f"{exc.status:04X}", "error": exc.comment}
        return {"station": station, "source": source, "refused": False,
                "keys": result.keys, "unsupported": result.unsupported,
                "count": len(result.items), "truncated": result.truncated,
                "items": result.items, "answers": result.answers}

    def _run_preview(self, identifier: Dataset, station: str, limit: int) -> Any:
        reader = self.open_worklist()
        try:
            return preview(reader.search, self.matching, identifier, station, limit)
        finally:
            reader.close()

    async def _query_of(self, station: str, query_id: int | None
                        ) -> tuple[Row | None, Dataset | None]:
        """The recorded query to start from (its row without the bytes, its identifier)."""
        if query_id is not None:
            row = await self.reader.query(query_id)
            if row is None:
                raise BadRequest(f"query {query_id} is not in the query log")
        else:
            row = await self.reader.last_query(station)
        if row is None:
            return None, None
        identifier = identifier_of(row["identifier"], row["transfer_syntax"]) if row[
            "identifier"] else None
        return _with_identifier(row), identifier

    @staticmethod
    def _edited(template: Dataset | None, keys: dict[str, str] | None) -> Dataset:
        try:
            return identifier_from_keys(keys or {}, template)
        except BadKey as exc:
            raise BadRequest(str(exc)) from None

    # -- explanation -----------------------------------------------------------------------
    async def explain(self, key: str, station: str = "",
                      keys: dict[str, str] | None = None) -> Row:
        """For each step of the order ``key`` (accession or Study Instance UID) and each
        station (``station``, else those the steps are scheduled on): whether its last
        recorded query (``keys`` changed) returns the step, and if not why."""
        key, station = key.strip(), parse_station(station)
        steps = await self.reader.steps_of(key)
        if not steps:
            return {"key": key, "found": False,
                    "summary": await self._not_found(key), "stations": []}
        stations = [station] if station else sorted(
            {aet for s in steps for aet in s["stations"]}) or []
        out: list[Row] = []
        for aet in stations:
            source, template = await self._query_of(aet, None)
            if template is None and not keys:
                out.append({"station": aet, "source": None, "steps": [],
                            "summary": f"no query from {aet} is in the query log: the "
                            "modality has not asked (check its worklist settings: called AE "
                            "title, host, port) or asked under another AE title"})
                continue
            identifier = self._edited(template, keys)
            try:
                parsed = self.matching.parse(identifier, aet)
            except DimseFailure as exc:
                out.append({"station": aet, "source": source, "steps": [],
                            "summary": f"the SCP refuses this query ({exc.status:04X}): "
                            f"{exc.comment}"})
                continue
            merges = await self.reader.merges(sorted(
                m.value for m in parsed.query.matches if m.keyword == "PatientID"
                and m.kind == "single"))
            results = await asyncio.to_thread(self._run_explain, parsed.query, aet,
                                              [s["id"] for s in steps], merges)
            notes = ([f"the query has keys the broker does not match on ("
                      f"{', '.join(parsed.unsupported)}): they match anything"]
                     if parsed.unsupported else [])
            out.append({"station": aet, "source": source, "keys": parsed.query.keys(),
                        "notes": notes, "steps": [_verdict_row(v) for v in results]})
        return {"key": key, "found": True, "stations": out}

    def _run_explain(self, query: WorklistQuery, station: str, step_ids: list[int],
                     merges: dict[str, str]) -> list[explaining.Verdict]:
        reader = self.open_worklist()
        try:
            return [explaining.explain(reader.search, query, step_id, self.matching, station,
                                       merges) for step_id in step_ids]
        finally:
            reader.close()

    async def _not_found(self, key: str) -> str:
        messages = await self.reader.messages_about(key)
        if not messages:
            return (f"no order with accession number or Study Instance UID {key!r} is "
                    "stored, and no message named it: the RIS has not sent it (or sent it "
                    "to another interface)")
        refused = [m for m in messages if m["outcome"] != "AA"]
        if refused:
            m = refused[0]
            return (f"the order was not stored: message {m['control_id']} "
                    f"({m['message_type']}) was answered {m['outcome']}: {m['error']}")
        return (f"messages named {key!r} but no step of it is stored now (removed by a "
                "later message or by retention)")

    # -- trace -----------------------------------------------------------------------------
    async def timeline(self, key: str) -> list[Row]:
        return await self.reader.timeline(key.strip())

    # -- replay ----------------------------------------------------------------------------
    async def replay(self, pk: int, reason: str, user: str, remote: str,
                     edited: str | None = None) -> Row:
        """Process stored message ``pk`` again (``edited``: its text changed) through the
        ingest path; the original row is never changed, the replay is a new row linked to
        it with who asked (``user`` from ``remote``) and why."""
        if self.ingest is None:
            raise BadRequest("replay needs the running broker's ingest path")
        reason, user = reason.strip(), user.strip()
        if not reason:
            raise BadRequest("reason: say why the message is replayed (kept with the replay)")
        if not user or len(user) > 64:
            raise BadRequest("user: give your name (1 to 64 characters; kept with the replay)")
        stored = await self.reader.stored_message(pk)
        if stored is None:
            raise LookupError(f"no message {pk} in the log")
        raw = stored["raw"] if edited is None else _encode(edited, stored["charset"])
        who = f"{user} from {remote}"[:120]
        outcome = await self.ingest(raw, stored["peer"], Replay(pk, who, reason[:500]))
        replays = await self.reader.replays_of(pk)
        event(log, "admin_message_replayed", message=pk, control_id=stored["control_id"],
              edited=edited is not None, outcome=outcome.code, replayed_by=who)
        return {"replay_of": pk, "id": replays[-1]["id"] if replays else None,
                "edited": edited is not None, "outcome": outcome.code,
                "duplicate": outcome.duplicate,
                "ack": outcome.ack.decode(outcome.charset or "latin-1", errors="replace")}


def _with_identifier(row: Row) -> Row:
    out = {k: v for k, v in row.items() if k != "identifier"}
    raw = row.get("identifier") or b""
    try:
        out["identifier"] = identifier_of(raw, row.get("transfer_syntax", "")).to_json_dict() \
            if raw else {}
    except Exception as exc:  # a recorded identifier pydicom cannot decode (refused queries)
        out["identifier"] = {}
        out["identifier_error"] = str(exc)
    return out


def _verdict_row(v: explaining.Verdict) -> Row:
    return {"step_id": v.step_id, "sps_id": v.sps_id, "status": v.status,
            "accession": v.accession, "study_uid": v.study_uid, "returned": v.returned,
            "summary": v.summary, "notes": v.notes,
            "exclusions": [{"keyword": e.keyword, "asked": e.asked, "stored": e.stored,
                            "reason": e.reason} for e in v.exclusions]}


def _encode(text: str, charset: str) -> bytes:
    """An edited message's text as bytes in the codec the original was read with; line
    ends as HL7 wants them (CR)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        return text.encode(charset or "latin-1")
    except (LookupError, UnicodeEncodeError) as exc:
        raise BadRequest(f"the edited message cannot be written in {charset}: {exc}; "
                         "change MSH-18 and the characters, or keep to the original's "
                         "character set") from None
