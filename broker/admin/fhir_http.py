"""FHIR R4 at ``/fhir`` on the admin server (behind its Guard: a token off loopback): Bundles,
create/update (conditional too), read, search, metadata; every fault an OperationOutcome.
What each call does: broker.flows.fhir_in; docs/fhir.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.fhir.bundle import searchset
from broker.fhir.capability import capability_statement
from broker.fhir.outcome import (
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNSUPPORTED_MEDIA,
    FhirError,
    Issue,
    operation_outcome,
)
from broker.fhir.requests import Identifier, Write, condition, parse_identifier
from broker.fhir.validate import TAKEN, validate
from broker.flows.fhir_in import FhirIntake
from broker.logs import event, exception_site
from broker.store.fhir import FhirRow

log = logging.getLogger("broker.fhir")
BASE = "/fhir"
FHIR_JSON = "application/fhir+json"
ACCEPTED_TYPES = (FHIR_JSON, "application/json", "application/json+fhir")
#: what a request turned out to be (a Bundle: transaction or batch), for the metrics
INTERACTION = web.RequestKey("fhir_interaction", str)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def answer(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.Response(body=json.dumps(body, ensure_ascii=False).encode(), status=status,
                        content_type=FHIR_JSON, charset="utf-8", headers=headers)


class FhirWeb:
    def __init__(self, intake: FhirIntake, max_body_bytes: int) -> None:
        self.intake = intake
        self.max_body = max_body_bytes

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{BASE}/metadata", self._guarded("capabilities", self.metadata))
        r.add_post(BASE, self._guarded("bundle", self.bundle))
        r.add_post(BASE + "/{type}", self._guarded("create", self.create))
        r.add_put(BASE + "/{type}", self._guarded("update", self.update))
        r.add_put(BASE + "/{type}/{id}", self._guarded("update", self.update))
        r.add_get(BASE + "/{type}/{id}", self._guarded("read", self.read))
        r.add_get(BASE + "/{type}", self._guarded("search", self.search))

    def _guarded(self, interaction: str, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.Response:
            label = interaction
            try:
                response = await handler(request)
                label = request.get(INTERACTION, interaction)
            except FhirError as exc:
                label = request.get(INTERACTION, interaction)
                response = answer(operation_outcome(exc.issues), exc.status)
            except Exception as exc:
                event(log, "fhir_failed", logging.ERROR, path=request.path,
                      **exception_site(exc))
                response = answer(operation_outcome([Issue(
                    "exception", f"internal error: {type(exc).__name__}")]), 500)
            self.intake.count(label, f"{response.status // 100}xx")
            return response
        return run

    @staticmethod
    def base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{BASE}"

    async def metadata(self, request: web.Request) -> web.Response:
        return answer(capability_statement(self.base(request)))

    async def _body(self, request: web.Request) -> dict[str, Any]:
        kind = request.content_type
        if kind not in ACCEPTED_TYPES:
            raise FhirError.one(UNSUPPORTED_MEDIA, "not-supported", f"Content-Type {kind!r} "
                                f"is not taken; send {FHIR_JSON}")
        if request.content_length is not None and request.content_length > self.max_body:
            raise self._too_large()
        raw = await request.content.read(self.max_body + 1)
        while len(raw) <= self.max_body and not request.content.at_eof():
            more = await request.content.read(self.max_body + 1 - len(raw))
            if not more:
                break
            raw += more
        if len(raw) > self.max_body:
            raise self._too_large()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FhirError.one(INVALID, "structure", f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise FhirError.one(INVALID, "structure", "the body must be a JSON object")
        return body

    def _too_large(self) -> FhirError:
        return FhirError.one(TOO_LARGE, "too-long", f"the body is larger than "
                             f"{self.max_body} bytes (fhir.intake.max_body_bytes)")

    async def bundle(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        request[INTERACTION] = str(body.get("type", "bundle"))
        return answer(await self.intake.bundle(body, request.remote or "?", self.base(request)))

    def _type(self, request: web.Request) -> str:
        kind = request.match_info["type"]
        if kind not in TAKEN:
            raise FhirError.one(NOT_FOUND, "not-supported", f"{kind[:40]} is not served here "
                                f"(only {', '.join(TAKEN)})")
        return kind

    async def create(self, request: web.Request) -> web.Response:
        kind = self._type(request)
        resource = await self._body(request)
        validate(resource, kind)
        write = Write(resource, "POST")
        header = request.headers.get("If-None-Exist")
        if header:
            write.if_none_exist = condition(header, "If-None-Exist")
        return self._written(await self.intake.write(write, request.remote or "?"))

    async def update(self, request: web.Request) -> web.Response:
        kind = self._type(request)
        resource = await self._body(request)
        validate(resource, kind)
        write = Write(resource, "PUT")
        logical_id = request.match_info.get("id", "")
        if logical_id:
            if resource.get("id") != logical_id:
                raise FhirError.one(INVALID, "invalid", f"the resource's id "
                                    f"{resource.get('id')!r} is not the one of the URL "
                                    f"({logical_id[:64]!r})", f"{kind}.id")
            write.logical_id = logical_id
        elif request.query_string:
            write.match = condition(request.query_string, "url")
        else:
            raise FhirError.one(INVALID, "invalid", f"PUT needs /fhir/{kind}/<id> or "
                                f"/fhir/{kind}?identifier=system|value")
        return self._written(await self.intake.write(write, request.remote or "?"))

    @staticmethod
    def _written(stored: Any) -> web.Response:
        row: FhirRow = stored.row
        where = f"{BASE}/{row.resource_type}/{row.id}/_history/{row.version}"
        return answer(row.resource, 201 if stored.created else 200,
                      {"Location": where, "ETag": f'W/"{row.version}"'})

    async def read(self, request: web.Request) -> web.Response:
        row = await self.intake.read(self._type(request), request.match_info["id"])
        return answer(row.resource, headers={"ETag": f'W/"{row.version}"'})

    async def search(self, request: web.Request) -> web.Response:
        kind = self._type(request)
        identifier: Identifier | None = None
        reference = ""
        for name, value in request.query.items():
            if name == "identifier":
                identifier = parse_identifier(value, "identifier")
            elif name in ("patient", "subject") and kind == "ServiceRequest":
                reference = value if "/" in value else f"Patient/{value}"
            elif not name.startswith("_"):
                raise FhirError.one(INVALID, "not-supported", f"search parameter {name!r} is "
                                    f"not supported for {kind}")
        rows = await self.intake.search(kind, identifier, reference)
        return answer(searchset(rows, self.base(request)))
