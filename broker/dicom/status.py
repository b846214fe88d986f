"""DIMSE statuses the broker sends or reads, by their names in PS3.7 Annex C and PS3.4, and
the one failure type a handler raises to answer with a failure status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.dataset import Dataset

from broker.model.errors import DomainError, ErrorKind

# -- general (PS3.7 C.1 - C.4) ------------------------------------------------------------------
SUCCESS = 0x0000
PENDING = 0xFF00
#: C-FIND pending: one or more Optional Keys were not supported (PS3.4 C.4.1.1.4)
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
#: warning: requested optional attributes are not supported (N-CREATE, N-SET)
OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001
INVALID_ATTRIBUTE_VALUE = 0x0106
#: warning on N-CREATE / N-SET: an attribute list error
ATTRIBUTE_LIST_ERROR = 0x0107
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_EVENT_TYPE = 0x0113
INVALID_ARGUMENT_VALUE = 0x0115
#: warning on N-CREATE / N-SET: an attribute value out of range
ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
NO_SUCH_SOP_CLASS = 0x0118
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121

# -- C-FIND (PS3.4 C.4.1.1.4) --------------------------------------------------------------------
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
#: unable to process: a matching value the broker cannot match
UNABLE_TO_PROCESS = 0xC000
#: unable to process: the worklist store failed
UNABLE_TO_PROCESS_STORE = 0xC001

# -- C-STORE warnings (PS3.4 B.2.3) --------------------------------------------------------------
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007

# -- Error IDs (PS3.4 F.7.2.2) -------------------------------------------------------------------
#: Processing failure, Error ID: the Performed Procedure Step may no longer be updated
MPPS_MAY_NO_LONGER_BE_UPDATED = 0xA710

MAX_COMMENT = 64  # Error Comment is LO


def status_dataset(status: int, comment: str, error_id: int | None = None) -> Dataset:
    """A DIMSE failure status with its Error Comment (cut to the 64 characters LO allows)
    and, when given, its Error ID."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:MAX_COMMENT]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds


class DimseFailure(Exception):
    """A request the broker refuses: the status, what was wrong (``comment``, whole for the
    log) and an optional Error ID."""

    def __init__(self, status: int, comment: str, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id

    def dataset(self) -> Dataset:
        """The status dataset that answers the request (the comment cut to 64 characters)."""
        return status_dataset(self.status, self.comment, self.error_id)


@dataclass(slots=True)
class Attempt:
    """What an ``attempt()`` block answers: ``failure`` stays None while it succeeds."""

    failure: DimseFailure | None = None

    def dataset(self) -> Dataset | None:
        """The failure status dataset, or None on success."""
        return None if self.failure is None else self.failure.dataset()


@contextmanager
def attempt(status: int = PROCESSING_FAILURE, what: str = "") -> Iterator[Attempt]:
    """Run a handler step, turning the exception that ends it into one failure: a
    DimseFailure as raised, any other exception as ``status`` with ``what: <exception>``
    as its comment (modelled on ``pynetdicom.service_class.attempt``)."""
    outcome = Attempt()
    try:
        yield outcome
    except DimseFailure as exc:
        outcome.failure = exc
    except Exception as exc:  # the peer gets a status, not a dropped association
        outcome.failure = DimseFailure(status, f"{what}: {exc}" if what else str(exc))


#: the status (and Error ID) that answers a request refused with a domain error kind
KIND_STATUS: dict[ErrorKind, tuple[int, int | None]] = {
    ErrorKind.MISSING_ATTRIBUTE: (MISSING_ATTRIBUTE, None),
    ErrorKind.MISSING_VALUE: (MISSING_ATTRIBUTE_VALUE, None),
    ErrorKind.INVALID_VALUE: (INVALID_ATTRIBUTE_VALUE, None),
    ErrorKind.DUPLICATE: (DUPLICATE_SOP_INSTANCE, None),
    ErrorKind.NOT_FOUND: (NO_SUCH_OBJECT_INSTANCE, None),
    ErrorKind.NO_LONGER_UPDATABLE: (PROCESSING_FAILURE, MPPS_MAY_NO_LONGER_BE_UPDATED),
    ErrorKind.STORE_UNAVAILABLE: (PROCESSING_FAILURE, None),
    ErrorKind.BUSY: (PROCESSING_FAILURE, None),
}


def failure_of(error: DomainError) -> DimseFailure:
    """The DIMSE failure that answers a request the workflow refused with ``error``."""
    status, error_id = KIND_STATUS[error.kind]
    return DimseFailure(status, error.message, error_id)
