"""The audit spool: a durable first-in first-out queue of syslog messages, one file per
message (``NNNNNNNNNNNNNNNNNNNN.msg``, numbered in the order they were recorded).

``put`` (any thread) writes the message's file and renames it into place: it survives the
broker's crash from then on. The sender reads a batch in order, which fsyncs each file and
the folder before the batch is sent, and removes the files once the repository took them.
A broker starting again finds what is left and sends it first. The folder is locked
(``flock``) so two brokers never share it; it holds patient data, so it is created 0700 and
its files 0600. Past ``max_bytes`` a new message is dropped, with an ERROR line when that
starts and a WARNING with the count when messages are taken again."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections import deque
from pathlib import Path

from broker.config import ConfigError
from broker.logs import event

log = logging.getLogger("broker.audit")
SUFFIX = ".msg"
END = b"</AuditMessage>"


class SpoolError(ConfigError):
    """The spool folder cannot be used (says which folder and why: the start stops)."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, int]] = deque()  # (number, size), oldest first
        self._bytes = 0
        self._next = 1
        self._synced = 0  # every message up to this number is on disk (fsync)
        self._dropped = 0
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None

    @property
    def count(self) -> int:
        return len(self._pending)

    @property
    def size(self) -> int:
        return self._bytes

    def open(self) -> int:
        """Lock the folder, clear unfinished writes, queue what a previous run left; returns
        how many messages wait."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"audit spool {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise SpoolError(f"audit spool {self.directory} is in use by another broker "
                             "(give each its own audit.spool_directory)") from None
        self._lock_fd = lock_fd
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        found: list[tuple[int, int]] = []
        for path in self.directory.iterdir():
            if path.suffix == ".tmp":  # a write that never finished: never acknowledged
                path.unlink(missing_ok=True)
            elif path.suffix == SUFFIX and path.stem.isdigit():
                found.append((int(path.stem), path.stat().st_size))
        with self._cond:
            self._pending = deque(sorted(found))
            self._bytes = sum(size for _, size in found)
            self._next = max((n for n, _ in found), default=0) + 1
            self._synced = 0
        return len(found)

    def close(self) -> None:
        with self._cond:
            for fd in (self._dir_fd, self._lock_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._dir_fd = self._lock_fd = None

    def put(self, data: bytes) -> bool:
        """Keep one message (any thread); False when the spool is full."""
        with self._cond:
            if self._lock_fd is None:
                raise SpoolError(f"audit spool {self.directory} is not open")
            if self._bytes + len(data) > self.max_bytes:
                self._full(len(data))
                return False
            number = self._next
            self._next += 1
            path = self._path(number)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._pending.append((number, len(data)))
            self._bytes += len(data)
            if self._dropped:
                event(log, "audit_spool_accepting", logging.WARNING, dropped=self._dropped,
                      spooled_bytes=self._bytes)
                self._dropped = 0
            self._cond.notify_all()
        return True

    def wait(self, timeout: float) -> None:
        """Until a message waits, ``wake`` is called, or ``timeout`` seconds passed."""
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def batch(self, max_count: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The oldest messages (at least one when any wait), each on disk before it is
        returned; a file that is not a whole message is set aside as ``.bad``."""
        with self._cond:
            if self._dir_fd is None:  # closed
                return []
            head = list(self._pending)[:max_count]
        out: list[tuple[int, bytes]] = []
        total = 0
        for number, _ in head:
            data = self._read(number)
            if data is None:
                self.remove([number])
                continue
            if out and total + len(data) > max_bytes:
                break
            out.append((number, data))
            total += len(data)
        unsynced = [n for n, _ in out if n > self._synced]
        if unsynced and self._dir_fd is not None:
            os.fsync(self._dir_fd)
            self._synced = max(unsynced)
        return out

    def remove(self, numbers: list[int]) -> None:
        """Forget messages the repository took (or that can never be sent)."""
        gone = set(numbers)
        for number in numbers:
            self._path(number).unlink(missing_ok=True)
        with self._cond:
            kept = deque(item for item in self._pending if item[0] not in gone)
            self._bytes -= sum(size for n, size in self._pending if n in gone)
            self._pending = kept

    def _read(self, number: int) -> bytes | None:
        path = self._path(number)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if number > self._synced:
                os.fsync(fd)
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
        finally:
            os.close(fd)
        if not data.startswith(b"<") or not data.rstrip().endswith(END):
            event(log, "audit_spool_corrupt", logging.ERROR, file=path.name, size=len(data),
                  kept_as=path.with_suffix(".bad").name)
            os.replace(path, path.with_suffix(".bad"))
            return None
        return data

    def _full(self, size: int) -> None:
        if not self._dropped:
            event(log, "audit_spool_full", logging.ERROR, directory=str(self.directory),
                  spooled_bytes=self._bytes, max_bytes=self.max_bytes, messages=self.count,
                  detail="new audit messages are dropped until the repository takes the "
                  "spooled ones (audit.spool_max_bytes)")
        self._dropped += 1

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{SUFFIX}"
