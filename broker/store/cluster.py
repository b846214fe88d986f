"""Brokers sharing one database: the instances and when each was last seen, and the outbox
lanes each one owns. Times are the database's clock, so that brokers agree on them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from broker.store.repo import Repo

#: an instance not seen for this long is taken for dead (recovery, the console, doctor)
ALIVE_WINDOW = 10.0


@dataclass(slots=True)
class NodeRow:
    node_id: str
    host: str
    mllp_port: int
    dicom_port: int
    admin_port: int
    version: str
    started_at: float
    seen_at: float
    stopped_at: float | None
    #: seen within the liveness window when read
    alive: bool = False


@dataclass(slots=True)
class LaneRow:
    destination: str
    owner: str
    fence: int
    taken_at: float
    expires_at: float
    #: the lease has not expired when read
    held: bool = False


@dataclass(frozen=True, slots=True)
class Lease:
    """A lane held by this broker: the fencing token every settlement is checked against."""

    lane: str
    owner: str
    fence: int


class LaneLost(Exception):
    """Another broker owns the lane now: this one must stop delivering on it."""


class ClusterRepo(Repo):
    """SQL of the instances and the lane leases (in the caller's transaction)."""

    def clock(self) -> float:
        """The database's time."""
        return float(self.conn.execute(f"SELECT {self.dialect.now()}").fetchone()[0])

    def heartbeat(self, node: NodeRow, stopping: bool = False) -> None:
        """Record that ``node`` is alive (or stopping) now."""
        now = self.dialect.now()
        self.conn.execute(
            "INSERT INTO nodes (node_id, host, mllp_port, dicom_port, admin_port, version,"
            " started_at, seen_at, stopped_at, clock_offset)"
            f" VALUES (?, ?, ?, ?, ?, ?, {now}, {now}, NULL, ? - {now})"
            " ON CONFLICT (node_id) DO UPDATE SET host = excluded.host,"
            " mllp_port = excluded.mllp_port, dicom_port = excluded.dicom_port,"
            " admin_port = excluded.admin_port, version = excluded.version,"
            " seen_at = excluded.seen_at, stopped_at = NULL,"
            " clock_offset = excluded.clock_offset",
            (node.node_id, node.host, node.mllp_port, node.dicom_port, node.admin_port,
             node.version, time.time()))
        if stopping:
            self.conn.execute(f"UPDATE nodes SET stopped_at = {now} WHERE node_id = ?",
                              (node.node_id,))
            self.conn.execute("UPDATE lanes SET expires_at = 0 WHERE owner = ?",
                              (node.node_id,))

    def started(self, node_id: str) -> None:
        self.conn.execute(f"UPDATE nodes SET started_at = {self.dialect.now()}"
                          " WHERE node_id = ?", (node_id,))

    def nodes(self, window: float) -> list[NodeRow]:
        """Every instance on record, newest first, ``alive`` when seen within ``window``."""
        rows = self.conn.execute(
            "SELECT node_id, host, mllp_port, dicom_port, admin_port, version, started_at,"
            f" seen_at, stopped_at, (stopped_at IS NULL AND seen_at >= {self.dialect.now()} - ?)"
            " FROM nodes ORDER BY seen_at DESC", (window,)).fetchall()
        return [NodeRow(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5]),
                        float(r[6]), float(r[7]), None if r[8] is None else float(r[8]),
                        bool(r[9])) for r in rows]

    def live_nodes(self, window: float) -> set[str]:
        return {n.node_id for n in self.nodes(window) if n.alive}

    def acquire(self, lane: str, owner: str, ttl: float, fresh: bool = False
                ) -> Lease | None:
        """Take or renew the lease of ``lane`` for ``ttl`` seconds; None while another
        broker holds it. A new owner gets a new fencing token, and so does a ``fresh`` take
        by the same owner (a restarted process: its paused predecessor's token is void)."""
        now = self.dialect.now()
        row = self.conn.execute(
            "INSERT INTO lanes (destination, owner, fence, taken_at, expires_at)"
            f" VALUES (?, ?, 1, {now}, {now} + ?)"
            " ON CONFLICT (destination) DO UPDATE SET owner = excluded.owner,"
            " fence = CASE WHEN lanes.owner = excluded.owner AND ? = 0 THEN lanes.fence"
            " ELSE lanes.fence + 1 END,"
            " taken_at = CASE WHEN lanes.owner = excluded.owner THEN lanes.taken_at"
            " ELSE excluded.taken_at END,"
            " expires_at = excluded.expires_at"
            f" WHERE lanes.owner = excluded.owner OR lanes.expires_at < {now}"
            " RETURNING fence", (lane, owner, ttl, int(fresh))).fetchone()
        return Lease(lane, owner, int(row[0])) if row else None

    def check(self, lease: Lease) -> None:
        """LaneLost unless ``lease`` still holds its lane (the fencing check of every
        settlement: a broker that lost the lane records nothing)."""
        row = self.conn.execute(
            "SELECT 1 FROM lanes WHERE destination = ? AND owner = ? AND fence = ?",
            (lease.lane, lease.owner, lease.fence)).fetchone()
        if row is None:
            raise LaneLost(f"lane {lease.lane!r} is no longer owned by {lease.owner}")

    def release(self, lease: Lease) -> None:
        self.conn.execute("UPDATE lanes SET expires_at = 0 WHERE destination = ? AND owner = ?"
                          " AND fence = ?", (lease.lane, lease.owner, lease.fence))

    def lanes(self) -> list[LaneRow]:
        rows = self.conn.execute(
            "SELECT destination, owner, fence, taken_at, expires_at,"
            f" expires_at >= {self.dialect.now()} FROM lanes ORDER BY destination").fetchall()
        return [LaneRow(str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]), bool(r[5]))
                for r in rows]
