"""Unified Procedure Step on the broker's one set of steps: each request is a write job
(create, update, change state, request cancellation, subscribe) that moves the step as an
MPPS would, tells the RIS through the outbox as an MPPS does, and queues the event reports
of the workitem's subscribers in the same transaction (durable, retried, in order).

The jobs are shared by the DIMSE SCP (broker/dicom/ups_scp.py, run from association
threads) and UPS-RS; every refusal is an UpsError with the status of PS3.4 Table CC.2-1.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.dicom.mwl import nodes_of, to_pydicom
from broker.dicom.workitem import STATIONS, from_create, merge_set, performed, workitem_attrs
from broker.logs import event
from broker.model.orders import Attrs, PatientKey, StepStatus
from broker.model.ups import (
    FILTERED_SUBSCRIPTION,
    GLOBAL_SUBSCRIPTION,
    WEB_PERFORMER,
    EventType,
    UpsState,
)
from broker.store.orders import StepChange, StepRow
from broker.store.unit_of_work import UnitOfWork
from broker.store.ups import OPTED_OUT, Workitem
from broker.workflow import ups as rules
from broker.workflow.ups import UpsError
from broker.workflow.ups_create import check_create, created_comment, dropped, modifications
from broker.workflow.ups_records import (
    ASSIGNMENT,
    RIS_OWNED,
    SCHEDULING,
    event_info,
    step_changes,
    summary_of,
    with_cancellation,
)

log = logging.getLogger("broker.ups")
#: a final performed procedure: (uow, mpps row id, its UID, status, summary, steps) → queued
Final = Callable[[UnitOfWork, int, str, str, dict[str, Any], list[int]], int]
#: what tells the RIS of a step's new status (broker.workflow.notify.StatusNotifier)
Notify = Callable[[UnitOfWork, list[int], str, dict[str, Any]], int]
#: the MPPS status whose status message a workitem's new state sends
RIS_STATUS = {UpsState.IN_PROGRESS: "IN PROGRESS", UpsState.COMPLETED: "COMPLETED",
              UpsState.CANCELED: "DISCONTINUED"}
#: seconds a "nobody subscribes" answer is kept (a subscription made on another broker of a
#: shared database reaches this one's HL7 path within it)
NO_SUBSCRIBER_TTL = 5.0
#: event reports a subscriber gets at most when it subscribes globally (the current state
#: of each workitem still to be done)
INITIAL_REPORTS = 1000


def destination_of(ae_title: str) -> str:
    """The outbox destination of a subscriber's event reports."""
    return f"ups-events:{ae_title}"


@dataclass(slots=True)
class Result:
    """A request's outcome: a warning status (0: none), the workitem's attributes, how many
    outbox messages were queued (event reports, RIS status messages)."""

    warning: int = 0
    attrs: Attrs = field(default_factory=dict)
    queued: int = 0
    comment: str = ""


class UpsService:
    """``subscribers``: AE title → (host, port) of every AE that may subscribe (an unknown
    one is C308); ``notify`` queues the RIS's status messages."""

    def __init__(self, subscribers: Mapping[str, Any], notify: Notify | None = None,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.subscribers = dict(subscribers)
        self.notify = notify
        self.on_queued = on_queued
        #: a performed procedure became final (broker.flows.completion.CompletionFlow
        #: .mpps_final): storage commitment and the completion notice, where configured
        self.final: Final | None = None
        self._none_until = 0.0

    # -- UPS Push ---------------------------------------------------------------------------
    def create(self, uow: UnitOfWork, uid: str, attrs: Attrs, calling_ae: str) -> Result:
        """UPS Push N-CREATE: a SCHEDULED workitem with its patient, requested procedure and
        step; a Warning B300 names what the workitem holds otherwise than the request."""
        check_create(attrs)
        if uow.ups.workitem(uid) is not None:
            raise UpsError(rules.DUPLICATE_INSTANCE, f"a workitem with SOP Instance UID {uid} "
                           "exists")
        left_out = dropped(attrs)
        given = {k: v for k, v in attrs.items() if k not in left_out}
        patient, procedure, step, own = from_create(uid, given)
        key = PatientKey(str(patient["PatientID"]), str(patient.get("IssuerOfPatientID", "")))
        placed = uow.orders.place_order(key, patient, procedure, f"UPS_{calling_ae}"[:20],
                                        [step], StepStatus.SCHEDULED)
        if placed.procedure_fk is None:
            raise UpsError(rules.DUPLICATE_INSTANCE, f"Study Instance UID "
                           f"{procedure['StudyInstanceUID']} belongs to another order: give "
                           "the workitem a study of its own")
        found = uow.mpps.steps_of_study(str(procedure["StudyInstanceUID"]))
        uow.ups.set_uid(found[0], uid)
        item = uow.ups.workitem(uid)
        assert item is not None
        item.attrs = own
        uow.ups.save(item)
        queued = self._report(uow, item, EventType.STATE_REPORT)
        stored = self.attrs(item)
        changed = modifications(given, stored)
        warning, comment = created_comment(changed, left_out)
        event(log, "ups_created", sop_instance_uid=uid, calling_ae=calling_ae,
              modified=",".join(changed) or None, left_out=",".join(left_out) or None)
        return Result(warning, stored, queued, comment)

    # -- UPS Pull -----------------------------------------------------------------------------
    def get(self, uow: UnitOfWork, uid: str) -> Workitem:
        item = uow.ups.workitem(uid)
        if item is None:
            raise UpsError(rules.NO_SUCH_WORKITEM, f"no workitem has SOP Instance UID {uid}")
        return item

    def update(self, uow: UnitOfWork, uid: str, changes: Attrs, transaction_uid: str,
               calling_ae: str) -> Result:
        """N-SET: the workitem's own attributes (progress, performed procedure, …)."""
        item = self.get(uow, uid)
        rules.check_update(item.state, item.transaction_uid, transaction_uid)
        if "ProcedureStepState" in changes:
            raise UpsError(rules.INVALID_VALUE, "Procedure Step State changes by N-ACTION "
                           "(Change State) only, not by N-SET")
        progress = "ProcedureStepProgressInformationSequence" in changes
        assigned = bool(ASSIGNMENT.intersection(changes))
        self._check_owned(item, changes)
        scheduling = step_changes(item.step, changes)
        if scheduling != item.step:  # the worklist (and C-FIND) see the new scheduling
            uow.orders.update_steps([StepChange(
                StepRow(item.step_id, str(item.step.get("ScheduledProcedureStepID", "")),
                        item.status, item.step), scheduling, item.status)])
            item.step = scheduling
        item.attrs = merge_set(item.attrs or {}, {k: v for k, v in changes.items()
                                                  if k not in SCHEDULING or k == STATIONS})
        uow.ups.save(item)
        queued = self._report(uow, item, EventType.PROGRESS_REPORT) if progress else 0
        if assigned:
            queued += self._report(uow, item, EventType.ASSIGNED)
        event(log, "ups_updated", sop_instance_uid=uid, calling_ae=calling_ae)
        return Result(0, self.attrs(item), queued)

    def _check_owned(self, item: Workitem, changes: Attrs) -> None:
        """The patient's and the order's attributes are the RIS's: an N-SET may repeat
        them, not change them."""
        current = self.attrs(item)
        for key in RIS_OWNED.intersection(changes):
            if changes[key] not in (None, "", []) and changes[key] != current.get(key):
                raise UpsError(rules.INVALID_VALUE, f"{key} comes from the RIS's order and "
                               "cannot be changed by N-SET (send the change through the RIS)")

    def change_state(self, uow: UnitOfWork, uid: str, requested: str, transaction_uid: str,
                     calling_ae: str) -> Result:
        """N-ACTION Change State: claim (IN PROGRESS), COMPLETED or CANCELED by the
        performer; the step moves as an MPPS would move it, the RIS is told as it is of an
        MPPS, subscribers get a state report."""
        item = self.get(uow, uid)
        move = rules.change_state(item.state, item.transaction_uid, requested,
                                  transaction_uid, performed(item.attrs or {}))
        if move.warning:
            return Result(move.warning, self.attrs(item), 0, f"the workitem is already "
                          f"{item.state}")
        if move.transaction_uid is not None:
            item.transaction_uid, item.performer = move.transaction_uid, calling_ae
        if move.step_status is not None:
            uow.mpps.set_step_status(item.step_id, move.step_status)
            item.status = move.step_status
        uow.ups.save(item)
        queued = self._report(uow, item, EventType.STATE_REPORT)
        summary = summary_of(item, calling_ae, RIS_STATUS)
        if self.notify is not None:
            queued += self.notify(uow, [item.step_id], RIS_STATUS[move.state], summary)
        if move.state is UpsState.COMPLETED and self.final is not None:
            queued += self._performed(uow, item, summary)
        event(log, "ups_state_changed", sop_instance_uid=uid, state=move.state.value,
              calling_ae=calling_ae)
        return Result(0, self.attrs(item), queued)

    def request_cancel(self, uow: UnitOfWork, uid: str, reason: str, calling_ae: str,
                       contact: Attrs | None = None) -> Result:
        """N-ACTION Request Cancellation: a SCHEDULED workitem is CANCELED now; for one IN
        PROGRESS its performer (and every subscriber) is told, and decides."""
        item = self.get(uow, uid)
        outcome = rules.request_cancel(item.state)
        if outcome.warning:
            return Result(outcome.warning, self.attrs(item), 0, "the workitem is already "
                          "CANCELED")
        item.cancel_requested, item.cancel_reason = True, reason[:1024]
        item.attrs = with_cancellation(item.attrs or {}, reason, contact or {},
                                       uow.now if outcome.canceled else None)
        if outcome.canceled:
            uow.mpps.set_step_status(item.step_id, StepStatus.CANCELED)
            item.status = StepStatus.CANCELED
            uow.ups.save(item)
            queued = self._report(uow, item, EventType.STATE_REPORT, {
                "ReasonForCancellation": reason[:1024]} if reason else {})
        else:
            self._check_performer_reached(uow, item)
            uow.ups.save(item)
            queued = self._report(uow, item, EventType.CANCEL_REQUESTED, {
                "RequestingAE": calling_ae,
                **({"ReasonForCancellation": reason[:1024]} if reason else {}),
                **(contact or {})})
        event(log, "ups_cancel_requested", sop_instance_uid=uid, calling_ae=calling_ae,
              canceled=outcome.canceled)
        return Result(0, self.attrs(item), queued)

    def _check_performer_reached(self, uow: UnitOfWork, item: Workitem) -> None:
        """A cancellation request of an IN PROGRESS workitem is for its performer: refused
        (C312) when no Cancel Requested report would reach it — the performer (a DIMSE one
        by its AE title; one that claimed over UPS-RS or by MPPS through any subscriber)
        does not subscribe to the workitem's events."""
        told = self._recipients(uow, item)
        performer = item.performer.strip()
        if performer and performer != WEB_PERFORMER:
            if performer in told:
                return
            raise UpsError(rules.PERFORMER_NOT_CONTACTED, f"performer {performer} does not "
                           "subscribe to this workitem's events: the cancellation request "
                           "cannot reach it; ask it (or its operator) directly")
        if not told:
            raise UpsError(rules.PERFORMER_NOT_CONTACTED, "nobody subscribes to this "
                           "workitem's events: the cancellation request cannot reach its "
                           "performer; ask it (or its operator) directly")

    # -- UPS Watch ----------------------------------------------------------------------------
    def subscribe(self, uow: UnitOfWork, uid: str, ae_title: str, deletion_lock: bool,
                  filter_query: dict[str, Any] | None = None, web: bool = False) -> Result:
        """Subscribe ``ae_title`` to one workitem, or globally (the well-known UIDs; for the
        filtered one, ``filter_query`` is broker.store.ups.query_to_json of its keys); it
        gets a state report of each workitem it now watches. Over DIMSE only the AEs of
        ``subscribers`` may subscribe; ``web`` (UPS-RS) takes any AE title, whose reports
        wait in ``ups_events`` for its WebSocket unless it is one of ``subscribers``."""
        ae_title = ae_title.strip()
        if not web and ae_title not in self.subscribers:
            raise UpsError(rules.UNKNOWN_RECEIVING_AE, f"receiving AE {ae_title!r} is not in "
                           "ups.subscribers (its host and port): add it there first")
        if uid in (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION):
            filter_json = json.dumps(filter_query, sort_keys=True) if (
                uid == FILTERED_SUBSCRIPTION and filter_query) else ""
            uow.ups.subscribe(ae_title, "", filter_json, deletion_lock)
            self._none_until = 0.0
            queued = 0
            for item in uow.ups.open_workitems(INITIAL_REPORTS):
                if not filter_json or uow.ups.matches(json.loads(filter_json), item.step_id):
                    queued += self._queue(uow, ae_title, item, EventType.STATE_REPORT, {})
            event(log, "ups_subscribed", receiving_ae=ae_title, scope="global",
                  filtered=bool(filter_json))
            return Result(0, {}, queued)
        item = self.get(uow, uid)
        uow.ups.subscribe(ae_title, uid, "", deletion_lock)
        self._none_until = 0.0
        queued = self._queue(uow, ae_title, item, EventType.STATE_REPORT, {})
        event(log, "ups_subscribed", receiving_ae=ae_title, sop_instance_uid=uid)
        return Result(0, {}, queued)

    def unsubscribe(self, uow: UnitOfWork, uid: str, ae_title: str) -> Result:
        """End ``ae_title``'s subscription to one workitem (also when it came from a global
        subscription: the workitem is then left out of it), or all of them (the global
        UIDs)."""
        if uid in (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION):
            uow.ups.unsubscribe(ae_title.strip(), None)
        else:
            self.get(uow, uid)
            uow.ups.unsubscribe(ae_title.strip(), uid)
            uow.ups.subscribe(ae_title.strip(), uid, OPTED_OUT, False)
        event(log, "ups_unsubscribed", receiving_ae=ae_title, sop_instance_uid=uid)
        return Result()

    def suspend_global(self, uow: UnitOfWork, uid: str, ae_title: str) -> Result:
        if uid not in (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION):
            raise UpsError(rules.ACTION_NOT_APPROPRIATE, "suspending applies to the global "
                           f"subscription ({GLOBAL_SUBSCRIPTION}) only")
        ae = ae_title.strip()
        # the workitems it watches now stay watched; new ones no longer join (PS3.4 CC.2.3.3)
        for item in uow.ups.open_workitems(INITIAL_REPORTS):
            if uow.ups.watches(ae, item.uid):
                uow.ups.subscribe(ae, item.uid, "", False)
        uow.ups.suspend_global(ae)
        return Result()

    # -- events --------------------------------------------------------------------------
    def state_changed(self, uow: UnitOfWork, step_ids: list[int]) -> int:
        """State reports for steps another path moved (MPPS, HL7): queued for their
        subscribers in that path's transaction."""
        if not step_ids or not self._subscribed(uow):  # no read while nobody subscribes
            return 0
        return sum(self._report(uow, item, EventType.STATE_REPORT)
                   for item in uow.ups.workitems_of_steps(step_ids))

    def watch(self, uow: UnitOfWork, study_uids: list[str]) -> Callable[[], int] | None:
        """Before another path (HL7) changes the steps of ``study_uids``: what, called after
        the change, queues a state report of each workitem whose state it changed or that
        it created (None when nobody subscribes: nothing to read)."""
        if not study_uids or not self._subscribed(uow):
            return None
        before = uow.ups.states_of_studies(study_uids)

        def after() -> int:
            now = uow.ups.states_of_studies(study_uids)
            moved = [step for step, (status, _) in now.items()
                     if before.get(step, ("", ""))[0] != status]
            assigned = [step for step, (status, stations) in now.items()
                        if step in before and before[step][0] == status
                        and before[step][1] != stations]
            queued = self.state_changed(uow, moved)
            if assigned:
                queued += sum(self._report(uow, item, EventType.ASSIGNED)
                              for item in uow.ups.workitems_of_steps(assigned))
            return queued
        return after

    def _subscribed(self, uow: UnitOfWork) -> bool:
        """Whether any AE subscribes (a "no" is kept for ``NO_SUBSCRIBER_TTL`` seconds, so the
        HL7 path reads nothing more while nobody watches)."""
        now = time.monotonic()
        if now < self._none_until:
            return False
        if uow.ups.has_subscriptions():
            return True
        self._none_until = now + NO_SUBSCRIBER_TTL
        return False

    def _recipients(self, uow: UnitOfWork, item: Workitem) -> list[str]:
        """The AEs a report of ``item`` goes to: one each, whatever they subscribed by."""
        told: list[str] = []
        for sub in uow.ups.subscriptions(item.uid):
            if sub.ae_title in told:
                continue
            if sub.filter and not uow.ups.matches(json.loads(sub.filter), item.step_id):
                continue
            told.append(sub.ae_title)
        return told

    def _report(self, uow: UnitOfWork, item: Workitem, kind: EventType,
                info: Attrs | None = None) -> int:
        return sum(self._queue(uow, ae_title, item, kind, info or {})
                   for ae_title in self._recipients(uow, item))

    def _queue(self, uow: UnitOfWork, ae_title: str, item: Workitem, kind: EventType,
               info: Attrs) -> int:
        return self._send(uow, ae_title, item.uid, kind, {**event_info(kind, item), **info})

    def _send(self, uow: UnitOfWork, ae_title: str, uid: str, kind: EventType,
              info: Attrs) -> int:
        """One event report: through the outbox for a DIMSE subscriber (N-EVENT-REPORT),
        else into ``ups_events`` for a web one's WebSocket; in this job's transaction."""
        payload = {"event_type": int(kind), "sop_instance_uid": uid,
                   "receiving_ae": ae_title, "info": info}
        text = json.dumps(payload, ensure_ascii=False)
        if ae_title in self.subscribers:
            uow.outbox.enqueue(destination_of(ae_title), uid, uuid.uuid4().hex[:20],
                               f"UPS-EVENT-{int(kind)}", text)
        else:
            uow.ups.add_event(ae_title, uid, int(kind), text)
        return 1

    def scp_status(self, uow: UnitOfWork, status: str) -> int:
        """An SCP Status Change report (event type 4) to every subscribing AE: the broker
        RESTARTED (its subscriptions and workitems kept: WARM START) or GOING DOWN."""
        info = {"SCPStatus": status, "SubscriptionListStatus": "WARM START",
                "UnifiedProcedureStepListStatus": "WARM START"}
        if status != "RESTARTED":
            info = {"SCPStatus": status}
        queued = 0
        for ae_title in uow.ups.subscribing_aes():
            queued += self._send(uow, ae_title, GLOBAL_SUBSCRIPTION, EventType.SCP_STATUS_CHANGE,
                                 info)
        if queued:
            event(log, "ups_scp_status_reported", status=status, subscribers=queued)
        return queued

    def attrs(self, item: Workitem) -> Attrs:
        return workitem_attrs(item.uid, item.state, item.patient, item.procedure, item.step,
                              item.attrs)

    def _performed(self, uow: UnitOfWork, item: Workitem, summary: dict[str, Any]) -> int:
        """A completed workitem's performance, kept as the step's performed procedure (an
        MPPS record under the workitem's UID), so storage commitment of its output and the
        completion notice follow as they do an MPPS's."""
        assert self.final is not None
        dataset = to_pydicom(nodes_of([], item.attrs or {}), "ISO_IR 192").to_json_dict()
        pk = uow.mpps.insert_mpps(item.uid, "COMPLETED", dataset, item.performer, False)
        uow.mpps.link(pk, [item.step_id])
        return self.final(uow, pk, item.uid, "COMPLETED", summary, [item.step_id])
