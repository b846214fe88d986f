"""Reads of the UPS event reports waiting for web subscribers (``ups_events``), on an asyncio
read connection: what the WebSocket hub sends, oldest first. Marking them sent is a write
(``UpsRepo.events_delivered``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.store.connection import AsyncSql
from broker.store.dialect import Dialect


@dataclass(frozen=True, slots=True)
class WaitingEvent:
    """One event report not yet sent: its row id, receiver, workitem, type and the report
    as the service queued it (``event_type``, ``sop_instance_uid``, ``info``)."""

    id: int
    receiving_ae: str
    sop_instance_uid: str
    event_type: int
    payload: dict[str, Any]


async def waiting_events(conn: AsyncSql, ae_titles: Sequence[str], limit: int,
                         dialect: Dialect) -> list[WaitingEvent]:
    """Up to ``limit`` reports not yet sent to any of ``ae_titles``, oldest first."""
    if not ae_titles:
        return []
    rows = await conn.tuples(
        "SELECT id, receiving_ae, sop_instance_uid, event_type, payload FROM ups_events"
        f" WHERE delivered_at IS NULL AND receiving_ae IN {dialect.json_values()}"
        " ORDER BY id LIMIT ?", (json.dumps(sorted(ae_titles)), int(limit)))
    return [WaitingEvent(int(r[0]), str(r[1]), str(r[2]), int(r[3]), json.loads(r[4]))
            for r in rows]
