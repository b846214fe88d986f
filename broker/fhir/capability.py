"""The CapabilityStatement of /fhir (``GET /fhir/metadata``): exactly what is implemented."""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

from broker.fhir.validate import TAKEN

#: what each resource type supports at /fhir/{type}
INTERACTIONS = ("read", "create", "update", "search-type")
SEARCH = {"ServiceRequest": (("identifier", "token"), ("patient", "reference"),
                             ("subject", "reference"))}
DOCUMENTATION = {
    "Patient": "Mapped to the worklist's patient (mappings/fhir.yaml, patient).",
    "ServiceRequest": "Mapped to a requested procedure and its scheduled step "
                      "(mappings/fhir.yaml); its status decides the action (status table).",
}


def _version() -> str:
    try:
        return metadata.version("mwl-broker")
    except metadata.PackageNotFoundError:
        return "0"


def capability_statement(base: str) -> dict[str, Any]:
    resources = []
    for kind in TAKEN:
        params = SEARCH.get(kind, (("identifier", "token"),))
        resources.append({
            "type": kind,
            "documentation": DOCUMENTATION.get(kind, "Validated and kept; not mapped."),
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "not-supported",
            "searchParam": [{"name": name, "type": kind_} for name, kind_ in params],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "publisher": "mwl-broker",
        "kind": "instance",
        "software": {"name": "mwl-broker", "version": _version()},
        "implementation": {"description": "mwl-broker FHIR R4 order intake", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "rest": [{
            "mode": "server",
            "documentation": "Orders in: transaction and batch Bundles of Patient and "
                             "ServiceRequest (Encounter, Appointment, Coverage kept).",
            "security": {"description": "The admin server's rules: Authorization: Bearer "
                                        "<admin token> whenever admin.token is set (required "
                                        "off loopback)."},
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }
