"""Synthetic worklists of any size, the same items for the broker (store API) and for
file-based peers (DICOM worklist files for DCMTK wlmscpfs and Orthanc).

Whatever the size, station CT01 has exactly TODAY_MATCHES steps today, patient
PATIENT_QUERY_ID has one, and PATIENTS_NAMED_NEEDLE patients are named NEEDLE^…; every other
item is on another station or another day, as in a hospital that keeps months of orders.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from broker.dicom.dataset import to_dataset
from broker.model.orders import (
    OrderAction,
    OrderChange,
    Patient,
    PatientKey,
    Procedure,
    Step,
    StepStatus,
)

TODAY = datetime.date.today().strftime("%Y%m%d")
STATION = "CT01"
TODAY_MATCHES = 36
PATIENT_QUERY_ID = "PQUERY0001"
PATIENTS_NAMED_NEEDLE = 5
STATIONS = [f"{m}{i:02d}" for m in ("CT", "MR", "US", "CR", "DX") for i in range(1, 41)]
SURNAMES = ["SMITH", "JONES", "MILLER", "GARCIA", "MARTIN", "LEE", "WALKER", "HALL", "YOUNG",
            "KING", "WRIGHT", "LOPEZ", "HILL", "SCOTT", "GREEN", "ADAMS", "BAKER", "NELSON"]


def items(total: int, seed: int = 7) -> Iterator[OrderChange]:
    rng = random.Random(seed)
    base = datetime.date.today()
    for n in range(total):
        if n < TODAY_MATCHES:
            station, day = STATION, TODAY
            minute = 7 * 60 + n * 15
        else:
            station = rng.choice(STATIONS[1:])
            offset = rng.randint(1, 180) * rng.choice((-1, 1))
            day = (base + datetime.timedelta(days=offset)).strftime("%Y%m%d")
            minute = rng.randint(6 * 60, 20 * 60)
        patient_id = PATIENT_QUERY_ID if n == TODAY_MATCHES else f"P{n:08d}"
        if TODAY_MATCHES < n <= TODAY_MATCHES + PATIENTS_NAMED_NEEDLE:
            name = f"NEEDLE^PATIENT{n}"
        else:
            name = f"{rng.choice(SURNAMES)}{n % 997}^GIVEN{n % 89}"
        modality = station[:2]
        patient = Patient(PatientKey(patient_id, "HOSP"), {
            "PatientName": name,
            "PatientBirthDate": f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}15",
            "PatientSex": rng.choice("MF")})
        procedure = Procedure({
            "StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.{n + 1}",
            "AccessionNumber": f"A{n:08d}", "RequestedProcedureID": f"RP{n:08d}",
            "RequestedProcedureDescription": f"{modality} EXAMINATION",
            "ReferringPhysicianName": "WELBY^MARCUS",
            "RequestedProcedurePriority": "ROUTINE",
        }, [Step({
            "ScheduledProcedureStepID": f"SPS{n:08d}", "Modality": modality,
            "ScheduledStationAETitle": [station],
            "ScheduledProcedureStepStartDate": day,
            "ScheduledProcedureStepStartTime": f"{minute // 60:02d}{minute % 60:02d}00",
            "ScheduledProcedureStepDescription": f"{modality} PROTOCOL",
            "ScheduledPerformingPhysicianName": "TECH^TERRY",
            "ScheduledProtocolCodeSequence": [{"CodeValue": "P1", "CodingSchemeDesignator": "L",
                                               "CodeMeaning": "Protocol one"}],
        })])
        yield OrderChange(patient, procedure, OrderAction.UPSERT, StepStatus.SCHEDULED, "NW_SC")


def worklist_file(order: OrderChange) -> Dataset:
    """The item as a DICOM worklist file (what wlmscpfs and Orthanc read)."""
    assert order.patient is not None
    attrs = {"PatientID": order.patient.key.patient_id,
             "IssuerOfPatientID": order.patient.key.issuer, **order.patient.attrs,
             **order.procedure.attrs}
    step = dict(order.procedure.steps[0].attrs)
    step["ScheduledProcedureStepStatus"] = "SCHEDULED"
    ds = to_dataset(attrs)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ScheduledProcedureStepSequence = [to_dataset(step)]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    meta.MediaStorageSOPInstanceUID = order.procedure.study_uid + ".1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_files(orders: list[OrderChange], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()
    for n, order in enumerate(orders):
        worklist_file(order).save_as(folder / f"item{n:06d}.wl", enforce_file_format=True)
