"""The references of FHIR resources (schema 14, ``fhir_references``): which elements of a
resource name which other resources, so that a ``patient=`` search or the Appointments
booked on a ServiceRequest are found through an index, not by reading bodies.

Indexed: every top-level element whose value is a Reference (``{"reference": ...}``) or a
list of them (``subject``, ``patient``, ``encounter``, ``basedOn``, ``performer``,
``reasonReference`` …), and ``participant.actor`` of an Appointment's participants (element
name ``participant.actor``). Other nested references (``ImagingStudy.series.performer`` …)
are not. Only relative literal references, ``Type/id``: not absolute URLs, versioned
(``/_history/``), contained (``#x``) or ``urn:uuid:`` ones, nor logical references (an
identifier without ``reference``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from broker.store.connection import Connection

#: ``Type/id``: a resource type, one slash, a logical id (FHIR ids are at most 64 characters
#: of ``[A-Za-z0-9-.]``; anything without a slash, space, ``#`` or ``?`` is taken)
RELATIVE = re.compile(r"[A-Z][A-Za-z]{0,63}/[^/\s#?]{1,64}")
#: nested references indexed, per resource type: (list element, element of each item)
NESTED: dict[str, tuple[tuple[str, str], ...]] = {"Appointment": (("participant", "actor"),)}
#: resources read (and rows written) per round of the migration's backfill
BATCH = 500


def _literal(value: Any) -> str:
    """The relative literal reference of a Reference ('' for anything else)."""
    if not isinstance(value, dict):
        return ""
    ref = value.get("reference")
    return ref if isinstance(ref, str) and RELATIVE.fullmatch(ref) else ""


def _of(value: Any) -> list[str]:
    """The relative literal references of a Reference or a list of them."""
    items = value if isinstance(value, list) else [value]
    return [ref for ref in map(_literal, items) if ref]


def references(resource: dict[str, Any]) -> set[tuple[str, str]]:
    """(element, reference) for every indexed reference of ``resource``."""
    found = {(element, ref) for element, value in resource.items() for ref in _of(value)}
    for outer, inner in NESTED.get(str(resource.get("resourceType", "")), ()):
        items = resource.get(outer)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                found.update((f"{outer}.{inner}", ref) for ref in _of(item.get(inner)))
    return found


def write_references(conn: Connection, resource_type: str, logical_id: str,
                     resource: dict[str, Any]) -> None:
    """Replace the stored references of one resource by those of ``resource``."""
    conn.execute("DELETE FROM fhir_references WHERE resource_type = ? AND id = ?",
                 (resource_type, logical_id))
    rows = [(resource_type, logical_id, element, ref)
            for element, ref in sorted(references(resource))]
    if rows:
        conn.executemany("INSERT INTO fhir_references (resource_type, id, element, reference)"
                         " VALUES (?, ?, ?, ?)", rows)


def backfill_references(conn: Connection) -> None:
    """Migration 14's step (run by both migrators, in the migration's transaction): the
    references of every resource already stored, read ``BATCH`` at a time in key order."""
    after: tuple[str, str] = ("", "")
    while True:
        batch = conn.execute(
            "SELECT resource_type, id, body FROM fhir_resources"
            " WHERE resource_type > ? OR (resource_type = ? AND id > ?)"
            " ORDER BY resource_type, id LIMIT ?",
            (after[0], after[0], after[1], BATCH)).fetchall()
        if not batch:
            return
        rows = []
        for resource_type, logical_id, body in batch:
            try:
                resource = json.loads(body)
            except ValueError:
                continue  # not JSON: nothing to index (put() stores what it parsed)
            if isinstance(resource, dict):
                rows += [(str(resource_type), str(logical_id), element, ref)
                         for element, ref in sorted(references(resource))]
        if rows:
            conn.executemany("INSERT INTO fhir_references (resource_type, id, element,"
                             " reference) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
        after = (str(batch[-1][0]), str(batch[-1][1]))
