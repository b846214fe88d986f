"""Lane leases (broker.outbound.lanes, broker.store.cluster) over a real SQLite store: one
owner per lane, renewal, takeover with a new fencing token once a lease runs out, and the
fencing check that stops a broker which lost its lane from recording anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.outbound.lanes import UNCONFIGURED, LaneLeases
from broker.store.cluster import LaneLost, NodeRow
from broker.store.sqlite.writer import SqliteWriter
from broker.store.unit_of_work import UnitOfWork


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[SqliteWriter]:
    w = SqliteWriter(tmp_path / "broker.sqlite", synchronous="NORMAL")
    w.start()
    try:
        yield w
    finally:
        w.stop()


async def test_one_owner_per_lane_and_takeover_after_the_lease_ran_out(
        writer: SqliteWriter) -> None:
    a, b = LaneLeases(writer, "a", 1.0), LaneLeases(writer, "b", 1.0)
    first = await a.hold("ris")
    assert first is not None and first.owner == "a"
    assert await b.hold("ris") is None  # a owns it
    assert await a.hold("ris") == first  # renewing keeps the token
    assert await b.hold(None) is not None  # another lane is free
    deadline = time.monotonic() + 10
    taken = None
    while taken is None and time.monotonic() < deadline:  # a stops renewing (killed)
        await asyncio.sleep(0.1)
        taken = await b.hold("ris")
    assert taken is not None and taken.fence == first.fence + 1
    with pytest.raises(LaneLost):
        await writer.run(lambda uow: uow.cluster.check(first))
    await writer.run(lambda uow: uow.cluster.check(taken))
    assert await a.hold("ris") is None  # a comes back: b owns it now
    lanes = {lane.destination: lane for lane in await writer.run(
        lambda uow: uow.cluster.lanes())}
    assert lanes["ris"].owner == "b" and lanes["ris"].held
    assert lanes[UNCONFIGURED].owner == "b"


async def test_a_restarted_owner_gets_a_new_token(writer: SqliteWriter) -> None:
    old = await LaneLeases(writer, "a", 30.0).hold("ris")
    restarted = await LaneLeases(writer, "a", 30.0).hold("ris")  # same node id, new process
    assert old is not None and restarted is not None and restarted.fence == old.fence + 1
    with pytest.raises(LaneLost):  # the old process (paused, not dead) records nothing
        await writer.run(lambda uow: uow.cluster.check(old))


async def test_a_clean_stop_hands_the_lanes_over_at_once(writer: SqliteWriter) -> None:
    a, b = LaneLeases(writer, "a", 30.0), LaneLeases(writer, "b", 30.0)
    assert await a.hold("ris") is not None
    assert await b.hold("ris") is None
    await a.release_all()
    assert await b.hold("ris") is not None


async def test_nodes_are_seen_alive_and_stopped(writer: SqliteWriter) -> None:
    node = NodeRow("a", "host", 2575, 11112, 8080, "0.1.0", 0.0, 0.0, None)

    def beat(uow: UnitOfWork, stopping: bool = False) -> None:
        uow.cluster.heartbeat(node, stopping)
    await writer.run(beat)
    rows = await writer.run(lambda uow: uow.cluster.nodes(5.0))
    assert [(r.node_id, r.alive) for r in rows] == [("a", True)]
    assert abs(rows[0].seen_at - time.time()) < 60  # the database's clock, in epoch seconds
    await writer.run(lambda uow: beat(uow, stopping=True))
    assert await writer.run(lambda uow: uow.cluster.live_nodes(5.0)) == set()
