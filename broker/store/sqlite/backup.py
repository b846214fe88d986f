"""Online backup: a consistent copy of the database while the broker keeps writing."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from broker.store.sqlite.connection import create_private, schema_version
from broker.store.sqlite.health import integrity_problems, table_counts


class BackupError(RuntimeError):
    """The backup was not made; the message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    schema_version: int
    counts: dict[str, int]


def backup(source: str | Path, target: str | Path, *, force: bool = False,
           busy_timeout_ms: int = 5000) -> BackupResult:
    """Copy ``source`` to ``target`` with SQLite's online backup API, check the copy with
    ``PRAGMA integrity_check``, then move it into place (never a half-written ``target``)."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise BackupError(f"database {source} does not exist (check database.path)")
    if target.exists() and not force:
        raise BackupError(f"{target} already exists; choose another file or add --force")
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{target} is the database itself; choose another file")
    if not target.parent.is_dir():
        raise BackupError(f"folder {target.parent} does not exist")
    partial = target.with_name(target.name + ".partial")
    _remove(partial)
    try:
        result = _copy(source, partial, busy_timeout_ms)
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    except sqlite3.Error as exc:
        _remove(partial)
        raise BackupError(f"backup of {source} to {target} failed: {exc}") from exc
    except BaseException:
        _remove(partial)
        raise
    return BackupResult(target, target.stat().st_size, result[0], result[1])


def _copy(source: Path, partial: Path, busy_timeout_ms: int) -> tuple[int, dict[str, int]]:
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True)
    create_private(partial)  # a backup holds patient data: readable by this user only
    dst = sqlite3.connect(str(partial), isolation_level=None)
    try:
        src.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # One step: a single read snapshot (WAL: the broker's writer is not held up); a
        # copy in several steps would restart each time the broker commits.
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        problems = integrity_problems(dst)
        if problems:
            raise BackupError(f"the copy of {source} fails integrity_check: "
                              + "; ".join(problems))
        return schema_version(dst), table_counts(dst)
    finally:
        dst.close()
        src.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    for extra in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{extra}").unlink()
