"""The completion flow on a real SQLite store: an MPPS COMPLETED asks the archive to commit
its instances; the report, the IAN, the outbox's settling, the timer and the start-up
recovery move the completion rule; each notice is queued once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from pydicom.uid import generate_uid

from broker.dicom.ian import AvailableInstance, Notification
from broker.dicom.mpps import summary
from broker.dicom.status import failure_of
from broker.flows.completion import CompletionFlow
from broker.flows.mpps_in import MppsIn
from broker.model.errors import DomainError, ErrorKind
from broker.store.repo import OutboxRow
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.workflow.completion import ACTION_TYPE, Completion, CompletionPolicy
from broker.workflow.notify import StatusNotifier
from tests.support.db import Db
from tests.support.mpps import UID, completion, mpps
from tests.unit.flows.conftest import SHIPPED

INSTANCE, SOP_CLASS, SERIES = "1.2.3.4.5.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"


def completion_flow(store: Writer, report_timeout: float = 600,
                    sweep_interval: float = 1.0) -> CompletionFlow:
    rule = Completion(lambda: SHIPPED, StatusNotifier(lambda: SHIPPED, ["ris"]),
                      CompletionPolicy(archive="archive", report_timeout=report_timeout),
                      summary)
    return CompletionFlow(store, rule, sweep_interval=sweep_interval)


def performed(store: Writer, flow: CompletionFlow) -> str:
    """An MPPS of order(1) taken to COMPLETED through the MPPS-in flow; its UID."""
    uid = generate_uid()
    mpps_in = MppsIn(store, notify=flow.completion.notifier, final=flow.mpps_final)
    mpps_in.create(uid, mpps().to_json_dict(), "CT01")
    mpps_in.update(uid, completion().to_json_dict())
    return uid


def requests(store: Writer) -> list[OutboxRow]:
    """The commitment requests in the outbox."""
    return [OutboxRow(*r) for r in Db(store.path).query(
        "SELECT id, destination, order_key, control_id, message_type, payload, state,"
        " attempts, next_attempt_at, last_error FROM outbox WHERE message_type = ?"
        " ORDER BY id", ACTION_TYPE)]


def notices(store: Writer) -> list[str]:
    """The completion notices queued for the RIS (their OBR-25 result status)."""
    found = []
    for (payload,) in Db(store.path).query(
            "SELECT payload FROM outbox WHERE message_type LIKE 'ORU%' ORDER BY id"):
        obr = next(s for s in payload.split("\r") if s.startswith("OBR|"))
        found.append(obr.split("|")[25])
    return found


def states(store: Writer) -> tuple[list[Any], list[Any]]:
    db = Db(store.path)
    return (db.query("SELECT state FROM commitments ORDER BY id"),
            db.query("SELECT state FROM completions ORDER BY mpps_fk"))


def settle(store: Writer, flow: CompletionFlow, row: OutboxRow, outcome: str,
           reason: str = "") -> None:
    store.run_sync(lambda uow: flow.settled(uow, row, outcome, reason))


def ian(mpps_uid: str, availability: str = "ONLINE") -> Notification:
    return Notification(UID, [mpps_uid], "A0000001", [
        AvailableInstance(INSTANCE, SOP_CLASS, SERIES, availability, "ARCHIVE")])


def test_a_completed_mpps_asks_the_archive_to_commit_its_instances(store: Writer) -> None:
    flow = completion_flow(store)
    uid = performed(store, flow)
    [request] = requests(store)
    assert request.destination == "archive" and request.order_key == uid
    assert json.loads(request.payload) == {"transaction_uid": request.control_id, "mpps": uid,
                                           "instances": [[SOP_CLASS, INSTANCE]]}
    assert states(store) == ([("queued",)], [("waiting",)])


def test_report_and_availability_complete_the_procedure_once(store: Writer) -> None:
    flow = completion_flow(store)
    uid = performed(store, flow)
    [request] = requests(store)
    settle(store, flow, request, "delivered")
    assert states(store)[0] == [("requested",)]
    assert flow.report(request.control_id, [INSTANCE], {})
    assert notices(store) == []  # committed, not yet reported available
    assert flow.availability(generate_uid(), "ARCHIVE", ian(uid), {}) == 1
    assert notices(store) == ["F"]
    assert states(store) == ([("committed",)], [("sent",)])
    assert flow.report(request.control_id, [INSTANCE], {})  # a resent report
    assert notices(store) == ["F"]


def test_a_report_of_an_unknown_transaction_is_not_known(store: Writer) -> None:
    assert not completion_flow(store).report("1.2.3.999", [INSTANCE], {})


def test_a_second_ian_with_the_same_uid_is_a_duplicate(store: Writer) -> None:
    flow = completion_flow(store)
    uid = performed(store, flow)
    ian_uid = generate_uid()
    flow.availability(ian_uid, "ARCHIVE", ian(uid, "NEARLINE"), {})
    before = Db(store.path).query("SELECT * FROM instance_availability")
    with pytest.raises(DomainError) as refused:
        flow.availability(ian_uid, "ARCHIVE", ian(uid, "OFFLINE"), {})
    assert refused.value.kind is ErrorKind.DUPLICATE and ian_uid in refused.value.message
    assert failure_of(refused.value).status == 0x0111
    assert Db(store.path).query("SELECT * FROM instance_availability") == before


def test_a_request_the_archive_refuses_for_good_is_a_commitment_failure(store: Writer) -> None:
    flow = completion_flow(store)
    performed(store, flow)
    [request] = requests(store)
    settle(store, flow, request, "dead", "archive: 0x0110 processing failure")
    assert notices(store) == ["X"]
    assert states(store) == ([("failed",)], [("commitment_failed",)])


def test_other_outbox_entries_do_not_touch_commitments(store: Writer) -> None:
    flow = completion_flow(store)
    performed(store, flow)
    [request] = requests(store)
    settle(store, flow, dataclasses.replace(request, message_type="ORM^O01"), "dead")
    assert states(store) == ([("queued",)], [("waiting",)])


async def test_the_timer_sends_a_partial_notice_when_no_report_comes(store: Writer) -> None:
    flow = completion_flow(store, report_timeout=0.0, sweep_interval=0.05)
    await asyncio.to_thread(performed, store, flow)
    [request] = requests(store)
    await flow.start()
    try:
        await asyncio.to_thread(settle, store, flow, request, "delivered")
        for _ in range(200):
            if notices(store):
                break
            await asyncio.sleep(0.05)
    finally:
        await flow.stop()
    assert notices(store) == ["A"]
    assert states(store) == ([("timed_out",)], [("partial",)])


async def test_the_start_asks_again_for_reports_the_archive_owes(store: Writer) -> None:
    flow = completion_flow(store)
    await asyncio.to_thread(performed, store, flow)
    [request] = requests(store)
    await asyncio.to_thread(settle, store, flow, request, "delivered")

    restarted = completion_flow(store)
    await restarted.start()
    await restarted.stop()
    first, again = requests(store)
    assert again.control_id == first.control_id  # the same Transaction UID
    assert json.loads(again.payload)["instances"] == [[SOP_CLASS, INSTANCE]]
    assert states(store)[0] == [("queued",)]
