"""The health row of each listener and worker: up or not, where, and its counters."""

from __future__ import annotations

import time
from collections.abc import Mapping

from broker.admin.ports import (
    DicomStatus,
    MembershipStatus,
    MllpStatus,
    OutboxStatus,
    Row,
    UpstreamStatus,
    WriterStatus,
)
from broker.outbound.outbox import Destination


def mllp(server: MllpStatus, acknowledged: Mapping[str, int]) -> Row:
    return {"name": "mllp", "up": server.serving,
            "address": f"{server.host}:{server.bound_port}" if server.serving else "",
            "detail": {"connections": server.active_connections, "refused": server.refused,
                       "acknowledged": dict(acknowledged)}}


def dicom(server: DicomStatus) -> Row:
    return {"name": "dicom", "up": server.serving,
            "address": f"{server.ae_title}@{server.host}:{server.bound_port}"
            if server.serving else "",
            "detail": {"associations": server.active_associations,
                       "worklist_queries": server.queries}}


def outbox(worker: OutboxStatus) -> Row:
    idle = not worker.destinations
    return {"name": "outbox", "up": worker.running or idle,
            "address": ", ".join(f"{d.name}={d.host}:{d.port}" if isinstance(d, Destination)
                                 else d.name for d in worker.destinations.values()),
            "detail": {"delivered": worker.delivered, "dead": worker.dead,
                       "retried": worker.retried,
                       **({"note": "no destinations configured"} if idle else {})}}


def writer(store: WriterStatus) -> Row:
    return {"name": "writer", "up": store.alive, "address": store.description,
            "detail": store.status()}


def database(membership: MembershipStatus, address: str) -> Row:
    """Whether this broker reached its database in the last few heartbeats (PostgreSQL
    away: not ready, so a load balancer sends the RIS and the modalities elsewhere)."""
    return {"name": "database", "up": membership.reachable, "address": address,
            "detail": {"node": membership.node, "heartbeats": membership.beats,
                       "last_reached_seconds_ago": membership.last_reached_ago()}}


def upstream(poller: UpstreamStatus) -> Row:
    """An upstream worklist: reachable at its last poll or not. Advisory: while it is away
    the broker answers from its last good copy, so it does not make the broker unready."""
    ago = round(time.time() - poller.last_success, 1) if poller.last_success else None
    if not poller.polling and poller.polled_elsewhere:
        return {"name": f"upstream:{poller.name}", "up": True, "advisory": True,
                "address": poller.address,
                "detail": {"polled_by": "another broker sharing the database",
                           "polls_skipped": poller.polled_elsewhere}}
    return {"name": f"upstream:{poller.name}", "up": poller.up, "advisory": True,
            "address": poller.address,
            "detail": {"items": poller.items, "polls": poller.polls,
                       "failures": poller.failures, "last_success_seconds_ago": ago,
                       **({"error": poller.last_error} if poller.last_error else {})}}
