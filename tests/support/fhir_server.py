"""A FHIR server playing the receiving end of the broker's status reports: a real aiohttp
server on loopback that validates every Task and ImagingStudy PUT to it with the
fhir.resources R4B models and records them; an OAuth2 token endpoint (client credentials,
HTTP Basic); and switches to answer 503 for a while, or 400 with an OperationOutcome."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.task import Task

MODELS: dict[str, Any] = {"Task": Task, "ImagingStudy": ImagingStudy}


def outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}


@dataclass
class FhirReceiver:
    #: the bearer token every FHIR request must carry ('' : none asked; with OAuth2 on, the
    #: tokens the token endpoint issued and not revoked)
    token: str = ""
    oauth2: tuple[str, str] | None = None  # (client_id, client_secret) the endpoint takes
    expires_in: int = 3600
    #: the next answers to FHIR requests, in turn (e.g. [503, 503]); then the normal one
    answers: list[int] = field(default_factory=list)
    #: answer every request 400 with an OperationOutcome
    reject: bool = False
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: every FHIR request (method, path, status answered), refused ones included
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for t, _, r in self.received if t == kind]

    def revoke_all(self) -> None:
        self.revoked |= set(self.issued)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if self.oauth2 is not None:
            token = given.removeprefix("Bearer ")
            return given.startswith("Bearer ") and token in self.issued \
                and token not in self.revoked
        return not self.token or given == f"Bearer {self.token}"

    async def _put(self, request: web.Request) -> web.Response:
        kind, rid = request.match_info["type"], request.match_info["id"]
        path = f"{kind}/{rid}"

        def answer(status: int, body: dict[str, Any]) -> web.Response:
            self.requests.append((request.method, path, status))
            return web.json_response(body, status=status, content_type="application/fhir+json")

        if not self._authorized(request):
            return answer(401, outcome("login", "no valid bearer token"))
        if self.answers:
            status = self.answers.pop(0)
            return answer(status, outcome("transient", f"answering {status} for now"))
        if self.reject:
            return answer(400, outcome("business-rule", "Task rejected by test policy"))
        if request.content_type != "application/fhir+json":
            return answer(415, outcome("not-supported", request.content_type))
        body = await request.json()
        try:
            model = MODELS[kind]
            model.model_validate(body)
            assert body["id"] == rid, f"id {body.get('id')} in the body, {rid} in the URL"
        except (KeyError, ValueError, AssertionError) as exc:
            self.invalid.append(f"{path}: {exc}")
            return answer(400, outcome("invalid", str(exc)[:300]))
        updated = any(t == kind and i == rid for t, i, _ in self.received)
        self.received.append((kind, rid, body))
        return answer(200 if updated else 201, body)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        basic = request.headers.get("Authorization", "").removeprefix("Basic ")
        try:
            user, _, password = base64.b64decode(basic).decode().partition(":")
        except ValueError:
            user = password = ""
        client = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
        if self.oauth2 is None or client != self.oauth2:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"access-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.expires_in},
                                 headers={"Cache-Control": "no-store"})


@asynccontextmanager
async def fhir_receiver(receiver: FhirReceiver | None = None) -> AsyncIterator[FhirReceiver]:
    """Run ``receiver`` on a free loopback port until the block ends."""
    receiver = receiver or FhirReceiver()
    app = web.Application()
    app.router.add_put("/fhir/{type}/{id}", receiver._put)
    app.router.add_post("/oauth2/token", receiver._token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", receiver.port)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
