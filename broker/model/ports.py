"""The callback shapes the application wires between rooms, named in one place.

What travels into a callback that runs in a store job is the job's UnitOfWork (its
repositories), never a connection.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from broker.store.repo import OutboxRow
    from broker.store.unit_of_work import UnitOfWork


class Hl7Handler(Protocol):
    """An inbound HL7 message (raw bytes, peer address) → the bytes of its acknowledgement."""

    def __call__(self, raw: bytes, peer: str, /) -> Awaitable[bytes]: ...


class OversizeHandler(Protocol):
    """The start of a frame over the size limit and its size → the bytes of the AR to send."""

    def __call__(self, head: bytes, size: int, /) -> bytes: ...


class Notify(Protocol):
    """Queues the RIS messages of a status change: (unit of work, step ids, MPPS status,
    MPPS summary) → queued count."""

    def __call__(self, uow: UnitOfWork, steps: list[int], status: str,
                 summary: dict[str, Any], /) -> int: ...


class Final(Protocol):
    """Told when an MPPS becomes final: (unit of work, MPPS key, SOP Instance UID, status,
    summary, step ids) → queued count."""

    def __call__(self, uow: UnitOfWork, mpps_pk: int, uid: str, status: str,
                 summary: dict[str, Any], steps: list[int], /) -> int: ...


class Queued(Protocol):
    """Called, from any thread, after a committed job queued outbox messages."""

    def __call__(self) -> None: ...


class Settled(Protocol):
    """Told, inside the settling job, of an outbox entry's outcome and reason."""

    def __call__(self, uow: UnitOfWork, row: OutboxRow, outcome: str, reason: str, /) -> object: ...


class CommitmentReport(Protocol):
    """Handles a storage commitment report (from any association): (event type, event
    information, calling AE) → (status, error comment)."""

    def __call__(self, event_type: int, info: Dataset | None, calling_ae: str,
                 /) -> tuple[int, str]: ...


class Summarize(Protocol):
    """The stored MPPS (DICOM JSON) and its SOP Instance UID → what messages say of it."""

    def __call__(self, dataset: dict[str, Any], uid: str, /) -> dict[str, Any]: ...
