"""A modality, played for real against any worklist / MPPS / storage endpoints: query the
worklist, send MPPS IN PROGRESS, create and C-STORE images for the step, send MPPS COMPLETED
(or DISCONTINUED) listing them — the project's demo and a test driver."""

from __future__ import annotations

import datetime
import logging
import time as clock
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    InstanceAvailabilityNotification,
    ModalityPerformedProcedureStep,
    SecondaryCaptureImageStorage,
)

from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys
from broker.dicom.status import (
    COERCION_OF_DATA_ELEMENTS,
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    ELEMENTS_DISCARDED,
    SUCCESS,
)

log = logging.getLogger("broker.simulator")
#: C-STORE statuses after which the archive holds the image (success and its warnings)
STORED = frozenset({SUCCESS, COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED,
                    DATA_SET_DOES_NOT_MATCH_SOP_CLASS})


class SimulationError(RuntimeError):
    """A step of the simulation failed; the message says which and why."""


@dataclass
class Endpoint:
    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str, default_ae: str) -> Endpoint:
        """``HOST:PORT`` or ``AE@HOST:PORT``."""
        ae, _, address = text.rpartition("@")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{text!r} is not HOST:PORT or AE@HOST:PORT")
        return cls(host, int(port), ae or default_ae)


@dataclass
class Plan:
    station: str
    worklist: Endpoint
    mpps: Endpoint
    store: Endpoint | None = None
    modality: str = ""
    accession: str = ""
    series: int = 1
    images: int = 3
    not_stored: int = 0  # listed in the MPPS but never sent to the archive
    discontinue: bool = False
    timeout: float = 30.0
    #: after storing, notify this IAN SCP of the stored images (as the archive would)
    ian_to: Endpoint | None = None


@dataclass
class Result:
    item: Dataset
    mpps_uid: str
    study_uid: str
    status: str
    #: (Series Instance UID, SOP Class UID, SOP Instance UID) sent to the archive, and those
    #: only listed in the MPPS
    stored: list[tuple[str, str, str]] = field(default_factory=list)
    listed: list[tuple[str, str, str]] = field(default_factory=list)
    #: when the final N-SET was sent (time.time())
    final_sent_at: float = 0.0


Say = Callable[[str], None]


def _first(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


def pick_step(plan: Plan) -> Dataset:
    """The first SCHEDULED step for the station (and accession/modality when given)."""
    extra = ["PatientBirthDate", "PatientSex", "RequestedProcedureDescription"]
    if plan.accession:
        extra.append(f"AccessionNumber={plan.accession}")
    keys = query_keys(extra, station=plan.station, modality=plan.modality)
    with WorklistClient(plan.worklist.host, plan.worklist.port, called=plan.worklist.ae_title,
                        calling=plan.station, timeout=plan.timeout) as client:
        result = client.find(build_query(keys))
    if result.status != 0:
        raise SimulationError(f"worklist query failed: status 0x{result.status:04X} "
                              f"{result.comment}")
    if not result.matches:
        raise SimulationError(f"no scheduled step for station {plan.station}"
                              + (f" and accession {plan.accession}" if plan.accession else ""))
    return result.matches[0]


def _now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def in_progress(item: Dataset, station: str, uid_prefix: str = "") -> Dataset:
    sps = item.ScheduledProcedureStepSequence[0]
    ds = Dataset()
    ref = Dataset()
    ref.StudyInstanceUID = item.StudyInstanceUID
    ref.AccessionNumber = _first(item, "AccessionNumber")
    ref.RequestedProcedureID = _first(item, "RequestedProcedureID")
    ref.RequestedProcedureDescription = _first(item, "RequestedProcedureDescription")
    ref.ScheduledProcedureStepID = _first(sps, "ScheduledProcedureStepID")
    ref.ScheduledProcedureStepDescription = _first(sps, "ScheduledProcedureStepDescription")
    ref.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [ref]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, item.get(keyword, "") or "")
    date, time = _now()
    ds.PerformedProcedureStepID = f"PPS{time}"
    ds.PerformedStationAETitle = station
    ds.PerformedStationName = station
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = date, time
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = ""
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = _first(sps, "ScheduledProcedureStepDescription")
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.Modality = _first(sps, "Modality") or "OT"
    ds.StudyID = _first(item, "RequestedProcedureID")[:16]
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def make_image(item: Dataset, station: str, study_uid: str, series_uid: str, series: int,
               number: int) -> Dataset:
    """A small Secondary Capture image of the step (64×64, 8 bits, a gradient)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber"):
        setattr(ds, keyword, item.get(keyword, "") or "")
    date, time = _now()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = ds.ContentDate = date
    ds.StudyTime = ds.ContentTime = time
    ds.StudyID = _first(item, "RequestedProcedureID")[:16]
    ds.SeriesNumber, ds.InstanceNumber = series, number
    sps = item.ScheduledProcedureStepSequence[0]
    ds.Modality = _first(sps, "Modality") or "OT"
    ds.StationName = station
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes((x + y + number * 8) % 256 for y in range(64) for x in range(64))
    return ds


def store(plan: Plan, images: list[Dataset]) -> None:
    assert plan.store is not None
    ae = AE(ae_title=plan.station)
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = plan.timeout
    assoc = ae.associate(plan.store.host, plan.store.port, ae_title=plan.store.ae_title)
    if not assoc.is_established:
        raise SimulationError(f"association with the archive {plan.store.ae_title} at "
                              f"{plan.store.host}:{plan.store.port} failed")
    try:
        for image in images:
            status = assoc.send_c_store(image)
            code = int(status.Status) if status else -1
            if code not in STORED:
                raise SimulationError(f"C-STORE of {image.SOPInstanceUID} failed: "
                                      f"status {code:#06x}")
    finally:
        assoc.release()


def ian_dataset(study_uid: str, mpps_uid: str, instances: list[tuple[str, str, str]],
                availability: str = "ONLINE", retrieve_ae: str = "") -> Dataset:
    """An Instance Availability Notification of (Series Instance UID, SOP Class UID, SOP
    Instance UID) instances of one MPPS."""
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    ref = Dataset()
    ref.ReferencedSOPClassUID = ModalityPerformedProcedureStep
    ref.ReferencedSOPInstanceUID = mpps_uid
    ref.PerformedWorkitemCodeSequence = []
    ds.ReferencedPerformedProcedureStepSequence = [ref]
    by_series: dict[str, Dataset] = {}
    for series_uid, sop_class, sop_instance in instances:
        series = by_series.setdefault(series_uid, Dataset())
        series.SeriesInstanceUID = series_uid
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        item.InstanceAvailability, item.RetrieveAETitle = availability, retrieve_ae
        series.ReferencedSOPSequence = [*series.get("ReferencedSOPSequence", []), item]
    ds.ReferencedSeriesSequence = list(by_series.values())
    return ds


def send_ian(plan: Plan, study_uid: str, mpps_uid: str, images: list[Dataset]) -> None:
    """An Instance Availability Notification of ``images`` (ONLINE at the archive)."""
    assert plan.ian_to is not None
    ds = ian_dataset(study_uid, mpps_uid, [(i.SeriesInstanceUID, i.SOPClassUID,
                                            i.SOPInstanceUID) for i in images],
                     retrieve_ae=plan.store.ae_title if plan.store else "")
    ae = AE(ae_title=plan.store.ae_title if plan.store else plan.station)
    ae.add_requested_context(InstanceAvailabilityNotification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = plan.timeout
    assoc = ae.associate(plan.ian_to.host, plan.ian_to.port, ae_title=plan.ian_to.ae_title)
    if not assoc.is_established:
        raise SimulationError(f"association with the IAN SCP {plan.ian_to.ae_title} failed")
    try:
        status, _ = assoc.send_n_create(ds, InstanceAvailabilityNotification, generate_uid())
        _check(status, "IAN N-CREATE")
    finally:
        assoc.release()


def completed(images: list[Dataset], listed_only: list[tuple[str, str, str]],
              discontinue: bool) -> Dataset:
    ds = Dataset()
    date, time = _now()
    ds.PerformedProcedureStepStatus = "DISCONTINUED" if discontinue else "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = date, time
    by_series: dict[str, list[tuple[str, str]]] = {}
    for image in images:
        by_series.setdefault(image.SeriesInstanceUID, []).append(
            (image.SOPClassUID, image.SOPInstanceUID))
    for series_uid, sop_class, sop_instance in listed_only:
        by_series.setdefault(series_uid, []).append((sop_class, sop_instance))
    items = []
    for series_uid, refs in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.SeriesDescription = ""
        series.PerformingPhysicianName = ""
        series.OperatorsName = ""
        series.ProtocolName = "SIMULATED"
        series.RetrieveAETitle = ""
        series.ReferencedNonImageCompositeSOPInstanceSequence = []
        images_seq = []
        for sop_class, sop_instance in refs:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_instance
            images_seq.append(ref)
        series.ReferencedImageSequence = images_seq
        items.append(series)
    ds.PerformedSeriesSequence = items
    return ds


def run(plan: Plan, say: Say = print) -> Result:
    """Play the whole procedure; raises SimulationError at the first step that fails."""
    try:
        item = pick_step(plan)
    except (QueryFailed, OSError) as exc:
        raise SimulationError(f"worklist query failed: {exc}") from exc
    study_uid = str(item.StudyInstanceUID)
    say(f"worklist: {item.get('PatientName', '')} {item.get('PatientID', '')} accession "
        f"{item.get('AccessionNumber', '')} study {study_uid}")
    ae = AE(ae_title=plan.station)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = plan.timeout
    assoc = ae.associate(plan.mpps.host, plan.mpps.port, ae_title=plan.mpps.ae_title)
    if not assoc.is_established:
        raise SimulationError(f"association with the MPPS SCP {plan.mpps.ae_title} failed")
    try:
        mpps_uid = generate_uid()
        status, _ = assoc.send_n_create(in_progress(item, plan.station),
                                        ModalityPerformedProcedureStep, mpps_uid)
        _check(status, "N-CREATE IN PROGRESS")
        say(f"mpps: IN PROGRESS {mpps_uid}")
        images, listed_only = [], []
        for s in range(1, plan.series + 1):
            series_uid = generate_uid()
            for n in range(1, plan.images + 1):
                images.append(make_image(item, plan.station, study_uid, series_uid, s, n))
        for _ in range(min(plan.not_stored, len(images))):
            missing = images.pop()
            listed_only.append((missing.SeriesInstanceUID, missing.SOPClassUID,
                                missing.SOPInstanceUID))
        if plan.store is not None and images:
            store(plan, images)
            say(f"store: {len(images)} image(s) sent to {plan.store.ae_title}")
        if plan.ian_to is not None and images:
            send_ian(plan, study_uid, mpps_uid, images)
            say(f"ian: {len(images)} image(s) ONLINE notified to {plan.ian_to.ae_title}")
        final = completed(images, listed_only, plan.discontinue)
        final_sent_at = clock.time()
        status, _ = assoc.send_n_set(final, ModalityPerformedProcedureStep, mpps_uid)
        _check(status, f"N-SET {final.PerformedProcedureStepStatus}")
        say(f"mpps: {final.PerformedProcedureStepStatus} {mpps_uid} listing "
            f"{len(images) + len(listed_only)} instance(s)")
    finally:
        if assoc.is_established:
            assoc.release()
    return Result(item, mpps_uid, study_uid, str(final.PerformedProcedureStepStatus),
                  [(i.SeriesInstanceUID, i.SOPClassUID, i.SOPInstanceUID) for i in images],
                  listed_only, final_sent_at)


def _check(status: Dataset, what: str) -> None:
    code = int(status.Status) if status else -1
    if code != 0:
        comment = str(status.get("ErrorComment", "")) if status else "no answer"
        raise SimulationError(f"{what} failed: status {code:#06x} {comment}".strip())
