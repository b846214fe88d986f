"""The JSON REST API under /api: the console's data for scripts and other tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from broker.admin.service import AdminService, BadRequest

SERVICE = web.AppKey("service", AdminService)
#: seconds a client has to send a request body (admin.request_read_timeout)
READ_TIMEOUT = web.AppKey("read_timeout", float)
#: the largest row id SQLite stores (signed 64 bits)
MAX_ID = 2**63 - 1
#: a Study Instance UID has at most 64 characters, an accession number fewer
MAX_KEY = 64
T = TypeVar("T")


def _service(request: web.Request) -> AdminService:
    return request.app[SERVICE]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, default=str))


def parse_id(request: web.Request) -> int:
    """The ``{id}`` of the path: ASCII digits only (not '²' or '١'), within SQLite's range."""
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_ID:
        raise BadRequest(f"id {text[:40]!r} must be a whole number from 0 to {MAX_ID}")
    return int(text)


def parse_key(request: web.Request) -> str:
    """The ``{key}`` of the path: a Study Instance UID or an accession number."""
    key = request.match_info["key"]
    if len(key) > MAX_KEY or not key.isprintable():
        raise BadRequest(f"{key[:40]!r} is not a Study Instance UID or accession number "
                         f"(at most {MAX_KEY} printable characters)")
    return key


async def read_body(request: web.Request, reading: Awaitable[T]) -> T:
    """A request body read within admin.request_read_timeout, else 408 (slow senders)."""
    try:
        async with asyncio.timeout(request.app[READ_TIMEOUT]):
            return await reading
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": "the request body did not arrive within "
                             f"{request.app[READ_TIMEOUT]:g} s"}),
            content_type="application/json", headers={"Connection": "close"}) from None


async def form_or_json(request: web.Request) -> dict[str, str]:
    """A write's parameters: a JSON object, a form, or the query string."""
    if request.content_type == "application/json" and request.can_read_body:
        try:
            data = await read_body(request, request.json())
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return {str(k): str(v) for k, v in data.items()}
    if request.can_read_body:
        form = await read_body(request, request.post())
        return {k: str(v) for k, v in form.items()}
    return dict(request.query)


async def worklist(request: web.Request) -> web.Response:
    p = request.query
    return _json(await _service(request).worklist(
        p.get("date", ""), p.get("station", ""), p.get("q", ""), p.get("status", ""),
        p.get("limit", "")))


async def procedure(request: web.Request) -> web.Response:
    key = parse_key(request)
    found = await _service(request).history(key)
    if not found:
        return _json({"error": f"no procedure has Study Instance UID or accession {key!r}"},
                     404)
    return _json({"key": key, "procedures": found})


async def messages(request: web.Request) -> web.Response:
    p = request.query
    return _json(await _service(request).messages(p.get("q", ""), p.get("outcome", ""),
                                                  p.get("limit", "")))


async def message(request: web.Request) -> web.Response:
    pk = parse_id(request)
    found = await _service(request).message(pk)
    return _json(found) if found else _json({"error": f"no message {pk} in the log"}, 404)


async def outbox(request: web.Request) -> web.Response:
    p = request.query
    return _json(await _service(request).outbox(p.get("state", ""), p.get("limit", "")))


async def outbox_entry(request: web.Request) -> web.Response:
    pk = parse_id(request)
    found = await _service(request).outbox_entry(pk)
    return _json(found) if found else _json({"error": f"no outbox entry {pk}"}, 404)


async def retry_one(request: web.Request) -> web.Response:
    pk = parse_id(request)
    count = await _service(request).retry(pk, request.remote or "?")
    if not count:
        return _json({"error": f"outbox entry {pk} does not exist or was already delivered"},
                     409)
    return _json({"requeued": count})


async def retry_dead(request: web.Request) -> web.Response:
    return _json({"requeued": await _service(request).retry(None, request.remote or "?")})


async def purge(request: web.Request) -> web.Response:
    p = await form_or_json(request)
    count = await _service(request).purge(p.get("state", ""), p.get("older_than_days", ""),
                                          request.remote or "?")
    return _json({"purged": count})


async def mappings(request: web.Request) -> web.Response:
    service = _service(request)
    data = service.mappings()
    if request.query.get("check"):
        errors = await service.check_mappings()
        data["folder_check"] = {"valid": not errors, "errors": errors}
    return _json(data)


async def reload_mappings(request: web.Request) -> web.Response:
    service = _service(request)
    ok = await service.reload_mappings(request.remote or "?")
    return _json({"reloaded": ok, **service.mappings()}, 200 if ok else 422)


async def health(request: web.Request) -> web.Response:
    service = _service(request)
    ready, _ = service.ready()
    return _json({"ready": ready, "listeners": service.health()})


async def cluster(request: web.Request) -> web.Response:
    """This broker, the others sharing its database, and the owner of each outbox lane."""
    return _json(await _service(request).cluster())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/worklist", worklist)
    app.router.add_get("/api/procedures/{key}", procedure)
    app.router.add_get("/api/messages", messages)
    app.router.add_get("/api/messages/{id}", message)
    app.router.add_get("/api/outbox", outbox)
    app.router.add_get("/api/outbox/{id}", outbox_entry)
    app.router.add_post("/api/outbox/retry", retry_dead)
    app.router.add_post("/api/outbox/purge", purge)
    app.router.add_post("/api/outbox/{id}/retry", retry_one)
    app.router.add_get("/api/mappings", mappings)
    app.router.add_post("/api/mappings/reload", reload_mappings)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/cluster", cluster)
