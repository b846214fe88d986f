"""A modality's MPPS: N-CREATE and N-SET datasets for the sample orders, sent with pynetdicom."""

from __future__ import annotations

import socket
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.app import Broker
from tests.support.db import Db

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


def create(assoc: Association, ds: Dataset, uid: str | None = None) -> Dataset:
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid or generate_uid())
    return status


def update(assoc: Association, uid: str, ds: Dataset) -> Dataset:
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    return status


def step_status(broker: Broker, study_uid: str = UID) -> list[str]:
    return [s["_status"] for s in Db(broker.settings.database.path).steps(study_uid).values()]


def perform(broker: Broker, status_after: str | None = "COMPLETED") -> str:
    """A modality: N-CREATE IN PROGRESS, then N-SET to ``status_after`` (thread-blocking)."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", broker.dicom.bound_port, ae_title="MWLBROKER")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    uid = generate_uid()
    status, _ = assoc.send_n_create(mpps(), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0
    if status_after:
        status, _ = assoc.send_n_set(completion(status_after), ModalityPerformedProcedureStep,
                                     uid)
        assert status.Status == 0
    assoc.release()
    return uid
