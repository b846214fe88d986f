"""``mwl-broker map order.json``: a FHIR Bundle or resource through the intake path ``serve``
runs (validation, mapping, the store job) on a store that rolls back; prints the domain
events and worklist attributes it makes, or the OperationOutcome."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from broker.cli.dry_run_json import MAP_PEER, events_json
from broker.config import Settings
from broker.fhir.outcome import FhirError, Issue, operation_outcome
from broker.fhir.requests import Write
from broker.fhir.validate import validate
from broker.flows.fhir_in import FhirIntake
from broker.mapping.specs import MappingSet
from broker.store.factory import open_store
from broker.workflow.fhir_intake import Stored

BASE = "urn:mwl-broker:dry-run"


def map_fhir(raw: bytes, settings: Settings, mappings: MappingSet) -> int:
    intake = FhirIntake(open_store(settings.database).dry_run(), lambda: mappings,
                        cancel_started=settings.hl7.cancel_started_steps)
    stored: list[Stored] = []
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise FhirError.one(400, "structure", "the file must hold one JSON object")
        answer = asyncio.run(_take(intake, body, stored))
        status = 0 if not _failed(answer) else 1
    except ValueError as exc:
        answer, status = operation_outcome([Issue("structure", f"not JSON: {exc}")]), 1
    except FhirError as exc:
        answer, status = operation_outcome(exc.issues), 1
    result = {"writes": [{"resource": f"{s.row.resource_type}/{s.row.id}",
                          "status": s.status, "changed": s.changed, "study_uid": s.row.study_uid,
                          "events": events_json(s.events)} for s in stored],
              "outcome": answer}
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return status


async def _take(intake: FhirIntake, body: dict[str, Any], stored: list[Stored]
                ) -> dict[str, Any]:
    if body.get("resourceType") == "Bundle":
        return await intake.bundle(body, MAP_PEER, BASE, stored)
    validate(body)
    write = Write(body, "PUT" if body.get("id") else "POST", logical_id=str(body.get("id", "")))
    done = await intake.write(write, MAP_PEER)
    stored.append(done)
    return done.row.resource


def _failed(answer: dict[str, Any]) -> bool:
    return any(not str(e.get("response", {}).get("status", "2")).startswith("2")
               for e in answer.get("entry", []) or [] if answer.get("resourceType") == "Bundle")
