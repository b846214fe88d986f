"""``mwl-broker backup``: a consistent, verified copy while the writer keeps committing."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from broker import cli
from broker.model.orders import PatientKey
from broker.store.messages import MessageRecord
from broker.store.sqlite.backup import BackupError, backup
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.sqlite_only  # the SQLite file itself

JOBS = 1000


def admit(n: int) -> object:
    """One transaction, two rows: a patient and the message that brought it."""
    def work(uow: UnitOfWork) -> None:
        uow.orders.insert_patient(PatientKey(f"P{n:06d}"), {"PatientName": f"DOE^{n}"})
        uow.messages.log_message(MessageRecord(time.time(), "127.0.0.1:1", "RIS", "HOSP", f"M{n}",
                                       "ADT^A04", "ascii", "AA", "", "", b"MSH|..."))
    return work


def counts(path: Path) -> tuple[int, int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        patients = conn.execute("SELECT COUNT(*) FROM patients").fetchone()[0]
        logged = conn.execute("SELECT COUNT(*) FROM message_log").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return patients, logged, mode
    finally:
        conn.close()


def test_backup_while_the_writer_commits(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "broker.sqlite", synchronous="NORMAL")
    writer.start()
    failures: list[BaseException] = []

    def load() -> None:
        try:
            for n in range(JOBS):
                writer.run_sync(admit(n), timeout=30)  # type: ignore[arg-type]
        except BaseException as exc:
            failures.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        deadline = time.monotonic() + 30
        while writer.jobs < JOBS // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        copies = [backup(writer.path, tmp_path / f"copy{i}.sqlite") for i in range(3)]
    finally:
        loader.join(60)
        writer.stop()
    assert not failures
    sizes = []
    for copy in copies:
        patients, logged, mode = counts(copy.path)
        assert patients == logged  # one snapshot: never half of a transaction
        assert copy.counts["patients"] == patients and copy.size == copy.path.stat().st_size
        assert mode == "delete"  # a single self-contained file
        sizes.append(patients)
    assert JOBS // 4 <= sizes[0] <= sizes[-1] <= JOBS
    assert sizes[0] < JOBS  # taken while the writer was still committing
    assert sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == [
        "copy0.sqlite", "copy1.sqlite", "copy2.sqlite"]  # no .partial left behind


def test_backup_command_refuses_to_overwrite_without_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "broker.sqlite"
    writer = Writer(db, synchronous="NORMAL")
    writer.start()
    try:
        for n in range(3):
            writer.run_sync(admit(n))  # type: ignore[arg-type]
    finally:
        writer.stop()
    target = tmp_path / "backup.sqlite"
    target.write_text("an older backup")
    option = ["-o", f"database.path={db}"]

    assert cli.main(["backup", str(target), *option]) == 1
    assert "already exists; choose another file or add --force" in capsys.readouterr().err
    assert target.read_text() == "an older backup"

    assert cli.main(["backup", str(target), "--force", *option]) == 0
    out = capsys.readouterr().out
    assert f"copied to {target}: {target.stat().st_size} bytes" in out
    assert "integrity_check ok" in out
    assert re.search(r"^  patients +3 row\(s\)$", out, re.M)
    assert counts(target)[:2] == (3, 3)

    assert cli.main(["backup", str(tmp_path / "x.sqlite"), "-o",
                     f"database.path={tmp_path / 'missing.sqlite'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(BackupError, match="is the database itself"):
        backup(db, db, force=True)
