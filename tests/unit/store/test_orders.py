"""broker.store.orders: one order is a handful of set-based statements, whatever its number of
steps, and the step set it leaves is what the workflow decided."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.config import Settings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import MappingSet, load_mappings
from broker.model.orders import OrderChange
from broker.store.sqlite.connection import connect, migrate
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.orders import apply
from tests.support.samples import OrderSample, order

UID = "1.2.826.0.1.3680043.8.498.3"


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(Settings().mappings.directory)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = connect(tmp_path / "broker.sqlite", synchronous="OFF")
    migrate(db)
    yield db
    db.close()


def statements(conn: sqlite3.Connection, mappings: MappingSet, sample: OrderSample,
               station: str = "") -> list[str]:
    """Apply one message (its steps on ``station``) in one transaction; the statements it
    ran."""
    seen: list[str] = []
    events = map_message(parse(sample.text(), "utf_8"), mappings)
    for ev in events:
        if station and isinstance(ev, OrderChange):
            for step in ev.procedure.steps:
                step.attrs["ScheduledStationAETitle"] = [station]
    conn.execute("BEGIN")
    conn.set_trace_callback(seen.append)
    try:
        uow = UnitOfWork(conn)
        for ev in events:
            apply(uow.orders, ev)
    finally:
        conn.set_trace_callback(None)
    conn.execute("COMMIT")
    return seen


def steps(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT sps_id, status, start_dt FROM steps ORDER BY id")}


def stations(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute(
        "SELECT ss.station_aet, ss.start_dt, s.sps_id FROM step_stations ss"
        " JOIN steps s ON s.id = ss.step_fk ORDER BY s.sps_id, ss.station_aet")]


def test_a_new_order_costs_the_same_with_one_step_or_ten(
        conn: sqlite3.Connection, mappings: MappingSet) -> None:
    one = statements(conn, mappings, order(1), "CT01")
    ten = statements(conn, mappings, order(2, sps_ids=[f"S{n}" for n in range(10)]),
                     "CT01")
    assert len(one) == len(ten) <= 5  # patient, its names, procedure, steps, stations
    assert len(steps(conn)) == 11 and len(stations(conn)) == 11


def test_an_order_update_is_a_handful_of_statements_whatever_its_steps(
        conn: sqlite3.Connection, mappings: MappingSet) -> None:
    sps = [f"S{n}" for n in range(10)]
    statements(conn, mappings, order(2, sps_ids=sps))
    again = statements(conn, mappings, order(2, sps_ids=sps, control_id="X2"))
    # the patient (insert-or-find, update), the procedure (insert-or-find, read with its
    # steps, update), the steps (one update); the step-by-step path ran 2 per step on top
    assert len(again) <= 7
    changed = statements(conn, mappings, order(2, sps_ids=["S0", "S1", "NEW"],
                                               order_control="XO", control_id="X3"))
    assert len(changed) <= 9
    assert steps(conn)["NEW"][0] == "SCHEDULED"
    assert {k: v[0] for k, v in steps(conn).items() if k not in ("S0", "S1", "NEW")} == {
        f"S{n}": "CANCELED" for n in range(2, 10)}


def test_stations_follow_the_new_start_and_station_of_an_updated_step(
        conn: sqlite3.Connection, mappings: MappingSet) -> None:
    statements(conn, mappings, order(3, sps_ids=["A", "B"]), "CT01")
    assert stations(conn) == [("CT01", "20261122100000", "A"), ("CT01", "20261122100000", "B")]
    statements(conn, mappings, order(3, start="202611231430", sps_ids=["A", "B"],
                                     order_control="XO", control_id="X9"), "MR02")
    assert stations(conn) == [("MR02", "20261123143000", "A"), ("MR02", "20261123143000", "B")]
    assert steps(conn) == {"A": ("SCHEDULED", "20261123143000"),
                           "B": ("SCHEDULED", "20261123143000")}
