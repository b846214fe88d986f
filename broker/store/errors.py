"""The store's own exception types: callers catch these, never a database driver's."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The database could not commit; nothing of the job was stored."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or read (missing file, permissions, corruption)."""


class StoreTimeout(StoreError, TimeoutError):
    """The store did not answer in time (writer queue or a lock held too long)."""


class Conflict(StoreError):
    """The job broke a constraint of stored data (a duplicate key, a dangling reference):
    the job's own error, reported to its caller alone."""
