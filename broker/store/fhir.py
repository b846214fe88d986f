"""FHIR resources taken in at /fhir (schema 12, ``fhir_resources``): each resource as last
stored, its business identifier, digest (idempotent reposts) and, for a ServiceRequest, the
Study Instance UID of the requested procedure it became; the index of its identifiers
(schema 13, ``fhir_identifiers``) and of its references (schema 14, ``fhir_references``:
broker.store.fhir_refs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.store.fhir_refs import references, write_references
from broker.store.repo import Repo

_COLUMNS = ("resource_type, id, version, identifier_system, identifier_value, study_uid,"
            " patient_id, issuer, status, digest, body, updated_at")


@dataclass(slots=True)
class FhirRow:
    resource_type: str
    id: str
    version: int
    identifier_system: str
    identifier_value: str
    study_uid: str
    patient_id: str
    issuer: str
    status: str
    digest: str
    body: str
    updated_at: float

    @property
    def resource(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


def _row(r: Any) -> FhirRow:
    return FhirRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]),
                   str(r[6]), str(r[7]), str(r[8]), str(r[9]), str(r[10]), float(r[11]))


class FhirRepo(Repo):
    def get(self, resource_type: str, logical_id: str) -> FhirRow | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM fhir_resources WHERE resource_type = ? AND id = ?",
            (resource_type, logical_id)).fetchone()
        return _row(row) if row else None

    def by_identifier(self, resource_type: str, system: str | None, value: str
                      ) -> list[FhirRow]:
        """Resources holding identifier (system, value) among their identifiers (``system``
        None: in any system)."""
        # a sub-query: the index of identifiers leads (a join let SQLite read the resources
        # of the type one by one)
        sql = (f"SELECT {_COLUMNS} FROM fhir_resources WHERE resource_type = ? AND id IN"
               " (SELECT id FROM fhir_identifiers WHERE resource_type = ? AND value = ?")
        params: tuple[str, ...] = (resource_type, resource_type, value)
        if system is not None:
            sql, params = sql + " AND system = ?", (*params, system)
        rows = self.conn.execute(sql + ") ORDER BY id", params).fetchall()
        return [_row(r) for r in rows]

    def by_reference(self, resource_type: str, element: str, reference: str
                     ) -> list[FhirRow]:
        """Resources whose ``element`` (subject, patient; a list such as basedOn; an
        Appointment's ``participant.actor``) references ``reference``, a relative ``Type/id``
        (what broker.store.fhir_refs indexes), through the index of references."""
        # a sub-query, as by_identifier: the index leads, led by the reference
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM fhir_resources WHERE resource_type = ? AND id IN"
            " (SELECT id FROM fhir_references WHERE reference = ? AND element = ?"
            " AND resource_type = ?) ORDER BY id",
            (resource_type, reference, element, resource_type)).fetchall()
        return [r for r in map(_row, rows) if (element, reference) in references(r.resource)]

    def by_study(self, study_uid: str) -> list[FhirRow]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM fhir_resources WHERE study_uid = ? AND study_uid != ''"
            " ORDER BY resource_type, id", (study_uid,)).fetchall()
        return [_row(r) for r in rows]

    def put(self, row: FhirRow) -> None:
        """Insert the resource, or replace the stored version of it, with the rows of its
        identifiers and references (broker.store.fhir_refs: top-level Reference elements and
        an Appointment's participant.actor, relative ``Type/id`` only)."""
        self.conn.execute(
            f"INSERT INTO fhir_resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (resource_type, id) DO UPDATE SET version = excluded.version,"
            " identifier_system = excluded.identifier_system,"
            " identifier_value = excluded.identifier_value, study_uid = excluded.study_uid,"
            " patient_id = excluded.patient_id, issuer = excluded.issuer,"
            " status = excluded.status, digest = excluded.digest, body = excluded.body,"
            " updated_at = excluded.updated_at",
            (row.resource_type, row.id, row.version, row.identifier_system,
             row.identifier_value, row.study_uid, row.patient_id, row.issuer, row.status,
             row.digest, row.body, self.now))
        row.updated_at = self.now
        resource = row.resource
        self.conn.execute("DELETE FROM fhir_identifiers WHERE resource_type = ? AND id = ?",
                          (row.resource_type, row.id))
        idents = {(str(i.get("system") or ""), str(i["value"]))
                  for i in resource.get("identifier", []) or []
                  if isinstance(i, dict) and i.get("value")}
        if idents:
            self.conn.executemany(
                "INSERT INTO fhir_identifiers (resource_type, id, system, value)"
                " VALUES (?, ?, ?, ?)",
                [(row.resource_type, row.id, system, value) for system, value in sorted(idents)])
        write_references(self.conn, row.resource_type, row.id, resource)

    def count(self, resource_type: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM fhir_resources WHERE resource_type = ?",
                                (resource_type,)).fetchone()
        return int(row[0])
