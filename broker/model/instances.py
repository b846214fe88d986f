"""Instances an MPPS lists, and what is known of them for the completion rule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instance:
    sop_instance_uid: str
    sop_class_uid: str = ""
    series_uid: str = ""


@dataclass(slots=True)
class Facts:
    """What is known of an MPPS's instances, for the completion rule and its notice."""

    instances: int = 0
    series: int = 0
    committed: int = 0
    failed: int = 0
    available: int = 0
    commitment_state: str = ""  # '' (none), queued, requested, committed, failed, timed_out
    commitment_reason: str = ""
    transaction_uid: str = ""
    retrieve_aes: tuple[str, ...] = ()
