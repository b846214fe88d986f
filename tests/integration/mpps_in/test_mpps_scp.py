"""MPPS SCP (N-CREATE / N-SET) against the broker with a pynetdicom SCU: statuses, linking,
and the scheduled steps' status as the worklist shows it."""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.app import Broker
from broker.dicom.client import WorklistClient, build_query, query_keys
from tests.support.db import Db
from tests.support.mpps import completion, create, mpps, step_status, update


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
    row = Db(ordered.settings.database.path).query("SELECT status, dataset FROM mpps")[0]
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
    before = Db(ordered.settings.database.path).domain_snapshot()
    status = create(scu, ds)
    assert status.Status == code
    assert text in status.ErrorComment
    assert Db(ordered.settings.database.path).domain_snapshot() == before
    assert Db(ordered.settings.database.path).query("SELECT COUNT(*) FROM mpps") == [(0,)]


async def test_duplicate_and_unknown_instances(ordered: Broker, scu: Association) -> None:
    uid = generate_uid()
    assert create(scu, mpps(), uid).Status == 0x0000
    assert create(scu, mpps(PerformedProcedureStepID="PPS2"), uid).Status == 0x0111
    assert create(scu, mpps(), uid).Status == 0x0000  # the same request again: a resend
    assert Db(ordered.settings.database.path).query("SELECT COUNT(*) FROM mpps") == [(1,)]
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
    assert Db(ordered.settings.database.path).query("SELECT unscheduled FROM mpps") == [(1,)]
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
    assert Db(ordered.settings.database.path).query("SELECT COUNT(*) FROM mpps_steps") == [(2,)]


async def test_sop_instance_uid_assigned_when_the_modality_omits_it(ordered: Broker,
                                                                     scu: Association) -> None:
    status, _ = scu.send_n_create(mpps(), ModalityPerformedProcedureStep, None)
    assert status.Status == 0x0000
    uids = Db(ordered.settings.database.path).query("SELECT sop_instance_uid FROM mpps")
    assert len(uids) == 1 and uids[0][0].startswith("1.2.826.0.1.3680043.8.498.")
