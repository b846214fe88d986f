"""The UPS state machine (PS3.4 CC.1.1, Table CC.1.1-2) and the status each refused
transition answers with: pure rules, no store, no DIMSE (the SCP and UPS-RS share them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.model.orders import StepStatus
from broker.model.ups import FINAL_STATES, UpsState

# PS3.4 Table CC.2-1 (the names pynetdicom's status table gives them)
CREATED_WITH_MODIFICATIONS = 0xB300
DELETION_LOCK_NOT_GRANTED = 0xB301
ALREADY_CANCELED = 0xB304
ALREADY_COMPLETED_WARNING = 0xB306
NO_LONGER_UPDATABLE = 0xC300
WRONG_TRANSACTION_UID = 0xC301
ALREADY_IN_PROGRESS = 0xC302
ONLY_SCHEDULED_BY_CREATE = 0xC303
FINAL_STATE_NOT_MET = 0xC304
NO_SUCH_WORKITEM = 0xC307
UNKNOWN_RECEIVING_AE = 0xC308
NOT_SCHEDULED_AT_CREATE = 0xC309
NOT_IN_PROGRESS = 0xC310
ALREADY_COMPLETED = 0xC311
PERFORMER_NOT_CONTACTED = 0xC312
PERFORMER_CHOOSES_NOT_TO_CANCEL = 0xC313
ACTION_NOT_APPROPRIATE = 0xC314
DUPLICATE_INSTANCE = 0x0111
MISSING_ATTRIBUTE = 0x0120
INVALID_VALUE = 0x0106
NOT_AUTHORIZED = 0x0124

#: attributes of the Unified Procedure Step Performed Procedure Sequence item that must be
#: there before a workitem may become COMPLETED (PS3.4 Table CC.2.5-3, "Final State")
COMPLETED_REQUIRES = ("PerformedProcedureStepStartDateTime",
                      "PerformedProcedureStepEndDateTime")
#: ... and that must be there, possibly empty (Type 2 in that sequence, final state "P")
COMPLETED_PRESENT = ("PerformedStationNameCodeSequence", "PerformedWorkitemCodeSequence",
                     "OutputInformationSequence")
PERFORMED = "UnifiedProcedureStepPerformedProcedureSequence"


class UpsError(Exception):
    """A refused (or, for a warning status, accepted but noted) UPS request: the DIMSE
    status, its Error Comment, and for UPS-RS the HTTP status it maps to."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment

    @property
    def warning(self) -> bool:
        return 0xB000 <= self.status <= 0xBFFF


@dataclass(frozen=True, slots=True)
class Transition:
    """What a state change does: the new state, the step status it gives, the Transaction
    UID the workitem keeps (None: unchanged), and a warning status when nothing changed."""

    state: UpsState
    step_status: StepStatus | None
    transaction_uid: str | None = None
    warning: int = 0


def change_state(current: UpsState, kept_uid: str, requested: str, given_uid: str,
                 performed: dict[str, Any]) -> Transition:
    """An N-ACTION Change State (or UPS-RS state change) from ``current``: ``kept_uid`` is
    the workitem's Transaction UID, ``given_uid`` the request's, ``performed`` the stored
    performed-procedure attributes (the final state requirements)."""
    try:
        target = UpsState(requested.strip())
    except ValueError:
        raise UpsError(INVALID_VALUE, f"Procedure Step State {requested!r} is not "
                       "IN PROGRESS, COMPLETED or CANCELED") from None
    if target is UpsState.SCHEDULED:
        raise UpsError(ONLY_SCHEDULED_BY_CREATE, "a workitem becomes SCHEDULED by N-CREATE "
                       "only, not by a state change")
    if current in FINAL_STATES:
        if current is target:
            return Transition(current, None, None, ALREADY_CANCELED if target is
                              UpsState.CANCELED else ALREADY_COMPLETED_WARNING)
        raise UpsError(NO_LONGER_UPDATABLE, f"the workitem is {current} and may no longer "
                       "change state")
    if target is UpsState.IN_PROGRESS:
        if current is UpsState.IN_PROGRESS:
            raise UpsError(ALREADY_IN_PROGRESS, "the workitem is already IN PROGRESS (claimed "
                           "by another performer)")
        if not given_uid.strip():
            raise UpsError(WRONG_TRANSACTION_UID, "claiming a workitem needs a Transaction "
                           "UID (0008,1195) of the performer's own")
        return Transition(UpsState.IN_PROGRESS, StepStatus.STARTED, given_uid.strip())
    if current is UpsState.SCHEDULED:
        raise UpsError(NOT_IN_PROGRESS, f"the workitem is SCHEDULED: claim it (IN PROGRESS) "
                       f"before it can become {target}; to cancel a scheduled workitem, "
                       "request its cancellation")
    check_transaction(kept_uid, given_uid)
    if target is UpsState.COMPLETED:
        missing = [k for k in COMPLETED_REQUIRES if not performed.get(k)] + [
            k for k in COMPLETED_PRESENT if k not in performed]
        if missing:
            raise UpsError(FINAL_STATE_NOT_MET, f"COMPLETED needs {', '.join(missing)} in the "
                           f"{PERFORMED} (set them with N-SET first)")
        return Transition(UpsState.COMPLETED, StepStatus.COMPLETED)
    return Transition(UpsState.CANCELED, StepStatus.DISCONTINUED)


def check_transaction(kept_uid: str, given_uid: str) -> None:
    """An IN PROGRESS workitem changes only for the performer holding its Transaction UID."""
    if not given_uid.strip() or given_uid.strip() != kept_uid:
        raise UpsError(WRONG_TRANSACTION_UID, "the workitem is IN PROGRESS: give the "
                       "Transaction UID of the performer that claimed it")


def check_update(current: UpsState, kept_uid: str, given_uid: str) -> None:
    """N-SET (or UPS-RS update): a SCHEDULED workitem by anyone, an IN PROGRESS one by its
    performer, a final one by nobody."""
    if current in FINAL_STATES:
        raise UpsError(NO_LONGER_UPDATABLE, f"the workitem is {current} and may no longer "
                       "be updated")
    if current is UpsState.IN_PROGRESS:
        check_transaction(kept_uid, given_uid)


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """A cancellation request: ``canceled`` when it ended the workitem at once (it was
    SCHEDULED), else the performer is told (an IN PROGRESS workitem); ``warning`` when it
    was CANCELED already."""

    canceled: bool
    warning: int = 0


def request_cancel(current: UpsState) -> CancelOutcome:
    if current is UpsState.SCHEDULED:
        return CancelOutcome(True)
    if current is UpsState.IN_PROGRESS:
        return CancelOutcome(False)
    if current is UpsState.CANCELED:
        return CancelOutcome(False, ALREADY_CANCELED)
    raise UpsError(ALREADY_COMPLETED, "the workitem is COMPLETED: it cannot be canceled")
