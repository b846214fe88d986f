"""broker.store.fhir on SQLite: put/replace, identifiers (any of them, any system), study,
references (single and list elements, an Appointment's participant.actor) through their
index."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from broker.store.fhir import FhirRow
from broker.store.sqlite.connection import migrate
from broker.store.unit_of_work import UnitOfWork


def row(logical_id: str, idents: list[dict[str, str]], study: str = "", version: int = 1
        ) -> FhirRow:
    body = {"resourceType": "ServiceRequest", "id": logical_id, "identifier": idents,
            "subject": {"reference": "Patient/p1"}}
    first = idents[0] if idents else {}
    return FhirRow("ServiceRequest", logical_id, version, first.get("system", ""),
                   first.get("value", ""), study, "P1", "", "active", "d", json.dumps(body), 0)


def test_put_find_replace() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    repo = UnitOfWork(conn, now=100.0).fhir
    repo.put(row("a", [{"system": "s", "value": "PL1"}, {"system": "t", "value": "AC1"}], "1.2"))
    repo.put(row("b", [{"system": "u", "value": "AC1"}]))
    assert [r.id for r in repo.by_identifier("ServiceRequest", "t", "AC1")] == ["a"]
    assert [r.id for r in repo.by_identifier("ServiceRequest", None, "AC1")] == ["a", "b"]
    assert repo.by_identifier("ServiceRequest", "", "AC1") == []
    assert repo.by_identifier("Patient", None, "AC1") == []
    got = repo.get("ServiceRequest", "a")
    assert got is not None and (got.study_uid, got.updated_at) == ("1.2", 100.0)
    repo.put(row("a", [{"system": "s", "value": "PL2"}], "1.2", version=2))  # replaced
    assert repo.by_identifier("ServiceRequest", "t", "AC1") == []
    assert [r.version for r in repo.by_identifier("ServiceRequest", "s", "PL2")] == [2]
    assert [r.id for r in repo.by_study("1.2")] == ["a"]
    assert [r.id for r in repo.by_reference("ServiceRequest", "subject", "Patient/p1")] == [
        "a", "b"]
    assert repo.by_reference("ServiceRequest", "subject", "Patient/p") == []
    assert repo.count("ServiceRequest") == 2


def resource_row(resource: dict[str, Any]) -> FhirRow:
    return FhirRow(str(resource["resourceType"]), str(resource["id"]), 1, "", "", "", "", "",
                   "", "d", json.dumps(resource), 0)


def appointment(logical_id: str, based_on: list[str], actors: tuple[str, ...] = (),
                status: str = "booked") -> dict[str, Any]:
    return {"resourceType": "Appointment", "id": logical_id, "status": status,
            "basedOn": [{"reference": r} for r in based_on],
            "participant": [{"actor": {"reference": a}, "status": "accepted"} for a in actors]}


def stored_references(conn: sqlite3.Connection, resource_type: str, logical_id: str
                      ) -> set[tuple[str, str]]:
    return set(conn.execute("SELECT element, reference FROM fhir_references"
                            " WHERE resource_type = ? AND id = ?", (resource_type, logical_id)))


def test_references_kept_on_put_and_replace_and_found_through_the_index() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    repo = UnitOfWork(conn, now=100.0).fhir
    repo.put(resource_row(appointment("ap1", ["ServiceRequest/s1", "ServiceRequest/s2"],
                                      ("Location/room1", "Patient/p1"))))
    repo.put(resource_row(appointment("ap2", ["ServiceRequest/s2"])))
    repo.put(resource_row({"resourceType": "ServiceRequest", "id": "s1",
                           "subject": {"reference": "Patient/p1"},
                           "encounter": {"reference": "Encounter/e1"},
                           "performer": [{"reference": "Practitioner/dr1"},
                                         {"display": "no reference"}],
                           # not indexed: absolute, versioned, contained, urn, logical
                           "requester": {"reference": "http://x/fhir/Practitioner/dr2"},
                           "insurance": [{"reference": "Coverage/c1/_history/2"},
                                         {"reference": "#contained"},
                                         {"reference": "urn:uuid:0b1c"}],
                           "locationReference": [{"identifier": {"value": "L1"}}]}))
    assert stored_references(conn, "ServiceRequest", "s1") == {
        ("subject", "Patient/p1"), ("encounter", "Encounter/e1"),
        ("performer", "Practitioner/dr1")}
    assert stored_references(conn, "Appointment", "ap1") == {
        ("basedOn", "ServiceRequest/s1"), ("basedOn", "ServiceRequest/s2"),
        ("participant.actor", "Location/room1"), ("participant.actor", "Patient/p1")}

    def ids(resource_type: str, element: str, reference: str) -> list[str]:
        return [r.id for r in repo.by_reference(resource_type, element, reference)]

    assert ids("Appointment", "basedOn", "ServiceRequest/s2") == ["ap1", "ap2"]  # a list
    assert ids("Appointment", "basedOn", "ServiceRequest/s1") == ["ap1"]
    assert ids("Appointment", "participant.actor", "Patient/p1") == ["ap1"]
    assert ids("ServiceRequest", "subject", "Patient/p1") == ["s1"]  # a single Reference
    assert ids("ServiceRequest", "encounter", "Encounter/e1") == ["s1"]
    assert ids("ServiceRequest", "performer", "Practitioner/dr1") == ["s1"]
    assert ids("ServiceRequest", "encounter", "Patient/p1") == []  # another element
    assert ids("Appointment", "subject", "Patient/p1") == []
    assert ids("ServiceRequest", "subject", "Patient/p") == []

    repo.put(resource_row(appointment("ap1", ["ServiceRequest/s3"], status="cancelled")))
    assert stored_references(conn, "Appointment", "ap1") == {("basedOn", "ServiceRequest/s3")}
    assert ids("Appointment", "basedOn", "ServiceRequest/s2") == ["ap2"]
    assert ids("Appointment", "basedOn", "ServiceRequest/s3") == ["ap1"]
    assert ids("Appointment", "participant.actor", "Patient/p1") == []
    repo.put(resource_row({"resourceType": "Appointment", "id": "ap2", "status": "booked"}))
    assert stored_references(conn, "Appointment", "ap2") == set()
    assert ids("Appointment", "basedOn", "ServiceRequest/s2") == []


def test_by_reference_is_led_by_the_index_of_references() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    repo = UnitOfWork(conn, now=100.0).fhir
    for n in range(50):
        repo.put(resource_row(appointment(f"ap{n}", [f"ServiceRequest/s{n % 7}"])))
    conn.execute("ANALYZE")
    plans: list[str] = []
    real = conn.execute

    class Explaining:
        def execute(self, sql: str, params: Any = ()) -> Any:
            if sql.startswith("SELECT") and "fhir_references" in sql:
                plans.extend(str(r[3]) for r in real(f"EXPLAIN QUERY PLAN {sql}", params))
            return real(sql, params)

    repo.conn = Explaining()  # type: ignore[assignment]
    assert len(repo.by_reference("Appointment", "basedOn", "ServiceRequest/s3")) == 7
    assert any("fhir_references USING PRIMARY KEY (reference=? AND element=?" in p
               for p in plans), plans
    assert not any(p.startswith("SCAN") for p in plans), plans
