"""Shared fixtures: real broker processes and in-process brokers on loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support")

from broker.app import Broker  # noqa: E402
from tests.support.broker import BrokerProcess, make_settings  # noqa: E402


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """An in-process broker (same code as ``serve``) on an ephemeral port."""
    b = Broker(make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()
