"""broker.audit.spool: a durable FIFO of audit messages that survives a restart, keeps its
order, refuses to be shared, and drops (loudly) past its size."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from broker.audit.spool import Spool, SpoolError


def msg(n: int, pad: int = 0) -> bytes:
    return b"<85>1 - - - - IHE+RFC-3881 - <AuditMessage>%d%s</AuditMessage>" % (n, b"x" * pad)


def test_messages_come_out_in_order_and_go_once_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    assert spool.open() == 0
    for n in range(5):
        assert spool.put(msg(n))
    batch = spool.batch(3, 1 << 20)
    assert [data for _, data in batch] == [msg(0), msg(1), msg(2)]
    spool.remove([number for number, _ in batch])
    assert [data for _, data in spool.batch(10, 1 << 20)] == [msg(3), msg(4)]
    assert spool.count == 2 and spool.size == len(msg(3)) + len(msg(4))


def test_a_batch_stops_at_its_byte_budget_but_holds_at_least_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    for n in range(3):
        spool.put(msg(n, pad=1000))
    assert len(spool.batch(10, 1500)) == 1
    assert len(spool.batch(10, 10)) == 1


def test_what_was_spooled_survives_a_restart_in_order(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.open()
    for n in range(4):
        first.put(msg(n))
    first.remove([first.batch(1, 1 << 20)[0][0]])
    first.close()  # or a crash: the files are in place from put() on
    (tmp_path / "00000000000000000099.tmp").write_bytes(b"<85>1 half a wri")
    again = Spool(tmp_path, 1 << 20)
    assert again.open() == 3
    assert not list(tmp_path.glob("*.tmp"))
    again.put(msg(9))
    assert [data for _, data in again.batch(10, 1 << 20)] == [msg(1), msg(2), msg(3), msg(9)]


def test_a_file_that_is_not_a_whole_message_is_set_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.put(msg(1))
    spool.put(msg(2))
    first = sorted(tmp_path.glob("*.msg"))[0]
    first.write_bytes(msg(1)[:20])  # a power cut before the data reached the disk
    assert [data for _, data in spool.batch(10, 1 << 20)] == [msg(2)]
    assert first.with_suffix(".bad").exists()
    assert [r.msg for r in caplog.records] == ["audit_spool_corrupt"]


def test_past_its_size_new_messages_are_dropped_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.audit")
    spool = Spool(tmp_path, 3 * len(msg(0)))
    spool.open()
    assert all(spool.put(msg(n)) for n in range(3))
    assert not spool.put(msg(3)) and not spool.put(msg(4))
    spool.remove([spool.batch(1, 1 << 20)[0][0]])
    assert spool.put(msg(5))
    events = [(r.msg, r.levelname, r.__dict__["fields"]) for r in caplog.records]
    assert [(name, level) for name, level, _ in events] == [
        ("audit_spool_full", "ERROR"), ("audit_spool_accepting", "WARNING")]
    assert events[1][2]["dropped"] == 2
    assert [data for _, data in spool.batch(10, 1 << 20)] == [msg(1), msg(2), msg(5)]


def test_two_brokers_cannot_share_a_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.open()
    with pytest.raises(SpoolError, match="in use by another broker"):
        Spool(tmp_path, 1 << 20).open()
    first.close()
    Spool(tmp_path, 1 << 20).open()


def test_the_spool_is_private_to_the_broker(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.open()
    spool.put(msg(1))
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    (file,) = (tmp_path / "spool").glob("*.msg")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_put_before_open_keeps_nothing(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="not open"):
        Spool(tmp_path, 1 << 20).put(msg(1))
    assert not list(tmp_path.iterdir())
