"""UPS-RS, the DICOMweb Worklist Service (PS3.18 chapter 11), under ``/dicomweb`` on the admin
server (behind its Guard): each transaction is the UPS DIMSE SCP's own job of
broker.flows.ups run in the writer, its Search the UPS C-FIND SCP's parsing and SQL, and its
event channel a WebSocket per subscriber AE (broker.admin.ups_ws). Statuses and headers:
docs/dicom-conformance.md, "UPS-RS"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web
from pydicom.uid import generate_uid

from broker.admin.ports import Writes
from broker.admin.ups_rs_http import (
    BadRequest,
    answers,
    bare_uid,
    body_json,
    check_accept,
    dicom_json,
    done,
    flag,
    parse_ae,
    parse_uid,
    warning,
)
from broker.admin.ups_ws import EventHub, ReadConnection, open_channel
from broker.dicom import qido
from broker.dicom.dicom_json import attrs_from_json, to_json
from broker.dicom.mwl import QueryLimits
from broker.dicom.ups_scp import parse_ups_identifier, row_attrs
from broker.flows.ups import Result, UpsService
from broker.model.ups import FILTERED_SUBSCRIPTION, GLOBAL_SUBSCRIPTION, WEB_PERFORMER
from broker.model.worklist import WorklistQuery
from broker.store.ports import WorklistReader
from broker.store.ups import query_to_json
from broker.store.worklist_query import WorklistRow

BASE = "/dicomweb"
#: the calling AE the UPS jobs record for a UPS-RS request (HTTP names none)
WEB_CALLER = WEB_PERFORMER
#: Search: results per page when ``limit`` is not given, and at most
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: what Search returns when ``includefield`` does not say ``all`` (matching keys and the
#: ``includefield`` ones come on top)
DEFAULT_FIELDS = (
    "SOPClassUID", "SOPInstanceUID", "ProcedureStepState", "ScheduledProcedureStepPriority",
    "ProcedureStepLabel", "WorklistLabel", "ScheduledProcedureStepStartDateTime",
    "ScheduledStationNameCodeSequence", "ScheduledWorkitemCodeSequence", "PatientName",
    "PatientID", "IssuerOfPatientID", "StudyInstanceUID", "ReferencedRequestSequence",
    "InputReadinessState")


class UpsWeb:
    """The Worklist Service: ``service`` the UPS jobs, ``writer`` the store's writer,
    ``open_worklist`` a worklist reader (one per thread), ``read`` the admin side's read
    connection (the event hub's), ``on_queued`` wakes the outbox."""

    def __init__(self, service: UpsService, writer: Writes,
                 open_worklist: Callable[[], WorklistReader], read: ReadConnection,
                 limits: QueryLimits | None = None, charset: str = "ISO_IR 192",
                 on_queued: Callable[[], None] | None = None, poll: float = 0.15) -> None:
        self.service = service
        self.writer = writer
        self.open_worklist = open_worklist
        self.limits = limits or QueryLimits()
        self.charset = charset
        self.on_queued = on_queued
        self.hub = EventHub(read, self._settle, charset, poll)

    def install(self, app: web.Application) -> None:
        """The routes, and the hub started and stopped with the server."""
        r = app.router
        w = f"{BASE}/workitems"
        r.add_post(w, self.create)
        r.add_get(w, self.search)
        r.add_get(w + "/{uid}", self.retrieve)
        r.add_post(w + "/{uid}", self.update)
        r.add_put(w + "/{uid}/state", self.change_state)
        r.add_post(w + "/{uid}/cancelrequest", self.request_cancel)
        r.add_post(w + "/{uid}/subscribers/{ae}", self.subscribe)
        r.add_delete(w + "/{uid}/subscribers/{ae}", self.unsubscribe)
        r.add_post(w + "/{uid}/subscribers/{ae}/suspend", self.suspend)
        r.add_get(BASE + "/ws/subscribers/{ae}", self.channel)

        async def start(_: web.Application) -> None:
            await self.hub.start()

        async def stop(_: web.Application) -> None:
            await self.hub.stop()
        app.on_startup.append(start)
        app.on_shutdown.append(stop)

    async def _run(self, job: Callable[[Any], Result]) -> Result:
        result: Result = await self.writer.run(job)
        if result.queued and self.on_queued is not None:
            self.on_queued()
        return result

    async def _settle(self, ids: list[int]) -> None:
        await self.writer.run(lambda uow: uow.ups.events_delivered(ids))

    @staticmethod
    def _uid(request: web.Request) -> str:
        return parse_uid(request.match_info["uid"])

    # -- Create, Retrieve, Update, Change State, Request Cancellation -----------------------
    @answers("create")
    async def create(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.4: 201 with Location; 409 when the UID exists, 400 when refused."""
        attrs = attrs_from_json(await body_json(request))
        asked = bare_uid(request, "workitem", "AffectedSOPInstanceUID")
        given = str(attrs.get("SOPInstanceUID", "") or "").strip()
        if given:
            parse_uid(given, "SOPInstanceUID")
            if asked and given != asked:
                raise BadRequest(f"the query names workitem {asked} but the body's "
                                 f"SOPInstanceUID is {given}")
        uid = asked or given or generate_uid()
        result = await self._run(lambda uow: self.service.create(uow, uid, attrs,
                                                                 WEB_CALLER))
        where = f"{request.url.origin()}{BASE}/workitems/{uid}"
        return done(201, result.warning, result.comment,
                    {"Location": where, "Content-Location": where})

    @answers("retrieve")
    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.5: the workitem (never its Transaction UID)."""
        check_accept(request)
        uid = self._uid(request)

        def job(uow: Any) -> Result:
            return Result(0, self.service.attrs(self.service.get(uow, uid)))
        result = await self._run(job)
        return dicom_json([to_json(result.attrs, self.charset)])

    @answers("update")
    async def update(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.6: the Transaction UID as the query parameter (``?{uid}`` or
        ``?transaction=``) or the body's TransactionUID."""
        uid = self._uid(request)
        changes = attrs_from_json(await body_json(request))
        given = str(changes.pop("TransactionUID", "") or "").strip()
        transaction = bare_uid(request, "transaction", "TransactionUID") or given
        result = await self._run(lambda uow: self.service.update(
            uow, uid, changes, transaction, WEB_CALLER))
        return done(200, result.warning, result.comment)

    @answers("change state")
    async def change_state(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.7: ProcedureStepState and TransactionUID in the body."""
        uid = self._uid(request)
        info = attrs_from_json(await body_json(request))
        state = str(info.get("ProcedureStepState", "") or "").strip()
        transaction = str(info.get("TransactionUID", "") or "").strip()
        if not state:
            raise BadRequest("the body needs ProcedureStepState (00741000): IN PROGRESS, "
                             "COMPLETED or CANCELED")
        result = await self._run(lambda uow: self.service.change_state(
            uow, uid, state, transaction, WEB_CALLER))
        return done(200, result.warning, result.comment)

    @answers("request cancellation")
    async def request_cancel(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.8: 202 — a SCHEDULED workitem is CANCELED at once, for one IN
        PROGRESS its subscribers (the performer) get a Cancel Requested report."""
        uid = self._uid(request)
        data = await body_json(request, required=False)
        info = attrs_from_json(data) if data is not None else {}
        reason = str(info.get("ReasonForCancellation", "") or "")
        contact = {k: str(info[k]) for k in ("ContactURI", "ContactDisplayName")
                   if info.get(k)}
        result = await self._run(lambda uow: self.service.request_cancel(
            uow, uid, reason, WEB_CALLER, contact))
        return done(202, result.warning, result.comment)

    # -- Search ---------------------------------------------------------------------------
    @answers("search")
    async def search(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.9: QIDO-style matching on the UPS C-FIND SCP's parsing and SQL; 200
        with the matches (an empty array when none), a Warning for what was not matched."""
        check_accept(request)
        matches: list[tuple[str, str]] = []
        fields: list[str] = []
        limit, offset, fuzzy = DEFAULT_LIMIT, 0, False
        for key, value in request.query.items():
            if key == "includefield":
                fields += [f.strip() for f in value.split(",") if f.strip()]
            elif key in ("limit", "offset"):
                number = _count(key, value)
                limit, offset = (min(number, MAX_LIMIT), offset) if key == "limit" else (
                    limit, number)
            elif key == "fuzzymatching":
                fuzzy = flag(value, key)
            else:
                matches.append((key, value))
        every = "all" in fields
        identifier = qido.identifier(matches, [] if every else [*DEFAULT_FIELDS, *fields])
        parsed = parse_ups_identifier(identifier, self.limits)
        if "SOPInstanceUID" in parsed.query.keywords():
            await self.writer.run(lambda uow: uow.ups.assign_uids())
        rows = await asyncio.to_thread(self._search, parsed.query, offset, limit + 1)
        keys = [] if every else parsed.keys
        body = [to_json(row_attrs(row), self.charset, keys) for row in rows[:limit]]
        response = dicom_json(body)
        if parsed.unsupported:
            response.headers.add("Warning", warning(
                "The following matching keys are not supported and match anything: "
                + ", ".join(sorted(set(parsed.unsupported)))))
        if fuzzy:
            response.headers.add("Warning", warning("The fuzzymatching parameter is not "
                                                    "supported. Only literal matching has "
                                                    "been performed."))
        if len(rows) > limit:
            response.headers.add("Warning", warning(
                f"There are additional results that can be requested (offset="
                f"{offset + limit})."))
        return response

    def _search(self, query: WorklistQuery, offset: int, count: int) -> list[WorklistRow]:
        """Up to ``count`` matches after the first ``offset`` (run in a thread of its own,
        with a reader of its own)."""
        reader = self.open_worklist()
        out: list[WorklistRow] = []
        try:
            for seen, row in enumerate(reader.search(query)):
                if seen >= offset:
                    out.append(row)
                    if len(out) >= count:
                        break
        finally:
            reader.close()
        return out

    # -- Subscribe, Unsubscribe, Suspend, the event channel ---------------------------------
    @answers("subscribe")
    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.10: 201 with the WebSocket's URL as Content-Location; any AE title (a
        web subscriber's reports wait for its WebSocket)."""
        uid, ae = self._uid(request), parse_ae(request.match_info["ae"])
        lock = flag(request.query.get("deletionlock", ""), "deletionlock")
        filters = []
        for k, v in request.query.items():
            if k == "filter":  # PS3.18 11.10.1.2: filter=Key=value[,Key=value]
                for part in v.split(","):
                    key, sep, value = part.partition("=")
                    if not sep:
                        raise BadRequest(f"filter {part!r}: write Key=value")
                    filters.append((key.strip(), value.strip()))
            elif k != "deletionlock":
                filters.append((k, v))
        query: dict[str, Any] | None = None
        unsupported: list[str] = []
        if filters and uid != FILTERED_SUBSCRIPTION:
            raise BadRequest(f"matching keys filter the worklist subscription "
                             f"{FILTERED_SUBSCRIPTION} only")
        if filters:
            parsed = parse_ups_identifier(qido.identifier(filters), self.limits)
            query, unsupported = query_to_json(parsed.query), parsed.unsupported
        await self._run(lambda uow: self.service.subscribe(uow, uid, ae, lock, query,
                                                           web=True))
        scheme = "wss" if request.secure else "ws"
        headers = {"Content-Location": f"{scheme}://{request.host}{BASE}/ws/subscribers/"
                                       f"{quote(ae, safe='')}"}
        if unsupported:
            headers["Warning"] = warning("The following filter keys are not supported and "
                                         "match anything: " + ", ".join(sorted(unsupported)))
        return done(201, headers=headers)

    @answers("unsubscribe")
    async def unsubscribe(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.11: 200; 404 when the AE holds no such subscription (or the workitem is
        unknown)."""
        uid, ae = self._uid(request), parse_ae(request.match_info["ae"])

        def job(uow: Any) -> Result:
            worklist = uid in (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION)
            if not (uow.ups.subscribes_globally(ae) if worklist else
                    uow.ups.watches(ae, self.service.get(uow, uid).uid)):
                raise web.HTTPNotFound(text=json.dumps({"error": (
                    f"{ae} holds no subscription to " + ("the worklist" if worklist else
                                                          f"workitem {uid}"))}),
                    content_type="application/json")
            return self.service.unsubscribe(uow, uid, ae)
        await self._run(job)
        return done(200)

    @answers("suspend")
    async def suspend(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 11.12: 200 (the worklist subscriptions only)."""
        uid, ae = self._uid(request), parse_ae(request.match_info["ae"])
        if uid not in (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION):
            raise BadRequest(f"suspending applies to {GLOBAL_SUBSCRIPTION} and "
                             f"{FILTERED_SUBSCRIPTION} only")
        await self._run(lambda uow: self.service.suspend_global(uow, uid, ae))
        return done(200)

    @answers("open event channel")
    async def channel(self, request: web.Request) -> web.StreamResponse:
        """PS3.18 8.10.4: the WebSocket of one subscriber AE."""
        return await open_channel(self.hub, request, parse_ae(request.match_info["ae"]))


def _count(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise BadRequest(f"{name} {text[:12]!r} must be a whole number")
    return int(text)
