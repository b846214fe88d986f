"""MPPS SCP (N-CREATE / N-SET) against the broker with a pynetdicom SCU: statuses, linking,
and the scheduled steps' status as the worklist shows it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.app import Broker
from broker.dicom.client import WorklistClient, build_query, query_keys
from tests.conftest import Db, msa, send
from tests.support.samples import order

UID = "1.2.826.0.1.3680043.8.498.2"  # order(1)'s Study Instance UID


def mpps(status: str = "IN PROGRESS", study_uid: str = UID, sps_id: str = "SPS0000001",
         accession: str = "A0000001", **overrides: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = accession
    item.RequestedProcedureID = "RP0000001"
    item.ScheduledProcedureStepID = sps_id
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "PATIENT^NUMBER1"
    ds.PatientID = "P0000001"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261122"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.PerformedSeriesSequence = []
    for key, value in overrides.items():
        if value is ...:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def completion(status: str = "COMPLETED", end: bool = True) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261122" if end else None
    ds.PerformedProcedureStepEndTime = "103000" if end else None
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5"
    series.PerformingPhysicianName = "TECH^TERRY"
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = "1.2.3.4.5.1"
    series.ReferencedImageSequence = [image]
    ds.PerformedSeriesSequence = [series]
    return ds


@pytest.fixture
async def ordered(broker: Broker) -> Broker:
    acks = await send(broker.mllp.bound_port, order(1).encode(), order(2).encode())
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    return broker


@pytest.fixture
def scu(ordered: Broker) -> Iterator[Association]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", ordered.dicom.bound_port, ae_title="MWLBROKER")
    assert assoc.is_established
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield assoc
    assoc.release()


def create(assoc: Association, ds: Dataset, uid: str | None = None) -> Dataset:
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid or generate_uid())
    return status


def update(assoc: Association, uid: str, ds: Dataset) -> Dataset:
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    return status


def step_status(broker: Broker, study_uid: str = UID) -> list[str]:
    return [s["_status"] for s in Db(broker.writer.path).steps(study_uid).values()]


async def test_in_progress_then_completed(ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    assert step_status(ordered) == ["STARTED"]
    # hidden from the default worklist, shown with its status when asked
    with WorklistClient("127.0.0.1", ordered.dicom.bound_port) as c:
        default = c.find(build_query(query_keys(["AccessionNumber=A0000001"])))
        asked = c.find(build_query(query_keys(["AccessionNumber=A0000001",
                                               "ScheduledProcedureStepStatus=STARTED"])))
    assert default.matches == []
    assert [m.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
            for m in asked.matches] == ["STARTED"]
    assert update(scu, uid, completion()).Status == 0x0000
    assert step_status(ordered) == ["COMPLETED"]
    row = Db(ordered.writer.path).query("SELECT status, dataset FROM mpps")[0]
    stored = Dataset.from_json(json.loads(row[1]))
    assert row[0] == "COMPLETED"
    image = stored.PerformedSeriesSequence[0].ReferencedImageSequence[0]
    assert image.ReferencedSOPInstanceUID == "1.2.3.4.5.1"
    assert stored.PerformedStationAETitle == "CT01"


async def test_n_set_after_completed_is_refused_with_a710(ordered: Broker,
                                                          scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    assert update(scu, uid, completion()).Status == 0x0000
    status = update(scu, uid, completion("DISCONTINUED"))
    assert status.Status == 0x0110
    assert status.ErrorID == 0xA710
    assert "may no longer be updated" in status.ErrorComment
    assert step_status(ordered) == ["COMPLETED"]


async def test_discontinued(ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    assert update(scu, uid, completion("DISCONTINUED")).Status == 0x0000
    assert step_status(ordered) == ["DISCONTINUED"]


@pytest.mark.parametrize("ds,code,text", [
    (mpps(status="COMPLETED"), 0x0106, "must be IN PROGRESS"),
    (mpps(PerformedProcedureStepStartDate=...), 0x0120, "PerformedProcedureStepStartDate"),
    (mpps(PerformedProcedureStepStartDate=None), 0x0121, "PerformedProcedureStepStartDate"),
    (mpps(study_uid="not-a-uid!"), 0x0106, "is not a UID"),
    (mpps(ScheduledStepAttributesSequence=[]), 0x0121, "no item"),
])
async def test_bad_n_create(ordered: Broker, scu: Association, ds: Dataset, code: int,
                            text: str) -> None:
    before = Db(ordered.writer.path).domain_snapshot()
    status = create(scu, ds)
    assert status.Status == code
    assert text in status.ErrorComment
    assert Db(ordered.writer.path).domain_snapshot() == before
    assert Db(ordered.writer.path).query("SELECT COUNT(*) FROM mpps") == [(0,)]


async def test_duplicate_and_unknown_instances(ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    assert create(scu, mpps(PerformedProcedureStepID="PPS2"), uid).Status == 0x0111
    assert create(scu, mpps(), uid).Status == 0x0000  # the same request again: a resend
    assert Db(ordered.writer.path).query("SELECT COUNT(*) FROM mpps") == [(1,)]
    assert update(scu, generate_uid(), completion()).Status == 0x0112


async def test_completion_needs_end_date_and_time(ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    status = update(scu, uid, completion(end=False))
    assert status.Status == 0x0121
    assert "PerformedProcedureStepEndDate" in status.ErrorComment
    assert step_status(ordered) == ["STARTED"]


async def test_unscheduled_mpps_is_kept_and_flagged(ordered: Broker, scu: Association) -> None:
    assert create(scu, mpps(study_uid="1.2.3.999", sps_id="NOPE",
                            accession="NOPE")).Status == 0x0000
    assert Db(ordered.writer.path).query("SELECT unscheduled FROM mpps") == [(1,)]
    assert step_status(ordered) == ["SCHEDULED"]


async def test_matching_on_accession_when_the_uid_differs(ordered: Broker,
                                                          scu: Association) -> None:
    assert create(scu, mpps(study_uid="1.2.3.888")).Status == 0x0000
    assert step_status(ordered) == ["STARTED"]


async def test_one_mpps_for_two_steps(ordered: Broker, scu: Association) -> None:
    ds = mpps()
    second = Dataset()
    second.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.3"  # order(2)
    second.ScheduledProcedureStepID = "SPS0000002"
    ds.ScheduledStepAttributesSequence.append(second)
    assert create(scu, ds).Status == 0x0000
    assert step_status(ordered) == ["STARTED"]
    assert step_status(ordered, "1.2.826.0.1.3680043.8.498.3") == ["STARTED"]
    assert Db(ordered.writer.path).query("SELECT COUNT(*) FROM mpps_steps") == [(2,)]


async def test_sop_instance_uid_assigned_when_the_modality_omits_it(ordered: Broker,
                                                                     scu: Association) -> None:
    status, _ = scu.send_n_create(mpps(), ModalityPerformedProcedureStep, None)
    assert status.Status == 0x0000
    uids = Db(ordered.writer.path).query("SELECT sop_instance_uid FROM mpps")
    assert len(uids) == 1 and uids[0][0].startswith("1.2.826.0.1.3680043.8.498.")
