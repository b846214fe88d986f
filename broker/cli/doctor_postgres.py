"""``mwl-broker doctor`` on a PostgreSQL setup: reachable, schema, clocks, lane owners."""

from __future__ import annotations

from collections.abc import Iterator

from broker.cli.doctor_findings import FAIL, OK, WARN, Finding
from broker.config.checks import safe_url
from broker.store.errors import StoreUnavailable
from broker.store.postgres.health import inspect
from broker.store.schema import MIGRATIONS

#: seconds of clock difference worth a warning, and a failure (leases and timers use the
#: database's clock; logs and message times use each machine's)
SKEW_WARN, SKEW_FAIL = 1.0, 30.0


def check_postgres(url: str, connect_timeout: float) -> Iterator[Finding]:
    where = safe_url(url)
    try:
        found = inspect(url, connect_timeout)
    except StoreUnavailable as exc:
        yield Finding(FAIL, "database", f"{exc}; check database.url, that PostgreSQL runs and "
                      "accepts this host (pg_hba.conf), and the password (~/.pgpass)")
        return
    yield Finding(OK, "database", f"{where} reachable: PostgreSQL {found.server_version}, "
                  f"{found.round_trip_ms} ms")
    ours = len(MIGRATIONS)
    if found.schema_version == 0:
        yield Finding(WARN, "schema", f"empty database; `mwl-broker serve` creates schema {ours}")
    elif found.schema_version == ours:
        yield Finding(OK, "schema", f"version {ours} (current)")
    elif found.schema_version < ours:
        yield Finding(WARN, "schema", f"version {found.schema_version}; the first broker of "
                      f"schema {ours} to start migrates it (once, whichever starts first)")
    elif found.compatible_from <= ours:
        yield Finding(WARN, "schema", f"version {found.schema_version}, newer than this "
                      f"broker's {ours} but compatible: upgrade this broker when you can")
    else:
        yield Finding(FAIL, "schema", f"version {found.schema_version} runs brokers of schema "
                      f"{found.compatible_from} or later; this one is {ours}: upgrade it")
    yield _clock("clock", "this machine", found.clock_offset)
    for node in found.nodes:
        if node["alive"]:
            yield _clock("clock", f"broker {node['node_id']} ({node['host']})",
                         float(node["clock_offset"]))
    alive = {n["node_id"] for n in found.nodes if n["alive"]}
    yield Finding(OK if alive else WARN, "brokers",
                  f"{len(alive)} alive: {', '.join(sorted(alive))}" if alive
                  else "none alive on this database")
    for lane in found.lanes:
        if lane["held"] and lane["owner"] not in alive:
            yield Finding(WARN, "lanes", f"{lane['destination']} is held by "
                          f"{lane['owner']}, not seen alive: another broker takes it when its "
                          "lease ends")
        elif lane["held"]:
            yield Finding(OK, "lanes", f"{lane['destination']} owned by {lane['owner']} "
                          f"(fence {lane['fence']})")
        else:
            yield Finding(WARN if alive else OK, "lanes", f"{lane['destination']} has no owner"
                          " now (taken by the next broker that delivers on it)")


def _clock(check: str, who: str, offset: float) -> Finding:
    text = f"{who} is {abs(offset):.3f} s {'ahead of' if offset > 0 else 'behind'} the database"
    if abs(offset) >= SKEW_FAIL:
        return Finding(FAIL, check, text + ": synchronise the clocks (chrony/NTP)")
    if abs(offset) >= SKEW_WARN:
        return Finding(WARN, check, text + ": synchronise the clocks (chrony/NTP)")
    return Finding(OK, check, text)
