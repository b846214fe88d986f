"""The MPPS workflow (broker.workflow.mpps) through the writer on a real SQLite store: which
scheduled steps an MPPS covers, the IN PROGRESS → COMPLETED / DISCONTINUED state machine and
the steps it moves, final states, and resends answered as done without applying twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import MappingSet, load_mappings
from broker.model.errors import DomainError, ErrorKind
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from broker.workflow import mpps
from broker.workflow.mpps import COMPLETED, DISCONTINUED, IN_PROGRESS, Outcome, StepReference
from broker.workflow.orders import apply
from tests.support.db import Db
from tests.support.samples import order

STUDY = "1.2.826.0.1.3680043.8.498.2"  # order(1)'s Study Instance UID
PPS = "1.2.826.0.1.3680043.10.1.1"


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(Settings().mappings.directory)


@pytest.fixture
def writer(tmp_path: Path, mappings: MappingSet) -> Iterator[Writer]:
    """A store holding order(1) (one step) and order(2) with two steps."""
    w = Writer(tmp_path / "broker.sqlite")
    w.start()
    samples = [order(1), order(2, sps_ids=["SPS0000002", "SPS0000003"])]

    def seed(uow: UnitOfWork) -> None:
        for sample in samples:
            for ev in map_message(parse(sample.text(), "utf_8"), mappings):
                apply(uow.orders, ev)
    w.run_sync(seed)
    try:
        yield w
    finally:
        w.stop()


def ref(study_uid: str = STUDY, sps_id: str = "SPS0000001", accession: str = "A0000001"
        ) -> StepReference:
    return StepReference(study_uid, accession, "RP0000001", sps_id)


def dataset(status: str, **extra: Any) -> dict[str, Any]:
    """A stored MPPS dataset (DICOM JSON) with its status."""
    return {"00400252": {"vr": "CS", "Value": [status]}, **extra}


def create(writer: Writer, status: str = IN_PROGRESS, refs: list[StepReference] | None = None,
           uid: str = PPS, match_accession: bool = True, **extra: Any) -> Outcome:
    return writer.run_sync(lambda uow: mpps.create(
        uow.mpps, uid, status, dataset(status, **extra), "CT01",
        [ref()] if refs is None else refs, match_accession))


def set_status(writer: Writer, status: str, uid: str = PPS, **extra: Any) -> Outcome:
    """An N-SET replacing the status (and ``extra`` attributes)."""
    def merge(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        return {**stored, **dataset(status, **extra)}, status, {"status": status}

    def job(uow: UnitOfWork) -> Outcome:
        outcome, summary = mpps.update(uow.mpps, uid, merge)
        assert summary == {"status": status}
        return outcome
    return writer.run_sync(job)


def step_status(writer: Writer, study_uid: str = STUDY) -> list[str]:
    return [s["_status"] for s in Db(writer.path).steps(study_uid).values()]


def stored(writer: Writer, uid: str = PPS) -> tuple[str, int]:
    rows = Db(writer.path).query("SELECT status, unscheduled FROM mpps WHERE sop_instance_uid "
                                 "= ?", uid)
    assert rows, f"no MPPS {uid}"
    return rows[0][0], rows[0][1]


def refused(kind: ErrorKind, work: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        work()
    assert caught.value.kind is kind
    return caught.value


def test_n_create_links_the_scheduled_step_and_starts_it(writer: Writer) -> None:
    assert step_status(writer) == ["SCHEDULED"]
    outcome = create(writer)
    assert outcome.moved and not outcome.replayed and not outcome.unscheduled
    assert outcome.status == IN_PROGRESS and len(outcome.steps) == 1
    assert step_status(writer) == ["STARTED"]
    assert stored(writer) == (IN_PROGRESS, 0)


@pytest.mark.parametrize(("final", "step"), [(COMPLETED, "COMPLETED"),
                                             (DISCONTINUED, "DISCONTINUED")])
def test_n_set_to_a_final_status_moves_the_steps(writer: Writer, final: str, step: str) -> None:
    create(writer)
    outcome = set_status(writer, final)
    assert outcome.moved and outcome.status == final
    assert step_status(writer) == [step]
    assert stored(writer)[0] == final


def test_n_set_without_a_status_change_keeps_the_steps(writer: Writer) -> None:
    create(writer)
    outcome = set_status(writer, IN_PROGRESS, **{"00081040": {"vr": "LO", "Value": ["CT"]}})
    assert not outcome.moved and not outcome.replayed
    assert step_status(writer) == ["STARTED"]


@pytest.mark.parametrize("final", [COMPLETED, DISCONTINUED])
def test_a_final_mpps_may_no_longer_be_updated(writer: Writer, final: str) -> None:
    create(writer)
    set_status(writer, final)
    other = DISCONTINUED if final == COMPLETED else COMPLETED
    for status in (IN_PROGRESS, other):
        error = refused(ErrorKind.NO_LONGER_UPDATABLE, lambda s=status: set_status(writer, s))
        assert final in str(error)
    assert stored(writer)[0] == final


def test_the_same_n_set_resent_on_a_final_mpps_is_done_and_changes_nothing(
        writer: Writer) -> None:
    create(writer)
    first = set_status(writer, COMPLETED)
    again = set_status(writer, COMPLETED)
    assert again.replayed and not again.moved
    assert again.mpps_pk == first.mpps_pk and again.steps == first.steps
    assert step_status(writer) == ["COMPLETED"]


def test_the_same_n_create_resent_is_done_without_a_second_mpps(writer: Writer) -> None:
    first = create(writer)
    again = create(writer)
    assert again.replayed and not again.moved
    assert (again.mpps_pk, again.steps) == (first.mpps_pk, first.steps)
    assert Db(writer.path).query("SELECT COUNT(*) FROM mpps")[0][0] == 1


def test_another_n_create_under_the_same_uid_is_a_duplicate(writer: Writer) -> None:
    create(writer)
    refused(ErrorKind.DUPLICATE, lambda: create(
        writer, **{"00400253": {"vr": "SH", "Value": ["OTHER"]}}))
    assert Db(writer.path).query("SELECT COUNT(*) FROM mpps")[0][0] == 1


def test_n_set_of_an_unknown_mpps_is_not_found(writer: Writer) -> None:
    refused(ErrorKind.NOT_FOUND, lambda: set_status(writer, COMPLETED, uid="1.2.3.999"))


def test_a_refused_merge_on_a_final_mpps_is_no_longer_updatable(writer: Writer) -> None:
    create(writer)
    set_status(writer, COMPLETED)

    def bad(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        raise DomainError(ErrorKind.INVALID_VALUE, "not a status")
    refused(ErrorKind.NO_LONGER_UPDATABLE,
            lambda: writer.run_sync(lambda uow: mpps.update(uow.mpps, PPS, bad)))


def test_a_refused_merge_on_a_running_mpps_keeps_its_reason(writer: Writer) -> None:
    create(writer)

    def bad(stored: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        raise DomainError(ErrorKind.INVALID_VALUE, "not a status")
    error = refused(ErrorKind.INVALID_VALUE,
                    lambda: writer.run_sync(lambda uow: mpps.update(uow.mpps, PPS, bad)))
    assert error.message == "not a status"
    assert step_status(writer) == ["STARTED"]


def test_an_mpps_matching_no_step_is_kept_as_unscheduled(writer: Writer) -> None:
    outcome = create(writer, refs=[ref("1.2.3.4.5", "NOPE", "NOPE")])
    assert outcome.unscheduled and outcome.steps == [] and outcome.moved
    assert stored(writer) == (IN_PROGRESS, 1)
    assert step_status(writer) == ["SCHEDULED"]
    assert set_status(writer, COMPLETED).steps == []


def test_the_accession_number_matches_when_the_study_uid_differs(writer: Writer) -> None:
    outcome = create(writer, refs=[ref("1.2.3.4.5")])
    assert len(outcome.steps) == 1 and step_status(writer) == ["STARTED"]


def test_accession_matching_can_be_turned_off(writer: Writer) -> None:
    outcome = create(writer, refs=[ref("1.2.3.4.5")], match_accession=False)
    assert outcome.unscheduled and step_status(writer) == ["SCHEDULED"]


def test_a_study_uid_without_sps_id_covers_every_step_of_the_study(writer: Writer) -> None:
    two = "1.2.826.0.1.3680043.8.498.3"  # order(2)'s
    outcome = create(writer, refs=[ref(two, "", "")])
    assert len(outcome.steps) == 2
    assert step_status(writer, two) == ["STARTED", "STARTED"]
    set_status(writer, COMPLETED)
    assert step_status(writer, two) == ["COMPLETED", "COMPLETED"]
    assert step_status(writer) == ["SCHEDULED"]  # order(1) untouched


def test_one_mpps_for_steps_of_two_references_links_each_once(writer: Writer) -> None:
    two = "1.2.826.0.1.3680043.8.498.3"
    outcome = create(writer, refs=[ref(two, "SPS0000002", ""), ref(two, "SPS0000003", ""),
                                   ref(two, "SPS0000002", "")])
    assert len(outcome.steps) == 2 and len(set(outcome.steps)) == 2
    assert step_status(writer, two) == ["STARTED", "STARTED"]
