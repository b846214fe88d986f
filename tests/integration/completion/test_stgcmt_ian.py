"""Closing the loop without Orthanc: Instance Availability Notifications and storage
commitment reports over the wire against the in-process broker, and a small pynetdicom archive
(Storage Commitment Push Model SCP) that reports on the broker's own request association."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    InstanceAvailabilityNotification,
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
)

from broker.app import Broker
from broker.config import DestinationSettings, Settings
from broker.dicom.stgcmt import PUSH_MODEL_INSTANCE
from tests.support import ups
from tests.support.broker import free_port, make_settings
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.ris import Ris, obx, oru, segment
from tests.support.samples import order

CT = "1.2.840.10008.5.1.4.1.1.2"
MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
SERIES = "1.2.826.0.1.3680043.8.498.900"


# -- peers and datasets -------------------------------------------------------------------------


def study_of(n: int) -> str:
    return order(n).study_uid


def instance_uids(n: int, count: int = 2) -> list[str]:
    return [f"{SERIES}.{n}.{i}" for i in range(1, count + 1)]


def in_progress(n: int, study_uid: str | None = None) -> Dataset:
    """MPPS N-CREATE for order(n)'s step (another study: an unscheduled procedure)."""
    sample = order(n)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = Dataset()
    item.StudyInstanceUID = study_uid or sample.study_uid
    item.AccessionNumber = sample.accession if study_uid is None else ""
    item.RequestedProcedureID = sample.requested_procedure_id if study_uid is None else ""
    item.ScheduledProcedureStepID = sample.sps_ids[0] if study_uid is None else ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = sample.patient_name
    ds.PatientID = sample.patient_id
    ds.PerformedProcedureStepID = f"PPS{n}"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261122"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.PerformedSeriesSequence = []
    return ds


def completed(uids: list[str]) -> Dataset:
    """MPPS N-SET COMPLETED listing ``uids`` (one series)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261122"
    ds.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    series.PerformingPhysicianName = "TECH^TERRY"
    images = []
    for uid in uids:
        image = Dataset()
        image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = CT, uid
        images.append(image)
    series.ReferencedImageSequence = images
    ds.PerformedSeriesSequence = [series]
    return ds


def perform(port: int, create: Dataset, final: Dataset | None) -> str:
    """A modality: MPPS IN PROGRESS, then the final N-SET; the MPPS SOP Instance UID."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    try:
        uid = generate_uid()
        status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        if final is not None:
            status, _ = assoc.send_n_set(final, ModalityPerformedProcedureStep, uid)
            assert status.Status == 0x0000
        return uid
    finally:
        assoc.release()


def availability(study_uid: str, instances: list[tuple[str, str, str]],
                 mpps_uids: tuple[str, ...] = (), accession: str | None = None) -> Dataset:
    """An IAN dataset; ``instances`` are (SOP Instance UID, availability, retrieve AE)."""
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    if accession is not None:
        ds.AccessionNumber = accession
    steps = []
    for uid in mpps_uids:
        step = Dataset()
        step.ReferencedSOPClassUID, step.ReferencedSOPInstanceUID = MPPS_CLASS, uid
        step.PerformedWorkitemCodeSequence = []
        steps.append(step)
    ds.ReferencedPerformedProcedureStepSequence = steps
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    refs = []
    for uid, value, retrieve_ae in instances:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT, uid
        ref.InstanceAvailability = value
        if retrieve_ae:
            ref.RetrieveAETitle = retrieve_ae
        refs.append(ref)
    series.ReferencedSOPSequence = refs
    ds.ReferencedSeriesSequence = [series]
    return ds


def notify(port: int, ds: Dataset, uid: str | None = None) -> Dataset:
    """Send one IAN N-CREATE as the archive; the response status dataset."""
    ae = AE(ae_title="ARCHIVE")
    ae.add_requested_context(InstanceAvailabilityNotification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(ds, InstanceAvailabilityNotification,
                                        uid or generate_uid())
        return status
    finally:
        assoc.release()


def report_info(transaction: str | None, committed: list[str],
                failed: dict[str, int] | None = None) -> Dataset:
    ds = Dataset()
    if transaction is not None:
        ds.TransactionUID = transaction
    items = []
    for uid in committed:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    if failed:
        bad = []
        for uid, reason in failed.items():
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, uid
            item.FailureReason = reason
            bad.append(item)
        ds.FailedSOPSequence = bad
    return ds


def report_on_new_association(port: int, event_type: int, info: Dataset,
                              role: bool = True) -> Dataset:
    """The archive opens an association to the broker, taking the SCP role of the Storage
    Commitment Push Model (or proposing no role), and sends its N-EVENT-REPORT; the response
    status dataset."""
    ae = AE(ae_title="ARCHIVE")
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    roles = [build_role(StorageCommitmentPushModel, scp_role=True)] if role else []
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER", ext_neg=roles)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                              PUSH_MODEL_INSTANCE)
        return status
    finally:
        assoc.release()


class Archive:
    """A Storage Commitment Push Model SCP. It answers each N-ACTION with ``status``; when that
    is success and ``report`` is set, it sends its N-EVENT-REPORT on the same association from
    another thread 50 ms later (from inside the handler it would deadlock)."""

    def __init__(self, port: int, status: int = 0x0000, report: bool = True) -> None:
        self.port, self.status, self.report = port, status, report
        self.requests: list[tuple[str, list[str]]] = []
        self.report_statuses: list[int] = []
        self._threads: list[threading.Thread] = []
        self.ae = AE(ae_title="ARCHIVE")
        self.ae.add_supported_context(StorageCommitmentPushModel)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 10
        self.server: Any = None

    def __enter__(self) -> Archive:
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_N_ACTION, self._on_action)])
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(10)
        self.server.shutdown()

    def _on_action(self, ev: Any) -> tuple[int, None]:
        info = ev.action_information
        uids = [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence]
        self.requests.append((str(info.TransactionUID), uids))
        if self.status == 0x0000 and self.report:
            thread = threading.Thread(target=self._report, args=(ev.assoc, info), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self.status, None

    def _report(self, assoc: Any, info: Dataset) -> None:
        threading.Event().wait(0.05)
        status, _ = assoc.send_n_event_report(
            report_info(str(info.TransactionUID),
                        [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence]),
            1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE)
        self.report_statuses.append(int(status.Status) if "Status" in status else -1)


# -- the broker ---------------------------------------------------------------------------------


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


def completion_settings(tmp_path: Path, ris: Ris, archive_port: int, **storage: Any) -> Settings:
    settings = make_settings(tmp_path)
    settings.admin.enabled = False
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 2.0)]
    settings.outbound.backoff_base = 0.1
    settings.outbound.backoff_max = 0.3
    settings.outbound.poll = 0.1
    sc = settings.storage_commitment
    sc.ae_title, sc.host, sc.port = "ARCHIVE", "127.0.0.1", archive_port
    sc.same_association_wait = 2.0
    sc.timeout = 5.0
    for key, value in storage.items():
        setattr(sc, key, value)
    return settings


async def started(settings: Settings, orders: tuple[int, ...] = (1,)) -> Broker:
    broker = Broker(settings)
    await broker.start()
    if orders:
        acks = await send(broker.mllp.bound_port, *(order(n).encode() for n in orders))
        assert [msa(a)[1] for a in acks] == ["AA"] * len(orders)
    return broker


def rows(broker: Broker, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return Db(broker.settings.database.path).query(sql, *args)


async def until(predicate: Callable[[], object], seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)




def queued_notices(broker: Broker) -> int:
    return int(rows(broker, "SELECT COUNT(*) FROM outbox WHERE message_type LIKE 'ORU%'")[0][0])


def commitment(broker: Broker) -> list[tuple[Any, ...]]:
    return rows(broker, "SELECT state, reason FROM commitments")


def per_instance(broker: Broker) -> list[tuple[Any, ...]]:
    return rows(broker, "SELECT sop_instance_uid, state, failure_reason FROM"
                        " commitment_instances ORDER BY sop_instance_uid")


def action_row(broker: Broker) -> tuple[Any, ...]:
    found = rows(broker, "SELECT state, attempts, last_error, ack, control_id FROM outbox"
                         " WHERE message_type = 'N-ACTION'")
    assert len(found) == 1, found
    return found[0]


# -- IAN: bad input -----------------------------------------------------------------------------


def ian_tables(broker: Broker) -> list[tuple[Any, ...]]:
    return (rows(broker, "SELECT sop_instance_uid, linked_by FROM ian ORDER BY id")
            + rows(broker, "SELECT sop_instance_uid, availability, retrieve_ae FROM"
                           " instance_availability ORDER BY sop_instance_uid"))


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
@pytest.mark.parametrize(("change", "status", "text"), [
    ("no_study", 0x0120, "StudyInstanceUID is missing"),
    ("bad_availability", 0x0106, "InstanceAvailability 'LOST' is not one of"),
    ("bad_uid", 0x0106, "ReferencedSOPInstanceUID is not a UID"),
    ("empty_series", 0x0121, "ReferencedSeriesSequence has no item"),
])
async def test_bad_ian_is_refused_and_nothing_is_stored(broker: Broker, change: str,
                                                        status: int, text: str) -> None:
    port = broker.dicom.bound_port
    ds = availability(study_of(1), [(u, "ONLINE", "ARCHIVE") for u in instance_uids(1)])
    if change == "no_study":
        del ds.StudyInstanceUID
    elif change == "bad_availability":
        ds.ReferencedSeriesSequence[0].ReferencedSOPSequence[1].InstanceAvailability = "LOST"
    elif change == "bad_uid":
        ds.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.x"
    else:
        ds.ReferencedSeriesSequence = []
    answer = await asyncio.to_thread(notify, port, ds)
    assert answer.Status == status
    assert text in answer.ErrorComment
    assert ian_tables(broker) == []


async def test_duplicate_ian_is_0111_and_changes_nothing(broker: Broker) -> None:
    port = broker.dicom.bound_port
    uid = generate_uid()
    first = availability(study_of(1), [(instance_uids(1)[0], "ONLINE", "ARCHIVE")])
    assert (await asyncio.to_thread(notify, port, first, uid)).Status == 0x0000
    before = ian_tables(broker)
    assert len(before) == 2
    again = availability(study_of(1), [(instance_uids(1)[0], "OFFLINE", "OTHER")])
    answer = await asyncio.to_thread(notify, port, again, uid)
    assert answer.Status == 0x0111
    assert answer.ErrorComment.startswith(f"duplicate IAN: SOP Instance UID {uid[:20]}")
    assert ian_tables(broker) == before


# -- IAN: linking -------------------------------------------------------------------------------


async def test_ian_links_by_mpps_then_study_then_accession(broker: Broker) -> None:
    acks = await send(broker.mllp.bound_port, *(order(n).encode() for n in (1, 2, 3)))
    assert [msa(a)[1] for a in acks] == ["AA"] * 3
    port = broker.dicom.bound_port
    mpps = {n: await asyncio.to_thread(perform, port, in_progress(n), completed(instance_uids(n)))
            for n in (1, 2, 3)}
    db = Db(broker.settings.database.path)
    procedure = {n: db.procedure(study_of(n))["_id"] for n in (1, 2, 3)}
    mpps_pk = {n: rows(broker, "SELECT id FROM mpps WHERE sop_instance_uid = ?", uid)[0][0]
               for n, uid in mpps.items()}

    one, two, three = instance_uids(1), instance_uids(2), instance_uids(3)
    sent = {
        "mpps": availability(study_of(1), [(one[0], "ONLINE", "ARCH1"),
                                           (one[1], "NEARLINE", "ARCH2")], (mpps[1],)),
        "study": availability(study_of(2), [(two[0], "OFFLINE", ""),
                                            (two[1], "UNAVAILABLE", "")]),
        "accession": availability("1.2.826.0.1.3680043.8.498.777",
                                  [(three[0], "ONLINE", "ARCH1")],
                                  accession=order(3).accession),
        "": availability("1.2.826.0.1.3680043.8.498.778",
                         [("1.2.826.0.1.3680043.8.498.778.1", "ONLINE", "ARCH1")],
                         accession="NOSUCHACC"),
    }
    uids = {}
    for how, ds in sent.items():
        uids[how] = generate_uid()
        assert (await asyncio.to_thread(notify, port, ds, uids[how])).Status == 0x0000

    linked = {r[0]: r[1:] for r in rows(
        broker, "SELECT sop_instance_uid, linked_by, mpps_fk, procedure_fk, calling_ae FROM ian")}
    assert linked == {
        uids["mpps"]: ("mpps", mpps_pk[1], procedure[1], "ARCHIVE"),
        uids["study"]: ("study", mpps_pk[2], procedure[2], "ARCHIVE"),
        uids["accession"]: ("accession", mpps_pk[3], procedure[3], "ARCHIVE"),
        uids[""]: ("", None, None, "ARCHIVE")}
    stored = rows(broker, "SELECT a.sop_instance_uid, a.availability, a.retrieve_ae,"
                          " a.study_uid, a.series_uid, i.sop_instance_uid FROM"
                          " instance_availability a JOIN ian i ON i.id = a.ian_fk"
                          " ORDER BY a.sop_instance_uid")
    assert stored == sorted([
        (one[0], "ONLINE", "ARCH1", study_of(1), SERIES, uids["mpps"]),
        (one[1], "NEARLINE", "ARCH2", study_of(1), SERIES, uids["mpps"]),
        (two[0], "OFFLINE", "", study_of(2), SERIES, uids["study"]),
        (two[1], "UNAVAILABLE", "", study_of(2), SERIES, uids["study"]),
        (three[0], "ONLINE", "ARCH1", "1.2.826.0.1.3680043.8.498.777", SERIES,
         uids["accession"]),
        ("1.2.826.0.1.3680043.8.498.778.1", "ONLINE", "ARCH1",
         "1.2.826.0.1.3680043.8.498.778", SERIES, uids[""])])


async def test_a_later_ian_updates_an_instance_availability(broker: Broker) -> None:
    port = broker.dicom.bound_port
    uid = instance_uids(1)[0]
    for value, retrieve_ae in (("ONLINE", "ARCH1"), ("NEARLINE", "TAPE")):
        ds = availability(study_of(1), [(uid, value, retrieve_ae)])
        assert (await asyncio.to_thread(notify, port, ds)).Status == 0x0000
    assert rows(broker, "SELECT availability, retrieve_ae FROM instance_availability") == [
        ("NEARLINE", "TAPE")]
    assert rows(broker, "SELECT COUNT(*) FROM ian") == [(2,)]


# -- N-EVENT-REPORT on a new association: bad input ---------------------------------------------


@pytest.mark.parametrize(("event_type", "transaction", "status", "text"), [
    (1, "1.2.826.0.1.3680043.8.498.404", 0x0110, "unknown Transaction UID"),
    (3, "1.2.826.0.1.3680043.8.498.404", 0x0113, "Event Type ID 3"),
    (1, None, 0x0115, "TransactionUID (0008,1195) is missing"),
])
async def test_bad_report_on_a_new_association(broker: Broker, event_type: int,
                                               transaction: str | None, status: int,
                                               text: str) -> None:
    info = report_info(transaction, ["1.2.3.4.5.1"])
    answer = await asyncio.to_thread(report_on_new_association, broker.dicom.bound_port,
                                     event_type, info)
    assert answer.Status == status
    assert text in answer.ErrorComment
    assert broker.archive_reports.reports == 0


async def test_report_without_role_selection_reaches_the_handler(broker: Broker) -> None:
    """Some archives propose the Push Model without SCP/SCU role selection."""
    info = report_info("1.2.826.0.1.3680043.8.498.405", ["1.2.3.4.5.1"])
    answer = await asyncio.to_thread(report_on_new_association, broker.dicom.bound_port, 1,
                                     info, False)
    assert answer.Status == 0x0110
    assert "unknown Transaction UID 1.2.826.0.1.3680043.8.498.405" in answer.ErrorComment


# -- storage commitment with an archive ---------------------------------------------------------


async def test_report_on_the_same_association_then_ian_sends_one_notice(
        tmp_path: Path, ris: Ris) -> None:
    port = free_port()
    with Archive(port) as archive:
        broker = await started(completion_settings(tmp_path, ris, port))
        try:
            dicom = broker.dicom.bound_port
            uids = instance_uids(1)
            mpps = await asyncio.to_thread(perform, dicom, in_progress(1), completed(uids))
            await until(lambda: commitment(broker) == [("committed", "")]
                        and action_row(broker)[0] == "delivered")
            assert per_instance(broker) == [(u, "committed", None) for u in uids]
            state, attempts, error, ack, transaction = action_row(broker)
            assert (state, attempts, error) == ("delivered", 1, "")
            assert "reported on the same association" in ack
            assert archive.requests == [(transaction, uids)]
            assert archive.report_statuses == [0x0000]
            assert queued_notices(broker) == 0, "the rule also waits for availability"

            ds = availability(study_of(1), [(u, "ONLINE", "ARCHIVE") for u in uids], (mpps,))
            assert (await asyncio.to_thread(notify, dicom, ds)).Status == 0x0000
            await until(lambda: len(oru(ris)) == 1)
            notice = oru(ris)[0]
            values = obx(notice)
            assert values["113014"] == study_of(1)
            assert (values["NumberOfSeries"], values["NumberOfInstances"],
                    values["InstancesCommitted"], values["InstancesAvailable"]) == (
                "1", "2", "2", "2")
            assert values["RetrieveAETitle"] == "ARCHIVE"
            assert (values["CompletionState"], values["PartialFlag"]) == ("complete", "N")
            assert segment(notice, "OBR")[25] == "F"
            assert segment(notice, "OBR")[18] == order(1).accession
            assert rows(broker, "SELECT state FROM completions") == [("sent",)]
            # another IAN for the same instances decides nothing again
            again = availability(study_of(1), [(u, "ONLINE", "ARCHIVE") for u in uids], (mpps,))
            assert (await asyncio.to_thread(notify, dicom, again)).Status == 0x0000
            assert queued_notices(broker) == 1
        finally:
            await broker.stop()


async def test_archive_refusing_the_request_sends_the_failure_notice(
        tmp_path: Path, ris: Ris) -> None:
    port = free_port()
    with Archive(port, status=0x0110) as archive:
        broker = await started(completion_settings(tmp_path, ris, port))
        try:
            uids = instance_uids(1)
            await asyncio.to_thread(perform, broker.dicom.bound_port, in_progress(1),
                                    completed(uids))
            await until(lambda: len(oru(ris)) == 1)
            state, _, error, _, transaction = action_row(broker)
            assert state == "dead"
            assert "refused the commitment request: status 0x0110" in error
            assert archive.requests == [(transaction, uids)]
            assert archive.report_statuses == []
            [(commit_state, reason)] = commitment(broker)
            assert commit_state == "failed" and "0x0110" in reason
            notice = oru(ris)[0]
            assert segment(notice, "OBR")[25] == "X"
            assert obx(notice)["CompletionState"] == "commitment_failed"
            assert "0x0110" in segment(notice, "NTE")[3]
            assert rows(broker, "SELECT state FROM completions") == [("commitment_failed",)]
        finally:
            await broker.stop()


async def test_unreachable_archive_is_retried_until_it_answers(tmp_path: Path,
                                                               ris: Ris) -> None:
    port = free_port()
    broker = await started(completion_settings(tmp_path, ris, port))
    try:
        uids = instance_uids(1)
        await asyncio.to_thread(perform, broker.dicom.bound_port, in_progress(1),
                                completed(uids))
        await until(lambda: action_row(broker)[1] >= 2)
        state, attempts, error, _, _ = action_row(broker)
        assert state == "pending" and "ARCHIVE" in error
        assert commitment(broker) == [("queued", "")]
        assert queued_notices(broker) == 0
        with Archive(port) as archive:
            await until(lambda: commitment(broker) == [("committed", "")]
                        and action_row(broker)[0] == "delivered")
            assert action_row(broker)[1] > attempts
            assert [u for _, u in archive.requests] == [uids]
        assert queued_notices(broker) == 0, "still waiting for availability"
    finally:
        await broker.stop()


async def test_no_report_times_out_with_a_partial_notice_and_a_late_report_sends_nothing(
        tmp_path: Path, ris: Ris) -> None:
    port = free_port()
    with Archive(port, report=False) as archive:
        broker = await started(completion_settings(tmp_path, ris, port, report_timeout=1.0,
                                                same_association_wait=0.1))
        try:
            dicom = broker.dicom.bound_port
            uids = instance_uids(1)
            await asyncio.to_thread(perform, dicom, in_progress(1), completed(uids))
            await until(lambda: len(oru(ris)) == 1)
            [(state, reason)] = commitment(broker)
            assert state == "timed_out" and "no N-EVENT-REPORT" in reason
            notice = oru(ris)[0]
            values = obx(notice)
            assert (values["CompletionState"], values["PartialFlag"]) == ("partial", "Y")
            assert values["InstancesCommitted"] == "0"
            assert segment(notice, "OBR")[25] == "A"
            assert "2 of 2 instance(s) not committed" in segment(notice, "NTE")[3]
            assert rows(broker, "SELECT state FROM completions") == [("partial",)]

            [(transaction, _)] = archive.requests
            late = await asyncio.to_thread(report_on_new_association, dicom, 1,
                                           report_info(transaction, uids))
            assert late.Status == 0x0000
            assert per_instance(broker) == [(u, "committed", None) for u in uids]
            assert queued_notices(broker) == 1, "no second notice"
            assert rows(broker, "SELECT state FROM completions") == [("partial",)]
        finally:
            await broker.stop()


async def test_failures_reported_on_a_new_association_are_kept_per_instance(
        tmp_path: Path, ris: Ris) -> None:
    port = free_port()
    with Archive(port, report=False) as archive:
        broker = await started(completion_settings(tmp_path, ris, port,
                                                same_association_wait=0.1))
        try:
            dicom = broker.dicom.bound_port
            uids = instance_uids(1)
            await asyncio.to_thread(perform, dicom, in_progress(1), completed(uids))
            await until(lambda: commitment(broker) == [("requested", "")])
            [(transaction, _)] = archive.requests
            answer = await asyncio.to_thread(report_on_new_association, dicom, 2,
                                             report_info(transaction, uids[:1],
                                                         {uids[1]: 0x0119}))
            assert answer.Status == 0x0000
            assert per_instance(broker) == [(uids[0], "committed", None),
                                            (uids[1], "failed", 0x0119)]
            [(state, reason)] = commitment(broker)
            assert state == "failed" and "0x0119" in reason
            await until(lambda: len(oru(ris)) == 1)
            values = obx(oru(ris)[0])
            assert (values["CompletionState"], values["InstancesCommitted"]) == (
                "commitment_failed", "1")
            assert segment(oru(ris)[0], "OBR")[25] == "X"
        finally:
            await broker.stop()


async def test_unscheduled_mpps_is_committed_but_no_notice_is_sent(tmp_path: Path,
                                                                   ris: Ris) -> None:
    port = free_port()
    with Archive(port) as archive:
        broker = await started(completion_settings(tmp_path, ris, port), orders=())
        try:
            uids = instance_uids(9)
            await asyncio.to_thread(perform, broker.dicom.bound_port,
                                    in_progress(9, study_uid="1.2.826.0.1.3680043.8.498.999"),
                                    completed(uids))
            assert rows(broker, "SELECT unscheduled FROM mpps") == [(1,)]
            await until(lambda: commitment(broker) == [("committed", "")])
            assert [u for _, u in archive.requests] == [uids]
            assert rows(broker, "SELECT COUNT(*) FROM completions") == [(0,)]
            assert queued_notices(broker) == 0
            assert rows(broker, "SELECT COUNT(*) FROM outbox WHERE destination = 'ris'") == [
                (0,)]
        finally:
            await broker.stop()


def ups_complete(port: int, study_uid: str, uids: list[str]) -> None:
    """A UPS performer (stock pynetdicom): find the workitem, claim it, set its performed
    procedure with the instances it made (Output Information Sequence), complete it."""
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        UnifiedProcedureStepPull,
        UnifiedProcedureStepPush,
    )

    ae = AE(ae_title="AI01")
    ae.add_requested_context(UnifiedProcedureStepPull)
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    try:
        query = Dataset()
        query.SOPInstanceUID = ""
        query.StudyInstanceUID = study_uid
        (found,) = [i for s, i in assoc.send_c_find(query, UnifiedProcedureStepPull)
                    if s.Status in (0xFF00, 0xFF01)]
        uid, transaction = str(found.SOPInstanceUID), generate_uid()
        claim = Dataset()
        claim.ProcedureStepState, claim.TransactionUID = "IN PROGRESS", transaction
        assert assoc.send_n_action(claim, 1, UnifiedProcedureStepPush, uid)[0].Status == 0
        series = Dataset()
        series.StudyInstanceUID, series.SeriesInstanceUID = study_uid, "1.2.3.4.5"
        refs = []
        for instance in uids:
            ref = Dataset()
            ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ref.ReferencedSOPInstanceUID = instance
            refs.append(ref)
        series.ReferencedSOPSequence = refs
        done = ups.performed_item("20261122101500", "20261122103000", output=[series])
        changes = Dataset()
        changes.TransactionUID = transaction
        changes.UnifiedProcedureStepPerformedProcedureSequence = [done]
        assert assoc.send_n_set(changes, UnifiedProcedureStepPush, uid)[0].Status == 0
        complete = Dataset()
        complete.ProcedureStepState, complete.TransactionUID = "COMPLETED", transaction
        assert assoc.send_n_action(complete, 1, UnifiedProcedureStepPush, uid)[0].Status == 0
    finally:
        assoc.release()


async def test_a_ups_completion_asks_the_archive_to_commit_its_output(
        tmp_path: Path, ris: Ris) -> None:
    port = free_port()
    with Archive(port) as archive:
        broker = await started(completion_settings(tmp_path, ris, port))
        try:
            uids = instance_uids(2)
            await asyncio.to_thread(ups_complete, broker.dicom.bound_port,
                                    order(1).study_uid or "", uids)
            await until(lambda: commitment(broker) == [("committed", "")])
            assert [u for _, u in archive.requests] == [uids]
            assert sorted(per_instance(broker)) == [(u, "committed", None)
                                                    for u in sorted(uids)]
        finally:
            await broker.stop()
