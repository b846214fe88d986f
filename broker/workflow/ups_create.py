"""What a UPS Push N-CREATE must hold (PS3.4 Table CC.2.5-3, the N-CREATE column) and what
the SCP changed of it (Warning B300, "created with modifications"): pure rules over the
request's attributes by keyword, shared by the DIMSE SCP and UPS-RS."""

from __future__ import annotations

from typing import Any

from broker.model.orders import Attrs
from broker.workflow.ups import (
    CREATED_WITH_MODIFICATIONS,
    INVALID_VALUE,
    MISSING_ATTRIBUTE,
    NOT_SCHEDULED_AT_CREATE,
    PERFORMED,
    UpsError,
)

MISSING_VALUE = 0x0121
#: Type 1 at N-CREATE: present with a value (absent 0120, empty 0121)
REQUIRED = (("ScheduledProcedureStepPriority", "(0074,1200)"),
            ("ProcedureStepLabel", "(0074,1204)"),
            ("ScheduledProcedureStepStartDateTime", "(0040,4005)"),
            ("InputReadinessState", "(0040,4041)"))
#: enumerated values of the Type 1 attributes (PS3.3 C.30.2)
ENUMERATED = {"ScheduledProcedureStepPriority": ("HIGH", "MEDIUM", "LOW"),
              "InputReadinessState": ("READY", "UNAVAILABLE", "INCOMPLETE")}
#: what the SCP itself sets or that only later requests may give (not compared)
NOT_COMPARED = frozenset({"SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet",
                          "TransactionUID", PERFORMED,
                          "ScheduledProcedureStepModificationDateTime"})


def check_create(attrs: Attrs) -> None:
    """Refuse an N-CREATE that lacks what a workitem must have when it is created."""
    state = str(attrs.get("ProcedureStepState", "") or "").strip()
    if state != "SCHEDULED":
        raise UpsError(NOT_SCHEDULED_AT_CREATE, f"Procedure Step State (0074,1000) is "
                       f"{state or 'empty'}: a new workitem is SCHEDULED")
    for keyword, tag in REQUIRED:
        if keyword not in attrs:
            raise UpsError(MISSING_ATTRIBUTE, f"{keyword} {tag} is missing: it is Type 1 when "
                           "a workitem is created (PS3.4 Table CC.2.5-3)")
        value = str(attrs.get(keyword) or "").strip()
        if not value:
            raise UpsError(MISSING_VALUE, f"{keyword} {tag} is empty: it needs a value when a "
                           "workitem is created")
        allowed = ENUMERATED.get(keyword)
        if allowed is not None and value not in allowed:
            raise UpsError(INVALID_VALUE, f"{keyword} {tag} {value!r} is not one of "
                           f"{', '.join(allowed)}")
    if not str(attrs.get("PatientID", "") or "").strip():
        raise UpsError(MISSING_ATTRIBUTE, "Patient ID (0010,0020) is missing: the broker's "
                       "workitems are a patient's scheduled steps")


def dropped(attrs: Attrs) -> list[str]:
    """What an N-CREATE may not set, which the SCP leaves out: a Transaction UID (the
    performer gives it when it claims the workitem) and a performed procedure (filled in
    while the workitem is IN PROGRESS)."""
    out = []
    if str(attrs.get("TransactionUID", "") or "").strip():
        out.append("TransactionUID")
    if attrs.get(PERFORMED) not in (None, "", [], [{}]):
        out.append(PERFORMED)
    return out


def _same(given: Any, stored: Any) -> bool:
    if isinstance(given, list) and isinstance(stored, list):
        return len(given) == len(stored) and all(_same(g, s) for g, s in zip(
            given, stored, strict=True))
    if isinstance(given, dict) and isinstance(stored, dict):
        return all(_same(v, stored.get(k)) for k, v in given.items() if v not in ("", None))
    if given in ("", None, []):
        return stored in ("", None, [], [{}])
    return str(given).strip() == str(stored if stored is not None else "").strip()


def modifications(given: Attrs, stored: Attrs) -> list[str]:
    """The attributes the request gave that the created workitem holds otherwise."""
    return [key for key, value in given.items()
            if key not in NOT_COMPARED and not _same(value, stored.get(key))]


def created_comment(changed: list[str], left_out: list[str]) -> tuple[int, str]:
    """The warning status and Error Comment of a created workitem (0 when none); the
    comment names the attributes first (an Error Comment holds 64 characters)."""
    notes = []
    if changed:
        notes.append("modified " + ", ".join(changed))
    if left_out:
        notes.append("left out " + ", ".join(left_out))
    return (CREATED_WITH_MODIFICATIONS, "; ".join(notes)) if notes else (0, "")
