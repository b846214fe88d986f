"""Unified Procedure Step (PS3.4 Annex CC) in domain terms: the four states, how the
scheduled steps' statuses read as them, the well-known UIDs, action and event type IDs."""

from __future__ import annotations

import uuid
from enum import IntEnum, StrEnum

from broker.model.orders import StepStatus


class UpsState(StrEnum):
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    CANCELED = "CANCELED"
    COMPLETED = "COMPLETED"


FINAL_STATES = frozenset({UpsState.CANCELED, UpsState.COMPLETED})

#: a scheduled step's status as a workitem's state (one set of steps, two views)
STATE_OF = {
    StepStatus.SCHEDULED: UpsState.SCHEDULED, StepStatus.ARRIVED: UpsState.SCHEDULED,
    StepStatus.READY: UpsState.SCHEDULED, StepStatus.STARTED: UpsState.IN_PROGRESS,
    StepStatus.DEPARTED: UpsState.IN_PROGRESS, StepStatus.COMPLETED: UpsState.COMPLETED,
    StepStatus.DISCONTINUED: UpsState.CANCELED, StepStatus.CANCELED: UpsState.CANCELED,
}
#: the step status a workitem's new state gives its step
STEP_STATUS_OF = {UpsState.SCHEDULED: StepStatus.SCHEDULED,
                  UpsState.IN_PROGRESS: StepStatus.STARTED,
                  UpsState.COMPLETED: StepStatus.COMPLETED,
                  UpsState.CANCELED: StepStatus.DISCONTINUED}


def state_of(status: str) -> UpsState:
    return STATE_OF[StepStatus(status)]


class ActionType(IntEnum):
    """N-ACTION Action Type IDs of the UPS SOP Classes (PS3.4 CC.2.1, CC.2.3)."""

    CHANGE_STATE = 1
    REQUEST_CANCEL = 2
    SUBSCRIBE = 3
    UNSUBSCRIBE = 4
    SUSPEND_GLOBAL = 5


class EventType(IntEnum):
    """N-EVENT-REPORT Event Type IDs of the UPS Event SOP Class (PS3.4 CC.2.4)."""

    STATE_REPORT = 1
    CANCEL_REQUESTED = 2
    PROGRESS_REPORT = 3
    SCP_STATUS_CHANGE = 4
    ASSIGNED = 5


#: the performer (calling AE) the broker records for a UPS-RS request (HTTP names none)
WEB_PERFORMER = "DICOMWEB"
PUSH = "1.2.840.10008.5.1.4.34.6.1"
WATCH = "1.2.840.10008.5.1.4.34.6.2"
PULL = "1.2.840.10008.5.1.4.34.6.3"
EVENT = "1.2.840.10008.5.1.4.34.6.4"
QUERY = "1.2.840.10008.5.1.4.34.6.5"
#: the well-known SOP Instance of UPS Global Subscription, and its filtered form
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
FILTERED_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"

#: namespace of the UUIDs behind workitem UIDs the broker assigns (2.25.<uuid as integer>)
WORKITEM_UID_NAMESPACE = uuid.UUID("6a0f4a5e-5c59-4f7e-9a53-2f0d2c6b8d11")


def workitem_uid(step_id: int, created_at: float) -> str:
    """The SOP Instance UID a step gets as a workitem when no UPS Push gave it one: from
    its row id and creation time, which never change (the same on every broker)."""
    return f"2.25.{uuid.uuid5(WORKITEM_UID_NAMESPACE, f'{step_id}|{created_at!r}').int}"
