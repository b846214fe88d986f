"""Worklist files (``*.wl``, as served by DCMTK wlmscpfs or Orthanc) → domain orders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from broker.mapping.engine import generate_study_uid
from broker.model.orders import (
    Attrs,
    OrderAction,
    OrderChange,
    Patient,
    PatientKey,
    Procedure,
    Step,
    StepStatus,
)

#: attributes of the Patient modules; every other top-level one belongs to the request
PATIENT_KEYWORDS = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAge", "PatientSize",
    "PatientWeight", "PatientAddress", "PatientTelephoneNumbers", "EthnicGroup",
    "PatientComments", "MedicalAlerts", "Allergies", "SmokingStatus", "PregnancyStatus",
    "LastMenstrualDate", "SpecialNeeds", "PatientState", "AdditionalPatientHistory",
    "ConfidentialityConstraintOnPatientDataDescription", "PatientSpeciesDescription",
    "ResponsiblePerson", "PatientIdentityRemoved",
})
SKIPPED = frozenset({"SpecificCharacterSet"})


class ImportError_(ValueError):
    """A worklist file cannot be imported; the message says which and why."""


@dataclass(slots=True)
class Imported:
    path: Path
    order: OrderChange


def to_attrs(ds: Dataset) -> Attrs:
    """A dataset as domain attributes (keyword → str | list[str] | list[Attrs])."""
    attrs: Attrs = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or keyword in SKIPPED or elem.tag.group in (0x0002, 0xFFFE):
            continue
        value = elem.value
        if elem.VR == "SQ":
            attrs[keyword] = [to_attrs(item) for item in value]
        elif value is None or value == "":
            continue
        elif elem.VM > 1:
            attrs[keyword] = [str(v) for v in value]
        else:
            attrs[keyword] = _text(value)
    return attrs


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def read_worklist_file(path: Path) -> Imported:
    try:
        ds = dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise ImportError_(f"{path}: not a DICOM file ({exc})") from exc
    return Imported(path, order_of(ds, str(path), path.name))


def order_of(ds: Dataset, where: str, seed: str, control: str = "IMPORT") -> OrderChange:
    """A worklist item (a file's data set, or a C-FIND answer) as an order; ``where`` names
    it in errors, ``seed`` derives a Study Instance UID for an item without one, accession
    number and requested procedure ID."""
    return order_of_attrs(to_attrs(ds), where, seed, control)


def order_of_attrs(attrs: Attrs, where: str, seed: str, control: str = "IMPORT"
                   ) -> OrderChange:
    """:func:`order_of` from the item's :func:`to_attrs` (which it takes over)."""
    sps_items = attrs.pop("ScheduledProcedureStepSequence", None) or [{}]
    patient_id = str(attrs.get("PatientID", "")).strip()
    if not patient_id:
        raise ImportError_(f"{where}: no Patient ID (0010,0020)")
    patient = Patient(PatientKey(patient_id, str(attrs.get("IssuerOfPatientID", "")).strip()),
                      {k: v for k, v in attrs.items() if k in PATIENT_KEYWORDS
                       and k not in ("PatientID", "IssuerOfPatientID")})
    procedure = Procedure({k: v for k, v in attrs.items() if k not in PATIENT_KEYWORDS})
    if not procedure.study_uid:
        seeds = [str(attrs.get(k, "")) for k in ("AccessionNumber", "RequestedProcedureID")]
        if not any(seeds):
            seeds = [patient_id, seed]
        procedure.attrs["StudyInstanceUID"] = generate_study_uid("import", "", seeds)
        procedure.generated_uid = True
    statuses = []
    for index, item in enumerate(sps_items, start=1):
        step = dict(item)
        step.setdefault("ScheduledProcedureStepID", str(index))
        statuses.append(step.pop("ScheduledProcedureStepStatus", "SCHEDULED"))
        procedure.steps.append(Step(step))
    try:
        status = StepStatus(str(statuses[0]).strip().upper() or "SCHEDULED")
    except ValueError:
        status = StepStatus.SCHEDULED
    return OrderChange(patient, procedure, OrderAction.UPSERT, status, control, "cancel")


def group_by_study(items: list[Imported]) -> list[tuple[list[Path], OrderChange]]:
    """One order per requested procedure: wlmscpfs and Orthanc keep one file per scheduled
    step, so files that share a Study Instance UID are the steps of one procedure."""
    groups: dict[str, tuple[list[Path], OrderChange]] = {}
    for item in items:
        uid = item.order.procedure.study_uid
        if uid in groups:
            paths, order = groups[uid]
            paths.append(item.path)
            known = {s.sps_id for s in order.procedure.steps}
            order.procedure.steps.extend(s for s in item.order.procedure.steps
                                         if s.sps_id not in known)
        else:
            groups[uid] = ([item.path], item.order)
    return list(groups.values())


def worklist_files(folder: Path) -> Iterator[Path]:
    """``*.wl`` files below the folder (DCMTK and Orthanc worklist folders)."""
    yield from sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".wl")
