"""UPS over DIMSE (PS3.4 Annex CC): Push (N-CREATE, N-ACTION request cancellation), Pull
(C-FIND, N-GET, N-SET, N-ACTION change state), Watch (N-ACTION subscribe, unsubscribe,
suspend) on the broker's steps; each request runs as one writer job of broker.flows.ups,
answered after the commit, with the status of PS3.4 Table CC.2-1 and an Error Comment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.events import Event

from broker.dicom import pynetdicom_patches
from broker.dicom.encoder import encode
from broker.dicom.mwl import (
    SPECIFIC_CHARACTER_SET,
    ParsedQuery,
    QueryLimits,
    add_match,
    nodes_of,
    return_key,
    to_pydicom,
)
from broker.dicom.pynetdicom_patches.encoded import PreEncoded
from broker.dicom.status import (
    CANCEL,
    INVALID_ATTRIBUTE_VALUE,
    PENDING,
    PENDING_WARNING,
    PROCESSING_FAILURE,
    SUCCESS,
    UNABLE_TO_PROCESS,
    DimseFailure,
    status_dataset,
)
from broker.dicom.workitem import STATION_SCHEME, attrs_of, workitem_attrs
from broker.logs import event
from broker.model.ups import ActionType, UpsState
from broker.model.worklist import Match, WorklistQuery, wildcard_match
from broker.store.errors import StoreError
from broker.store.ports import WorklistReader
from broker.store.ups import query_to_json
from broker.store.worklist_query import STATION, UPS_MATCHABLE, WorklistRow
from broker.workflow.ups import UpsError

if TYPE_CHECKING:
    from broker.flows.ups import Result, UpsService
    from broker.store.unit_of_work import Job

log = logging.getLogger("broker.ups")
#: a UPS's state as the step statuses that read as it (ProcedureStepState matching)
STATUSES_OF = {UpsState.SCHEDULED: ("SCHEDULED", "ARRIVED", "READY"),
               UpsState.IN_PROGRESS: ("STARTED", "DEPARTED"),
               UpsState.COMPLETED: ("COMPLETED",),
               UpsState.CANCELED: ("CANCELED", "DISCONTINUED")}
REQUEST_KEYS = frozenset({"AccessionNumber", "RequestedProcedureID", "StudyInstanceUID"})
RECEIVING_AE = Tag(0x0074, 0x1234)
DELETION_LOCK = Tag(0x0074, 0x1230)
TRANSACTION_UID = Tag(0x0008, 0x1195)
#: run a job in the store's writer from this thread (``Writer.run_sync``)
RunJob = Callable[["Job[Any]"], Any]


def parse_ups_identifier(identifier: Dataset, limits: QueryLimits | None = None
                         ) -> ParsedQuery:
    """A UPS C-FIND identifier as the worklist's query: the same matching rules on the same
    columns (ProcedureStepState as the step statuses, a station code's value as the station
    AE title, the Referenced Request Sequence's keys as the order's)."""
    parsed = ParsedQuery(WorklistQuery(include_hidden=True, workitems=True), [],
                         limits=limits or QueryLimits(), matchable=UPS_MATCHABLE)
    for elem in identifier:
        if elem.tag == SPECIFIC_CHARACTER_SET or elem.tag.element == 0:
            continue
        parsed.keys.append(return_key(elem))
        keyword = elem.keyword
        if keyword == "ProcedureStepState":
            value = str(elem.value or "").strip()
            if value and value != "*":  # a CS value may hold wildcards
                states = [st for st in UpsState if wildcard_match(value, st.value)]
                if not states and not ("*" in value or "?" in value):
                    raise DimseFailure(UNABLE_TO_PROCESS, f"ProcedureStepState {value!r} is "
                                       "not a UPS state")
                statuses = tuple(s for st in states for s in STATUSES_OF[st]) or ("-",)
                parsed.query.matches.append(Match("ScheduledProcedureStepStatus", "list",
                                                  values=statuses))
        elif keyword == "ScheduledStationNameCodeSequence":
            items = list(elem.value or [])
            code = str(items[0].get("CodeValue", "") or "").strip() if items else ""
            for other in ("CodingSchemeDesignator", "CodeMeaning"):  # matched by value only
                given = str(items[0].get(other, "") or "").strip() if items else ""
                if given and given != "*" and not (other == "CodingSchemeDesignator"
                                                   and given == STATION_SCHEME):
                    parsed.unsupported.append(f"ScheduledStationNameCodeSequence/{other}")
            if code and code != "*":
                kind = "wildcard" if "*" in code or "?" in code else "single"
                parsed.query.matches.append(Match(STATION, kind, code))
        elif keyword == "ReferencedRequestSequence":
            for inner in (elem.value[0] if elem.value else []):
                if inner.keyword in REQUEST_KEYS:
                    add_match(inner, parsed)
                elif str(inner.value or "").strip():
                    parsed.unsupported.append(f"ReferencedRequestSequence/{inner.keyword}")
        else:
            add_match(elem, parsed)
    return parsed


def row_attrs(row: WorklistRow) -> dict[str, Any]:
    """A C-FIND match as the workitem's attributes."""
    state = {"SCHEDULED": UpsState.SCHEDULED, "ARRIVED": UpsState.SCHEDULED,
             "READY": UpsState.SCHEDULED, "STARTED": UpsState.IN_PROGRESS,
             "DEPARTED": UpsState.IN_PROGRESS, "COMPLETED": UpsState.COMPLETED}.get(
        str(row.step.get("ScheduledProcedureStepStatus")), UpsState.CANCELED)
    return workitem_attrs(row.uid, state, row.patient, row.procedure, row.step, row.own)


class UpsScp:
    """The UPS handlers of the broker's AE; ``run`` runs a writer job and waits for it."""

    def __init__(self, service: UpsService, run: RunJob,
                 reader: Callable[[], WorklistReader], limits: QueryLimits | None = None,
                 charset: str = "ISO_IR 192",
                 on_queued: Callable[[], None] | None = None) -> None:
        self.service = service
        self.run = run
        self.reader = reader
        self.limits = limits or QueryLimits()
        self.charset = charset
        self.on_queued = on_queued

    def _attempt(self, what: str, uid: str, calling: str,
                 job: Callable[[Any], Result]) -> tuple[Dataset, Result | None]:
        """Run one request's job; its status dataset (with the Error Comment) and result."""
        try:
            result: Result = self.run(job)
        except UpsError as exc:
            event(log, "ups_refused", logging.WARNING, request=what, sop_instance_uid=uid,
                  calling_ae=calling, status=f"0x{exc.status:04X}", error=exc.comment)
            return status_dataset(exc.status, exc.comment), None
        except StoreError as exc:
            event(log, "ups_failed", logging.ERROR, request=what, sop_instance_uid=uid,
                  calling_ae=calling, error=str(exc))
            return status_dataset(PROCESSING_FAILURE, f"the store is unavailable: {exc}"), None
        if result.queued and self.on_queued is not None:
            self.on_queued()
        if result.warning:
            return status_dataset(result.warning, result.comment), result
        return status_dataset(SUCCESS, ""), result

    def _answer(self, result: Result | None, keys: list[Any] | None = None) -> Dataset | None:
        if result is None or not result.attrs:
            return None
        return to_pydicom(nodes_of(keys or [], result.attrs), self.charset)

    # -- N-CREATE (Push) ----------------------------------------------------------------
    def on_n_create(self, ev: Event) -> tuple[Dataset, Dataset | None]:
        request: Any = ev.request
        uid = str(request.AffectedSOPInstanceUID or "") or generate_uid()
        calling = ev.assoc.requestor.ae_title.strip()
        try:
            attrs = attrs_of(ev.attribute_list)
        except Exception as exc:
            return status_dataset(0x0107, f"the attribute list cannot be read: {exc}"), None
        status, result = self._attempt("N-CREATE", uid, calling, lambda uow: (
            self.service.create(uow, uid, attrs, calling)))
        answer = self._answer(result)
        if result is not None:  # the UID the broker gave, when the request had none
            answer = answer if answer is not None else Dataset()
            answer.AffectedSOPInstanceUID = uid  # pynetdicom moves it to the response
        return status, answer

    # -- N-SET, N-GET (Pull) ------------------------------------------------------------
    def on_n_set(self, ev: Event) -> tuple[Dataset, Dataset | None]:
        request: Any = ev.request
        uid = str(request.RequestedSOPInstanceUID or "")
        calling = ev.assoc.requestor.ae_title.strip()
        modifications = ev.modification_list
        given = str(modifications.get(TRANSACTION_UID).value) if TRANSACTION_UID in \
            modifications else ""
        changes = attrs_of(modifications)
        changes.pop("TransactionUID", None)
        status, result = self._attempt("N-SET", uid, calling, lambda uow: (
            self.service.update(uow, uid, changes, given, calling)))
        return status, self._answer(result)

    def on_n_get(self, ev: Event) -> tuple[Dataset, Dataset | None]:
        request: Any = ev.request
        uid = str(request.RequestedSOPInstanceUID or "")
        calling = ev.assoc.requestor.ae_title.strip()
        listed = request.AttributeIdentifierList
        if listed is None:
            listed = []
        elif not isinstance(listed, list | tuple) and type(listed).__name__ != "MultiValue":
            listed = [listed]  # one tag: pydicom gives it alone, not as a list
        wanted = [int(t) for t in listed]

        def job(uow: Any) -> Result:
            from broker.flows.ups import Result
            return Result(0, self.service.attrs(self.service.get(uow, uid)))
        status, result = self._attempt("N-GET", uid, calling, job)
        if result is None:
            return status, None
        answer = to_pydicom(nodes_of([], result.attrs), self.charset)
        if wanted:
            for elem in list(answer):
                if int(elem.tag) not in wanted and elem.tag != SPECIFIC_CHARACTER_SET:
                    del answer[elem.tag]
        return status, answer

    # -- N-ACTION (Push, Pull, Watch) ---------------------------------------------------
    def on_n_action(self, ev: Event) -> tuple[Dataset, Dataset | None]:
        request: Any = ev.request
        uid = str(request.RequestedSOPInstanceUID or "")
        calling = ev.assoc.requestor.ae_title.strip()
        try:
            action = ActionType(int(request.ActionTypeID))
        except ValueError:
            return status_dataset(0x0123, f"Action Type ID {request.ActionTypeID} is not one "
                                  "of UPS (1 to 5)"), None
        info = ev.action_information if request.ActionInformation is not None else Dataset()
        s = self.service
        if action is ActionType.CHANGE_STATE:
            state = str(info.get("ProcedureStepState", "") or "")
            given = str(info.get(TRANSACTION_UID).value) if TRANSACTION_UID in info else ""
            status, _ = self._attempt("change state", uid, calling, lambda uow: (
                s.change_state(uow, uid, state, given, calling)))
            return status, _reply(info, ("ProcedureStepState", "TransactionUID"))
        if action is ActionType.REQUEST_CANCEL:
            reason = str(info.get("ReasonForCancellation", "") or "")
            contact = {k: str(info.get(k)) for k in ("ContactURI", "ContactDisplayName")
                       if info.get(k)}
            status, _ = self._attempt("request cancellation", uid, calling, lambda uow: (
                s.request_cancel(uow, uid, reason, calling, contact)))
            return status, None
        receiving = str(info.get(RECEIVING_AE).value).strip() if RECEIVING_AE in info else \
            calling
        if action is ActionType.SUBSCRIBE:
            given = str(info.get(DELETION_LOCK).value or "").strip().upper() if \
                DELETION_LOCK in info else "FALSE"
            if given not in ("TRUE", "FALSE"):
                return status_dataset(INVALID_ATTRIBUTE_VALUE, f"Deletion Lock {given!r} is "
                                      "neither TRUE nor FALSE"), None
            lock = given == "TRUE"
            keys = Dataset()
            for elem in info:
                if elem.tag not in (RECEIVING_AE, DELETION_LOCK, SPECIFIC_CHARACTER_SET):
                    keys.add(elem)
            try:
                parsed = parse_ups_identifier(keys, self.limits) if len(keys) else None
            except DimseFailure as exc:
                return exc.dataset(), None
            if parsed is not None and parsed.unsupported:  # never a wider filter than asked
                return status_dataset(INVALID_ATTRIBUTE_VALUE, "the broker cannot filter on "
                                      + ", ".join(parsed.unsupported)), None
            query = query_to_json(parsed.query) if parsed is not None else None
            status, _ = self._attempt("subscribe", uid, receiving, lambda uow: (
                s.subscribe(uow, uid, receiving, lock, query)))
            return status, None
        if action is ActionType.UNSUBSCRIBE:
            status, _ = self._attempt("unsubscribe", uid, receiving, lambda uow: (
                s.unsubscribe(uow, uid, receiving)))
            return status, None
        status, _ = self._attempt("suspend", uid, receiving, lambda uow: (
            s.suspend_global(uow, uid, receiving)))
        return status, None

    # -- C-FIND (Pull, Watch, Query) ----------------------------------------------------
    def on_find(self, ev: Event) -> Iterator[tuple[Any, Any]]:
        calling = ev.assoc.requestor.ae_title.strip()
        try:
            parsed = parse_ups_identifier(ev.identifier, self.limits)
        except DimseFailure as exc:
            event(log, "ups_query_refused", logging.WARNING, calling_ae=calling,
                  status=f"0x{exc.status:04X}")
            yield exc.dataset(), None
            return
        if "SOPInstanceUID" in parsed.query.keywords():
            self.run(lambda uow: uow.ups.assign_uids())  # a UID given out before it is kept
        status = PENDING_WARNING if parsed.unsupported else PENDING
        syntax = ev.context.transfer_syntax
        implicit = syntax == ImplicitVRLittleEndian
        # answers encoded by the worklist's own encoder where the speed-ups are on
        pre_encode = pynetdicom_patches.fast_path_on() and (
            implicit or syntax == ExplicitVRLittleEndian)
        reader = self.reader()
        matches = 0
        try:
            for row in reader.search(parsed.query):
                if ev.is_cancelled:
                    yield CANCEL, None
                    return
                matches += 1
                nodes = nodes_of(parsed.keys, row_attrs(row))
                yield status, (PreEncoded(encode(nodes, self.charset, implicit), implicit,
                                          partial(to_pydicom, nodes, self.charset))
                               if pre_encode else to_pydicom(nodes, self.charset))
        except StoreError as exc:
            yield status_dataset(PROCESSING_FAILURE, f"the store is unavailable: {exc}"), None
            return
        finally:
            reader.close()
        event(log, "ups_query", calling_ae=calling, matches=matches,
              keys=",".join(sorted(parsed.query.keywords())) or "-")
        yield SUCCESS, None


def _reply(info: Dataset, keywords: tuple[str, ...]) -> Dataset:
    """The N-ACTION reply of a state change: the state and Transaction UID asked for."""
    out = Dataset()
    for keyword in keywords:
        if keyword in info:
            setattr(out, keyword, info.get(keyword))
    return out

