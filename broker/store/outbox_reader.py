"""The outbox worker's reads, on an asyncio read connection (the loop never blocks on the
database)."""

from __future__ import annotations

from broker.store.connection import AsyncSql
from broker.store.repo import OUTBOX_COLUMNS, OutboxRow

DUE_SQL = (
    f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE state = 'pending' AND id = ("
    " SELECT MIN(id) FROM outbox f WHERE f.order_key = o.order_key"
    " AND f.destination = o.destination AND f.state = 'pending')"
    " AND next_attempt_at <= ? {lane} ORDER BY id LIMIT ?")

#: when due() can next return something: the earliest attempt time among the first pending
#: message of each order (a later message of an order waits for the earlier one, so its own
#: time must not wake the lane: that woke it at once, over and over, while the first backed off)
NEXT_DUE_SQL = (
    "SELECT MIN(next_attempt_at) FROM outbox o WHERE state = 'pending' AND id = ("
    " SELECT MIN(id) FROM outbox f WHERE f.order_key = o.order_key"
    " AND f.destination = o.destination AND f.state = 'pending') {lane}")


def _lane(destination: str | None, others: tuple[str, ...]) -> tuple[str, list[str]]:
    """The SQL condition for one destination, or (None) for every destination not in
    ``others`` (entries whose destination is not configured)."""
    if destination is not None:
        return "AND o.destination = ?", [destination]
    if not others:
        return "", []
    return f"AND o.destination NOT IN ({', '.join('?' * len(others))})", list(others)


class OutboxReader:
    """A read connection for the outbox lanes; errors are the store's own."""

    def __init__(self, conn: AsyncSql) -> None:
        self._conn = conn

    async def close(self) -> None:
        await self._conn.close()

    async def due(self, now: float, limit: int = 100, destination: str | None = None,
                  others: tuple[str, ...] = ()) -> list[OutboxRow]:
        """The next message of each order that is due (an order's earlier message goes
        first), for one destination (or those not among ``others``)."""
        lane, args = _lane(destination, others)
        # one hop that runs the statement to its end: a statement left open between two hops
        # would keep its read snapshot, and another lane's read on this connection would see
        # that old snapshot (rows already delivered, still pending)
        rows = await self._conn.tuples(DUE_SQL.format(lane=lane), (now, *args, limit))
        return [OutboxRow(*row) for row in rows]

    async def next_due_at(self, destination: str | None = None,
                          others: tuple[str, ...] = ()) -> float | None:
        lane, args = _lane(destination, others)
        rows = await self._conn.tuples(NEXT_DUE_SQL.format(lane=lane), args)
        return float(rows[0][0]) if rows and rows[0][0] is not None else None
