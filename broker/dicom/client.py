"""A worklist SCU (findscu-like) that can keep its association open between queries."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from broker.dicom.status import PENDING, PENDING_WARNING

SPS_KEYWORDS = frozenset({
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus", "ScheduledStationName", "ScheduledProcedureStepLocation",
    "ScheduledProtocolCodeSequence", "PreMedication", "RequestedContrastAgent",
    "CommentsOnTheScheduledProcedureStep", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime",
})
DEFAULT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex", "AccessionNumber", "RequestedProcedureID",
                "RequestedProcedureDescription", "StudyInstanceUID", "Modality",
                "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID",
                "ScheduledProcedureStepDescription", "ScheduledProcedureStepStatus")


class QueryFailed(RuntimeError):
    """The association could not be made, or the SCP answered with a failure status."""


def keyword_of(name: str) -> str:
    """A keyword from 'PatientName' or '(0010,0010)' / '00100010'."""
    text = name.strip()
    if text in keyword_dict:
        return text
    digits = text.strip("()").replace(",", "")
    try:
        tag = Tag(int(digits, 16))
    except ValueError as exc:
        raise ValueError(f"{name!r} is neither a DICOM keyword nor a tag") from exc
    from pydicom.datadict import keyword_for_tag

    keyword = keyword_for_tag(tag)
    if not keyword:
        raise ValueError(f"{name!r} is not a tag of the DICOM dictionary")
    return str(keyword)


def build_query(keys: dict[str, str]) -> Dataset:
    """An MWL identifier: SPS attributes go into the SPS sequence item, the rest at the top."""
    ds = Dataset()
    item = Dataset()
    for name, value in keys.items():
        keyword = keyword_of(name)
        target = item if keyword in SPS_KEYWORDS else ds
        vr = dictionary_VR(keyword_dict[keyword])
        if vr == "SQ":
            setattr(target, keyword, [])
        else:
            setattr(target, keyword, value or None)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def query_keys(extra: Iterable[str] = (), station: str = "", date: str = "",
               modality: str = "") -> dict[str, str]:
    """The default return keys, then ``KEY=VALUE`` items and the shortcuts."""
    keys: dict[str, str] = dict.fromkeys(DEFAULT_KEYS, "")
    for item in extra:
        name, _, value = item.partition("=")
        keys[keyword_of(name)] = value
    if station:
        keys["ScheduledStationAETitle"] = station
    if date:
        keys["ScheduledProcedureStepStartDate"] = date
    if modality:
        keys["Modality"] = modality
    return keys


@dataclass
class FindResult:
    status: int
    matches: list[Dataset] = field(default_factory=list)
    warnings: int = 0
    comment: str = ""


class WorklistClient:
    """One association, many queries (TCP_NODELAY on)."""

    def __init__(self, host: str, port: int, *, called: str = "MWLBROKER",
                 calling: str = "MWLQUERY", timeout: float = 30,
                 tls_args: tuple[ssl.SSLContext, str] | None = None) -> None:
        self.host, self.port, self.called = host, port, called
        self.tls_args = tls_args
        self.ae = AE(ae_title=calling)
        self.ae.add_requested_context(ModalityWorklistInformationFind)
        self.ae.add_requested_context(Verification)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout
        self.assoc: Association | None = None

    def __enter__(self) -> WorklistClient:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        assoc = self.ae.associate(self.host, self.port, ae_title=self.called,
                                  tls_args=self.tls_args)
        if not assoc.is_established:
            raise QueryFailed(f"association with {self.called} at {self.host}:{self.port} "
                              "was rejected or failed")
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.assoc = assoc

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def echo(self) -> int:
        assert self.assoc is not None
        status = self.assoc.send_c_echo()
        return int(status.Status) if status else -1

    def find(self, identifier: Dataset, cancel_after: int | None = None) -> FindResult:
        """Send one C-FIND; ``cancel_after`` sends a C-CANCEL after that many matches."""
        if self.assoc is None:
            self.open()
        assert self.assoc is not None
        result = FindResult(status=-1)
        responses = self.assoc.send_c_find(identifier, ModalityWorklistInformationFind)
        for status, ds in responses:
            if not status:
                raise QueryFailed("no answer (timeout or aborted association)")
            code = int(status.Status)
            if code in (PENDING, PENDING_WARNING) and ds is not None:
                result.matches.append(ds)
                result.warnings += code == PENDING_WARNING
                if cancel_after is not None and len(result.matches) == cancel_after:
                    self.assoc.send_c_cancel(1, query_model=ModalityWorklistInformationFind)
                continue
            result.status = code
            result.comment = str(status.get("ErrorComment", ""))
        return result
