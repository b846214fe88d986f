"""The analyst's REST endpoints: query log, preview, explanation, timeline, replay."""

from __future__ import annotations

from aiohttp import web

from broker.admin.analyst import AnalystService
from broker.admin.api import _json, form_or_json, parse_id, parse_key, read_body
from broker.admin.service import BadRequest

ANALYST = web.AppKey("analyst", AnalystService)


def analyst(request: web.Request) -> AnalystService:
    return request.app[ANALYST]


async def json_body(request: web.Request) -> dict[str, object]:
    """A JSON object body (empty when there is none)."""
    if not request.can_read_body:
        return {}
    try:
        data = await read_body(request, request.json())
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def keys_of(data: dict[str, object]) -> dict[str, str] | None:
    """The ``keys`` object of a body: DICOM keyword → matching value."""
    keys = data.get("keys")
    if keys is None:
        return None
    if not isinstance(keys, dict) or not all(isinstance(v, str | int | float)
                                             for v in keys.values()):
        raise BadRequest("keys must be an object of DICOM keyword → value (text)")
    return {str(k): str(v) for k, v in keys.items()}


async def queries(request: web.Request) -> web.Response:
    p = request.query
    return _json(await analyst(request).queries(p.get("station", ""), p.get("since", ""),
                                                p.get("until", ""), p.get("outcome", ""),
                                                p.get("limit", "")))


async def query(request: web.Request) -> web.Response:
    pk = parse_id(request)
    found = await analyst(request).query(pk)
    return _json(found) if found else _json({"error": f"no query {pk} in the query log"}, 404)


async def stations(request: web.Request) -> web.Response:
    """Per calling AE title: its last query (time, outcome, matches)."""
    return _json(await analyst(request).last_seen())


async def preview(request: web.Request) -> web.Response:
    data = await json_body(request) if request.method == "POST" else {}
    station = str(data.get("station") or request.query.get("station", ""))
    query_id = data.get("query") or request.query.get("query")
    if query_id is not None and not str(query_id).isdigit():
        raise BadRequest(f"query {query_id!r} must be the id of a recorded query")
    return _json(await analyst(request).preview(
        station, keys_of(data), int(str(query_id)) if query_id is not None else None,
        str(data.get("limit") or request.query.get("limit", ""))))


async def explain(request: web.Request) -> web.Response:
    key = parse_key(request)
    data = await json_body(request) if request.method == "POST" else {}
    station = str(data.get("station") or request.query.get("station", ""))
    found = await analyst(request).explain(key, station, keys_of(data))
    return _json(found, 200 if found["found"] else 404)


async def timeline(request: web.Request) -> web.Response:
    key = parse_key(request)
    found = await analyst(request).timeline(key)
    if not found:
        return _json({"error": f"no procedure has Study Instance UID or accession {key!r}"},
                     404)
    return _json({"key": key, "procedures": found})


async def replay(request: web.Request) -> web.Response:
    pk = parse_id(request)
    if request.content_type == "application/json":
        data = await json_body(request)
    else:
        data = dict(await form_or_json(request))
    edited = data.get("message")
    try:
        result = await analyst(request).replay(
            pk, str(data.get("reason", "")), str(data.get("user", "")), request.remote or "?",
            str(edited) if edited not in (None, "") else None)
    except LookupError as exc:
        return _json({"error": str(exc)}, 404)
    return _json(result)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/queries", queries)
    app.router.add_get("/api/queries/{id}", query)
    app.router.add_get("/api/stations", stations)
    app.router.add_get("/api/preview", preview)
    app.router.add_post("/api/preview", preview)
    app.router.add_get("/api/procedures/{key}/explain", explain)
    app.router.add_post("/api/procedures/{key}/explain", explain)
    app.router.add_get("/api/procedures/{key}/timeline", timeline)
    app.router.add_post("/api/messages/{id}/replay", replay)
