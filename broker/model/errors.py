"""Domain errors: what is wrong with a request, in the workflow's words (no protocol codes).

The protocol layers map a kind to their own answer (DICOM: a status and an Error ID; HL7: an
ACK code); the message is human-readable and names the attribute or object concerned.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    MISSING_ATTRIBUTE = "missing_attribute"  # a required attribute is absent
    MISSING_VALUE = "missing_value"  # a required attribute is present but empty
    INVALID_VALUE = "invalid_value"  # a value is not one the standard or the broker allows
    DUPLICATE = "duplicate"  # an object with this identity exists already
    NOT_FOUND = "not_found"  # the object the request names does not exist
    NO_LONGER_UPDATABLE = "no_longer_updatable"  # the object is final
    STORE_UNAVAILABLE = "store_unavailable"  # the store could not commit: nothing was stored
    BUSY = "busy"  # the store did not answer in time; the same request may be sent again


class DomainError(Exception):
    """A request the broker refuses, with its kind and a message naming what is wrong."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
