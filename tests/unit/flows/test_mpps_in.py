"""The MPPS-in flow on a real SQLite store: what an N-CREATE / N-SET stores and queues, what
it refuses (as a domain error kind, answered with the same DIMSE status as before), and that
a refused request changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydicom.uid import generate_uid

from broker.dicom.status import failure_of
from broker.flows.mpps_in import MppsIn
from broker.model.errors import DomainError, ErrorKind
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.notify import StatusNotifier
from tests.support.db import Db
from tests.support.mpps import UID, completion, mpps
from tests.unit.flows.conftest import SHIPPED

Final = tuple[int, str, str, dict[str, Any], list[int]]


def flow(store: Writer, finals: list[Final] | None = None, timeout: float = 10.0) -> MppsIn:
    """The flow as the application wires it: RIS status messages to "ris", copies to "pacs",
    and ``finals`` recording each final MPPS (one outbox row queued for each)."""
    def final(uow: UnitOfWork, pk: int, uid: str, status: str, summary: dict[str, Any],
              steps: list[int]) -> int:
        if finals is None:
            return 0
        finals.append((pk, uid, status, summary, steps))
        uow.outbox.enqueue("archive", uid, generate_uid(), "N-ACTION", "{}")
        return 1
    return MppsIn(store, notify=StatusNotifier(lambda: SHIPPED, ["ris"]), final=final,
                  forward_to=["pacs"], store_timeout=timeout)


def outbox(store: Writer) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in Db(store.path).query(
        "SELECT destination, message_type FROM outbox ORDER BY id")]


def steps(store: Writer) -> list[str]:
    return [r[0] for r in Db(store.path).query("SELECT status FROM steps ORDER BY id")]


def snapshot(store: Writer) -> list[Any]:
    db = Db(store.path)
    return [db.query(f"SELECT * FROM {t} ORDER BY 1") for t in
            ("mpps", "mpps_steps", "steps", "outbox", "mpps_instances")]


def created(store: Writer, uid: str, finals: list[Final] | None = None) -> MppsIn:
    mpps_in = flow(store, finals)
    mpps_in.create(uid, mpps().to_json_dict(), "CT01")
    return mpps_in


def test_n_create_links_the_step_moves_it_and_queues_status_and_copy(store: Writer) -> None:
    uid = generate_uid()
    outcome = flow(store).create(uid, mpps().to_json_dict(), "CT01")
    assert (outcome.status, outcome.unscheduled, outcome.replayed) == ("IN PROGRESS", False,
                                                                     False)
    assert len(outcome.steps) == 1 and outcome.queued == 2
    assert steps(store) == ["STARTED"]
    assert [d for d, _ in outbox(store)] == ["ris", "pacs"]
    assert Db(store.path).query("SELECT sop_instance_uid, calling_ae, unscheduled FROM mpps") \
        == [(uid, "CT01", 0)]


def test_the_same_n_create_again_is_done_and_changes_nothing(store: Writer) -> None:
    uid = generate_uid()
    mpps_in = created(store, uid)
    before = snapshot(store)
    again = mpps_in.create(uid, mpps().to_json_dict(), "CT01")
    assert again.replayed and again.queued == 0 and len(again.steps) == 1
    assert snapshot(store) == before


def test_other_content_under_a_known_uid_is_a_duplicate(store: Writer) -> None:
    uid = generate_uid()
    mpps_in = created(store, uid)
    before = snapshot(store)
    with pytest.raises(DomainError) as refused:
        mpps_in.create(uid, mpps(PerformedProcedureStepID="PPS9").to_json_dict(), "CT01")
    assert refused.value.kind is ErrorKind.DUPLICATE
    assert uid in refused.value.message
    assert failure_of(refused.value).status == 0x0111
    assert snapshot(store) == before


@pytest.mark.parametrize(("overrides", "kind", "status", "names"), [
    ({"Modality": ...}, ErrorKind.MISSING_ATTRIBUTE, 0x0120, "Modality (0008,0060)"),
    ({"PerformedStationAETitle": ""}, ErrorKind.MISSING_VALUE, 0x0121,
     "PerformedStationAETitle"),
    ({"PerformedProcedureStepStatus": "COMPLETED"}, ErrorKind.INVALID_VALUE, 0x0106,
     "PerformedProcedureStepStatus"),
])
def test_a_bad_n_create_names_its_attribute_and_stores_nothing(
        store: Writer, overrides: dict[str, Any], kind: ErrorKind, status: int,
        names: str) -> None:
    before = snapshot(store)
    with pytest.raises(DomainError) as refused:
        flow(store).create(generate_uid(), mpps(**overrides).to_json_dict(), "CT01")
    assert refused.value.kind is kind and names in refused.value.message
    assert failure_of(refused.value).status == status
    assert snapshot(store) == before


def test_an_mpps_of_an_unknown_study_is_stored_unscheduled(store: Writer) -> None:
    outcome = flow(store).create(generate_uid(), mpps(study_uid="1.2.3.999",
                                                      accession="NONE").to_json_dict(), "CT01")
    assert outcome.unscheduled and outcome.steps == []
    assert steps(store) == ["SCHEDULED"]
    assert [d for d, _ in outbox(store)] == ["pacs"]  # no step: nothing for the RIS


def test_n_set_completed_moves_the_step_and_tells_the_final_hook_once(store: Writer) -> None:
    uid = generate_uid()
    finals: list[Final] = []
    mpps_in = created(store, uid, finals)
    outcome = mpps_in.update(uid, completion().to_json_dict())
    assert (outcome.status, outcome.moved, outcome.replayed) == ("COMPLETED", True, False)
    assert outcome.queued == 3  # the RIS, the final hook's row, the copy
    assert steps(store) == ["COMPLETED"]
    assert [(f[1], f[2], f[4]) for f in finals] == [(uid, "COMPLETED", outcome.steps)]
    assert finals[0][3]["instances"] == [("1.2.3.4.5.1", "1.2.840.10008.5.1.4.1.1.2",
                                          "1.2.3.4.5")]
    assert [d for d, _ in outbox(store)] == ["ris", "pacs", "ris", "archive", "pacs"]

    before = snapshot(store)
    again = mpps_in.update(uid, completion().to_json_dict())
    assert again.replayed and again.queued == 0 and len(finals) == 1
    assert snapshot(store) == before


def test_n_set_that_keeps_the_status_only_forwards(store: Writer) -> None:
    uid = generate_uid()
    mpps_in = created(store, uid)
    changes = completion("IN PROGRESS", end=False).to_json_dict()
    outcome = mpps_in.update(uid, changes)
    assert not outcome.moved and outcome.queued == 1
    assert [d for d, _ in outbox(store)] == ["ris", "pacs", "pacs"]


def test_n_set_of_an_unknown_mpps_is_not_found(store: Writer) -> None:
    with pytest.raises(DomainError) as refused:
        flow(store).update("1.2.3.4", completion().to_json_dict())
    assert refused.value.kind is ErrorKind.NOT_FOUND
    assert refused.value.message == "no MPPS with SOP Instance UID 1.2.3.4"
    assert failure_of(refused.value).status == 0x0112


@pytest.mark.parametrize("changes", [completion("DISCONTINUED"), completion("UNKNOWN")])
def test_a_final_mpps_may_no_longer_be_updated(store: Writer, changes: Any) -> None:
    uid = generate_uid()
    mpps_in = created(store, uid)
    mpps_in.update(uid, completion().to_json_dict())
    before = snapshot(store)
    with pytest.raises(DomainError) as refused:
        mpps_in.update(uid, changes.to_json_dict())
    assert refused.value.kind is ErrorKind.NO_LONGER_UPDATABLE
    assert refused.value.message == "the MPPS is COMPLETED and may no longer be updated"
    failure = failure_of(refused.value)
    assert (failure.status, failure.error_id) == (0x0110, 0xA710)
    assert snapshot(store) == before


def test_a_final_status_without_its_end_is_refused_before_anything_moves(
        store: Writer) -> None:
    uid = generate_uid()
    mpps_in = created(store, uid)
    before = snapshot(store)
    with pytest.raises(DomainError) as refused:
        mpps_in.update(uid, completion(end=False).to_json_dict())
    assert refused.value.kind is ErrorKind.MISSING_VALUE
    assert "PerformedProcedureStepEndDate" in refused.value.message
    assert snapshot(store) == before


@contextmanager
def busy(store: Writer) -> Iterator[None]:
    """The writer runs a job that waits until the block ends."""
    gate, entered = threading.Event(), threading.Event()

    def hold(uow: UnitOfWork) -> None:
        entered.set()
        gate.wait(30)

    holder = threading.Thread(target=store.run_sync, args=(hold,))
    holder.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        gate.set()
        holder.join(30)
        store.run_sync(lambda uow: None, timeout=30)  # behind the late job


def test_a_store_that_does_not_answer_in_time_is_busy_and_the_resend_is_done(
        store: Writer) -> None:
    uid = generate_uid()
    mpps_in = flow(store, timeout=0.2)
    with busy(store), pytest.raises(DomainError) as refused:
        mpps_in.create(uid, mpps().to_json_dict(), "CT01")
    assert refused.value.kind is ErrorKind.BUSY
    assert refused.value.message == ("store busy, not done within 0.2 s: send the same "
                                     "request again")
    assert failure_of(refused.value).status == 0x0110
    assert steps(store) == ["STARTED"]  # the job committed late
    assert mpps_in.create(uid, mpps().to_json_dict(), "CT01").replayed


def test_a_stopped_store_is_unavailable(store: Writer) -> None:
    store.stop()
    with pytest.raises(DomainError) as refused:
        flow(store).create(generate_uid(), mpps().to_json_dict(), "CT01")
    assert refused.value.kind is ErrorKind.STORE_UNAVAILABLE
    assert refused.value.message.startswith("store unavailable: ")


def test_the_study_of_the_sample_order_is_the_one_linked(store: Writer) -> None:
    outcome = flow(store).create(generate_uid(), mpps().to_json_dict(), "CT01")
    linked = Db(store.path).query(
        "SELECT p.study_uid FROM steps s JOIN procedures p ON p.id = s.procedure_fk"
        " WHERE s.id = ?", outcome.steps[0])
    assert linked == [(UID,)]
