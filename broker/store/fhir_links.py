"""What a step's FHIR status report needs of the FHIR resources taken in (schema 12,
``fhir_resources``): the ServiceRequest a requested procedure came from, and its subject."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.store.repo import Repo


@dataclass(frozen=True)
class ServiceRequestLink:
    """A ServiceRequest's logical id and the ``subject`` Reference it was taken in with
    (empty when it had none)."""

    id: str
    subject: dict[str, Any]


class FhirLinkRepo(Repo):
    def service_request(self, study_uid: str) -> ServiceRequestLink | None:
        """The ServiceRequest whose requested procedure has Study Instance UID
        ``study_uid`` (None: the order came in over HL7 or from an upstream worklist)."""
        if not study_uid:
            return None
        row = self.conn.execute(
            "SELECT id, body FROM fhir_resources WHERE resource_type = 'ServiceRequest'"
            " AND study_uid = ? ORDER BY updated_at DESC, id LIMIT 1", (study_uid,)).fetchone()
        if row is None:
            return None
        try:
            body = json.loads(row[1] or "{}")
        except ValueError:
            body = {}
        subject = body.get("subject") if isinstance(body, dict) else None
        return ServiceRequestLink(str(row[0]), subject if isinstance(subject, dict) else {})
