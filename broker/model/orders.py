"""Domain types shared by the mapping engine, the workflow and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: DICOM attributes by keyword: str, list[str] (multi-valued) or list[Attrs] (sequence).
Attrs = dict[str, Any]


class StepStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    READY = "READY"
    STARTED = "STARTED"
    DEPARTED = "DEPARTED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"


class OrderAction(StrEnum):
    """What an order message does to its requested procedure."""

    UPSERT = "upsert"  # create, or replace the step set of an existing procedure
    STATUS = "status"  # set the status of every step of an existing procedure


@dataclass(frozen=True, slots=True)
class PatientKey:
    patient_id: str
    issuer: str = ""

    def __str__(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}" if self.issuer else self.patient_id


@dataclass(slots=True)
class Patient:
    key: PatientKey
    attrs: Attrs = field(default_factory=dict)


@dataclass(slots=True)
class Step:
    attrs: Attrs = field(default_factory=dict)

    @property
    def sps_id(self) -> str:
        return str(self.attrs.get("ScheduledProcedureStepID", ""))


@dataclass(slots=True)
class Procedure:
    attrs: Attrs = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    generated_uid: bool = False  # the Study Instance UID was derived, not sent

    @property
    def study_uid(self) -> str:
        return str(self.attrs.get("StudyInstanceUID", ""))


@dataclass(slots=True)
class PatientUpdate:
    patient: Patient
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PatientMerge:
    surviving: Patient
    prior: PatientKey
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PatientIdChange:
    patient: Patient
    old: PatientKey
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class OrderChange:
    patient: Patient | None
    procedure: Procedure
    action: OrderAction
    status: StepStatus
    control: str
    absent_steps: str = "cancel"  # what happens to steps an update leaves out: cancel | delete
    origin: dict[str, str] = field(default_factory=dict)


Event = PatientUpdate | PatientMerge | PatientIdChange | OrderChange


class DomainError(Exception):
    """A message is well formed but cannot be applied (unknown order, ID conflict …).

    ``keyword`` names the attribute at fault so the caller can point at the HL7 field;
    ``kind`` is one of 'unknown', 'conflict', 'missing', 'invalid'.
    """

    def __init__(self, reason: str, keyword: str = "", kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.keyword = keyword
        self.kind = kind
