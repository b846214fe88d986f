"""A transaction or batch Bundle read into writes (every resource validated first), and the
Bundles the broker answers with (transaction-response, batch-response, searchset)."""

from __future__ import annotations

import uuid
from typing import Any

from broker.fhir.outcome import INVALID, FhirError, Issue, operation_outcome
from broker.fhir.requests import ORDER, Write, condition
from broker.fhir.validate import validate
from broker.store.fhir import FhirRow

KINDS = ("transaction", "batch")


def read_bundle(bundle: dict[str, Any]) -> tuple[str, list[Write | FhirError]]:
    """The Bundle's type and its writes in the order they are stored, each entry's resource
    validated; an entry that cannot be a write is its FhirError (a transaction refuses
    them all, a batch answers each)."""
    kind = bundle.get("type")
    if kind not in KINDS:
        raise FhirError.one(INVALID, "value", f"Bundle.type must be transaction or batch, not "
                            f"{kind!r}", "Bundle.type")
    entries = bundle.get("entry", []) or []
    if not isinstance(entries, list):
        raise FhirError.one(INVALID, "structure", "Bundle.entry must be a list", "Bundle.entry")
    shell = {**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                 if isinstance(e, dict) else e for e in entries]}
    validate(shell, "Bundle")
    out: list[tuple[int, Write | FhirError]] = []
    for index, entry in enumerate(entries):
        try:
            out.append((index, _write(index, entry)))
        except FhirError as exc:
            out.append((index, exc))
    out.sort(key=lambda item: (ORDER.get(item[1].type, 9) if isinstance(item[1], Write)
                               else -1, item[0]))
    return str(kind), [w for _, w in out]


def _write(index: int, entry: dict[str, Any]) -> Write:
    base = f"Bundle.entry[{index}]"
    resource = entry.get("resource")
    request = entry.get("request") or {}
    method = str(request.get("method", ""))
    if resource is None:
        raise FhirError.one(INVALID, "required", "the entry has no resource", f"{base}.resource")
    try:
        kind = validate(resource)
    except FhirError as exc:
        raise exc.at(f"{base}.resource") from None
    if method not in ("POST", "PUT"):
        raise FhirError.one(INVALID, "not-supported", f"request.method {method!r}: only POST "
                            "and PUT are taken", f"{base}.request.method")
    url = str(request.get("url", ""))
    path, _, query = url.partition("?")
    parts = path.strip("/").split("/")
    if parts[0] != kind or len(parts) > 2:
        raise FhirError.one(INVALID, "invalid", f"request.url {url[:80]!r} does not name the "
                            f"entry's {kind}", f"{base}.request.url")
    write = Write(resource, method, full_url=str(entry.get("fullUrl", "")), index=index)
    if method == "PUT":
        if len(parts) == 2:
            write.logical_id = parts[1]
            if resource.get("id") not in (None, parts[1]):
                raise FhirError.one(INVALID, "invalid", f"the resource's id "
                                    f"{resource.get('id')!r} is not the one of request.url",
                                    f"{base}.resource.id")
        elif query:
            write.match = condition(query, f"{base}.request.url")
        else:
            raise FhirError.one(INVALID, "invalid", "PUT needs Type/id or Type?identifier=…",
                                f"{base}.request.url")
    elif request.get("ifNoneExist"):
        write.if_none_exist = condition(str(request["ifNoneExist"]),
                                        f"{base}.request.ifNoneExist")
    return write


def entry_of(row: FhirRow, status: str, base: str) -> dict[str, Any]:
    return {"fullUrl": f"{base}/{row.resource_type}/{row.id}", "resource": row.resource,
            "response": {"status": status,
                         "location": f"{row.resource_type}/{row.id}/_history/{row.version}",
                         "etag": f'W/"{row.version}"',
                         "lastModified": row.resource.get("meta", {}).get("lastUpdated", "")}}


def error_entry(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": f"{exc.status} {REASONS.get(exc.status, 'Error')}",
                         "outcome": operation_outcome(exc.issues)}}


def response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": f"{kind}-response",
            "entry": entries}


def searchset(rows: list[FhirRow], base: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
            "total": len(rows),
            "entry": [{"fullUrl": f"{base}/{r.resource_type}/{r.id}", "resource": r.resource,
                       "search": {"mode": "match"}} for r in rows]}


REASONS = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 412: "Precondition Failed",
           413: "Payload Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 500: "Internal Server Error"}


def issues_of(results: list[Write | FhirError]) -> list[Issue]:
    return [i for r in results if isinstance(r, FhirError) for i in r.issues]
