"""The completion rule (broker.workflow.completion with the mapping's outbound completion rule)
driven through the MPPS-in and completion flows on a real SQLite store: a notice once every
instance is committed and available, partial or a problem at the timeout, at once on a
commitment failure, never twice."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.dicom import mpps as mpps_checks
from broker.dicom.ian import AvailableInstance, Notification
from broker.flows.completion import CompletionFlow
from broker.flows.mpps_in import MppsIn
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.mapping.specs import MappingSet
from broker.store.repo import OUTBOX_COLUMNS, OutboxRow
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.completion import ACTION_TYPE, Completion, CompletionPolicy
from broker.workflow.notify import StatusNotifier
from broker.workflow.orders import apply
from tests.support.db import Db
from tests.support.mpps import UID as STUDY
from tests.support.mpps import completion, mpps
from tests.support.samples import order

PPS = "1.2.826.0.1.3680043.10.2.1"
IMAGE = "1.2.3.4.5.1"  # the one instance of tests.support.mpps.completion()
CT = "1.2.840.10008.5.1.4.1.1.2"


@dataclasses.dataclass
class Loop:
    """The MPPS-in and completion flows wired as the broker wires them, on one store."""

    writer: Writer
    completion: Completion
    flow: CompletionFlow
    mpps: MppsIn

    def perform(self) -> None:
        """The modality: N-CREATE IN PROGRESS, then N-SET COMPLETED with one image."""
        self.mpps.create(PPS, mpps_checks.as_json(mpps()), "CT01")
        self.mpps.update(PPS, mpps_checks.as_json(completion()))

    def outbox(self, message_type: str) -> list[OutboxRow]:
        rows = Db(self.writer.path).query(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_type LIKE ? ORDER BY id",
            message_type)
        return [OutboxRow(*row) for row in rows]

    def notices(self) -> list[OutboxRow]:
        return self.outbox("ORU%")

    def request(self) -> OutboxRow:
        (row,) = self.outbox(ACTION_TYPE)
        return row

    def settle_request(self, outcome: str, reason: str = "") -> None:
        """The outbox settled the commitment request."""
        row = self.request()
        self.writer.run_sync(lambda uow: self.flow.settled(uow, row, outcome, reason))

    def report(self, committed: list[str], failed: dict[str, int] | None = None) -> bool:
        return self.flow.report(self.request().control_id, committed, failed or {})

    def available(self, availability: str = "ONLINE", uid: str = "1.2.3.9.1") -> int:
        note = Notification(STUDY, [PPS], "A0000001", [
            AvailableInstance(IMAGE, CT, "1.2.3.4.5", availability, "ARCHIVE")])
        return self.flow.availability(uid, "ARCHIVE", note, {})

    def sweep(self, later: float) -> int:
        return self.writer.run_sync(lambda uow: self.completion.sweep(uow, time.time() + later))

    def state(self) -> tuple[str, str]:
        rows = Db(self.writer.path).query("SELECT state, detail FROM completions")
        assert len(rows) == 1
        return rows[0][0], rows[0][1]


def obr25(notice: OutboxRow) -> str:
    obr = next(s for s in notice.payload.split("\r") if s.startswith("OBR|"))
    return obr.split("|")[25]


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings(Settings().mappings.directory)


@pytest.fixture
def writer(tmp_path: Path, shipped: MappingSet) -> Iterator[Writer]:
    w = Writer(tmp_path / "broker.sqlite")
    w.start()

    def seed(uow: UnitOfWork) -> None:
        for ev in map_message(parse(order(1).text(), "utf_8"), shipped):
            apply(uow.orders, ev)
    w.run_sync(seed)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def loop(writer: Writer, shipped: MappingSet) -> Callable[..., Loop]:
    def build(archive: str = "archive", **rule: Any) -> Loop:
        """``rule``: fields of the shipped completion rule to replace (require, timeout,
        on_timeout)."""
        outbound = dict(shipped.outbound)
        outbound["completion"] = dataclasses.replace(outbound["completion"], **rule)
        mappings = dataclasses.replace(shipped, outbound=outbound)
        notifier = StatusNotifier(lambda: mappings, ["ris"], {})
        rules = Completion(lambda: mappings, notifier,
                           CompletionPolicy(archive=archive, report_timeout=300.0),
                           mpps_checks.summary)
        flow = CompletionFlow(writer, rules)
        return Loop(writer, rules, flow, MppsIn(writer, notify=notifier, final=flow.mpps_final))
    return build


def test_completed_mpps_asks_the_archive_to_commit_its_instances(loop: Any) -> None:
    run = loop()
    run.perform()
    request = run.request()
    assert request.destination == "archive" and request.order_key == PPS
    assert IMAGE in request.payload and run.notices() == []
    assert run.state()[0] == "waiting"


def test_committed_and_available_sends_one_complete_notice(loop: Any) -> None:
    run = loop()
    run.perform()
    run.settle_request("delivered")
    assert run.report([IMAGE]) is True
    assert run.notices() == []  # committed, not yet available
    run.available()
    (notice,) = run.notices()
    assert notice.destination == "ris" and obr25(notice) == "F"
    assert run.state() == ("sent", "")
    run.available(uid="1.2.3.9.2")  # a second IAN: decided already, nothing more
    run.report([IMAGE])
    run.sweep(10_000)
    assert len(run.notices()) == 1


def test_available_first_then_committed_completes_as_well(loop: Any) -> None:
    run = loop()
    run.perform()
    run.available()
    assert run.notices() == []
    run.settle_request("delivered")
    run.report([IMAGE])
    assert [obr25(n) for n in run.notices()] == ["F"]


def test_an_offline_instance_is_not_available(loop: Any) -> None:
    run = loop()
    run.perform()
    run.settle_request("delivered")
    run.report([IMAGE])
    run.available("OFFLINE")
    assert run.notices() == [] and run.state()[0] == "waiting"


def test_at_the_timeout_what_is_missing_is_sent_as_partial(loop: Any) -> None:
    run = loop(timeout=60.0, on_timeout="send_partial")
    run.perform()
    run.settle_request("delivered")
    run.report([IMAGE])
    assert run.sweep(30) == 0 and run.notices() == []
    run.sweep(120)
    (notice,) = run.notices()
    assert obr25(notice) == "A"
    state, detail = run.state()
    assert state == "partial" and detail == "1 of 1 instance(s) not reported available"


def test_at_the_timeout_report_problem_sends_nothing(loop: Any) -> None:
    run = loop(timeout=60.0, on_timeout="report_problem")
    run.perform()
    run.sweep(120)
    assert run.notices() == []
    state, detail = run.state()
    assert state == "problem"
    assert "not committed" in detail and "not reported available" in detail


def test_a_commitment_report_that_never_comes_times_out(loop: Any) -> None:
    run = loop(timeout=3600.0, require=("committed",))
    run.perform()
    run.settle_request("delivered")
    run.sweep(400)  # the report timeout (300 s) passed, the rule's did not
    (notice,) = run.notices()
    assert obr25(notice) == "A"
    state, detail = run.state()
    assert state == "partial" and "no commitment report before the timeout" in detail


def test_a_failed_commitment_sends_the_notice_at_once(loop: Any) -> None:
    run = loop()
    run.perform()
    run.settle_request("delivered")
    run.report([], {IMAGE: 0x0110})
    (notice,) = run.notices()
    assert obr25(notice) == "X"
    assert run.state()[0] == "commitment_failed"


def test_a_commitment_request_refused_for_good_is_a_commitment_failure(loop: Any) -> None:
    run = loop()
    run.perform()
    run.settle_request("dead", "archive answered 0x0122")
    (notice,) = run.notices()
    assert obr25(notice) == "X"
    state, detail = run.state()
    assert state == "commitment_failed" and "archive answered 0x0122" in detail


def test_a_request_still_being_retried_changes_nothing(loop: Any) -> None:
    run = loop()
    run.perform()
    run.settle_request("retry", "no answer")
    assert run.notices() == [] and run.state()[0] == "waiting"


def test_a_report_of_an_unknown_transaction_is_not_known(loop: Any) -> None:
    run = loop()
    run.perform()
    assert run.flow.report("1.2.3.999", [IMAGE], {}) is False
    assert run.notices() == []


def test_a_rule_requiring_only_availability_needs_no_commitment(loop: Any) -> None:
    run = loop(require=("available",))
    run.perform()
    run.available()
    assert [obr25(n) for n in run.notices()] == ["F"]


def test_without_an_archive_a_rule_requiring_nothing_notifies_at_completed(loop: Any) -> None:
    run = loop(archive="", require=())
    run.perform()
    assert run.outbox(ACTION_TYPE) == []
    assert [obr25(n) for n in run.notices()] == ["F"]


def test_without_an_archive_a_rule_that_requires_something_does_not_apply(loop: Any) -> None:
    run = loop(archive="")
    run.perform()
    assert run.outbox(ACTION_TYPE) == [] and run.notices() == []
    assert Db(run.writer.path).query("SELECT COUNT(*) FROM completions")[0][0] == 0
