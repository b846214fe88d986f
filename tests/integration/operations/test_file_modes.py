"""The database, its WAL and shared-memory files and backups hold patient data: the broker
creates them readable by its own user only (0600), whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import cli
from tests.support.broker import BrokerProcess
from tests.support.mllp import msa, send
from tests.support.samples import order

pytestmark = pytest.mark.sqlite_only  # the SQLite file itself


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that lets everyone read new files (a common default)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_database_wal_shm_and_backup_are_private(tmp_path: Path, loose_umask: None) -> None:
    broker = BrokerProcess(tmp_path)
    broker.start()
    try:
        ack = asyncio.run(send(broker.port, order(1).encode()))[0]
        assert msa(ack)[1] == "AA"
        files = [broker.db, Path(f"{broker.db}-wal"), Path(f"{broker.db}-shm")]
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        copy = tmp_path / "copy.sqlite"
        assert cli.main(["backup", str(copy), "-o", f"database.path={broker.db}"]) == 0
        assert oct(mode(copy)) == "0o600"
        assert cli.main(["backup", str(copy), "--force",
                         "-o", f"database.path={broker.db}"]) == 0
        assert oct(mode(copy)) == "0o600"
    finally:
        broker.stop()
    assert oct(mode(broker.db)) == "0o600"
