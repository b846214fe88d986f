"""broker.store.fhir on SQLite: put/replace, identifiers (any of them, any system), study."""

from __future__ import annotations

import json
import sqlite3

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
