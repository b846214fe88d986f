"""Start-up and shutdown order: a start that fails halfway stops what had already started."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.app import Broker
from tests.support.broker import make_settings


def _threads() -> set[str]:
    """Threads other than the event loop's executor workers (they outlive any component)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("listener", ["dicom", "admin"])
async def test_a_failed_start_stops_what_already_started(tmp_path: Path, taken_port: int,
                                                         listener: str) -> None:
    before = _threads()
    settings = make_settings(tmp_path)
    settings.mllp.port = mllp_port = _free_port()
    settings.admin.enabled = True
    getattr(settings, listener).port = taken_port
    broker = Broker(settings)
    with pytest.raises(OSError):
        await broker.start()
    await asyncio.sleep(0)
    assert _threads() == before
    assert _port_is_free(mllp_port)
    assert not broker.writer.alive
    assert not broker.outbox.running


async def test_stop_leaves_no_thread_and_frees_the_ports(tmp_path: Path) -> None:
    before = _threads()
    settings = make_settings(tmp_path)
    settings.mllp.port = mllp_port = _free_port()
    broker = Broker(settings)
    await broker.start()
    dicom_port = broker.dicom.bound_port
    assert not _port_is_free(mllp_port)
    await broker.stop()
    assert _threads() == before
    assert _port_is_free(mllp_port) and _port_is_free(dicom_port)
