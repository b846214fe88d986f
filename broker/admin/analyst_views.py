"""The analyst's console pages: queries per station, preview, explanation, trace, replay."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.admin import html as h
from broker.admin.analyst import AnalystService
from broker.admin.analyst_api import ANALYST
from broker.admin.api import form_or_json, parse_id, parse_key
from broker.admin.pages import back, page
from broker.admin.service import BadRequest

Row = dict[str, Any]


def _analyst(request: web.Request) -> AnalystService:
    return request.app[ANALYST]


def keys_from_text(text: str) -> dict[str, str] | None:
    """``Keyword=value`` lines (the console's edited query); None when there are none."""
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, sep, value = line.partition("=")
        if not sep:
            raise BadRequest(f"line {number} {line[:40]!r}: write Keyword=value")
        keys[keyword.strip()] = value.strip()
    return keys or None


def _keys_text(keys: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in keys.items()) or "no matching key (everything)"


async def last_seen(request: web.Request) -> dict[str, Row] | None:
    """Per calling AE its last worklist query (None without the query log)."""
    analyst = request.app.get(ANALYST)
    return await analyst.last_seen() if analyst is not None else None


def seen_line(aet: str, seen: dict[str, Row] | None) -> str:
    if seen is None or not aet:
        return ""
    last = seen.get(aet)
    if last is None:
        return (f'<p class="last-query none" data-station="{h.esc(aet)}">No query from '
                f'{h.esc(aet)} in the query log.</p>')
    return (f'<p class="last-query" data-station="{h.esc(aet)}">Last query seen '
            f'{h.esc(h.when(last["queried_at"]))}: {h.esc(last["outcome"])}, '
            f'{h.esc(last["matches"])} item(s) · '
            + h.link(h.path("queries", station=aet), "its queries") + " · "
            + h.link(h.path("preview", station=aet), "what does it see now?") + "</p>")


# -- query log ------------------------------------------------------------------------------
async def queries(request: web.Request) -> web.Response:
    p = request.query
    data = await _analyst(request).queries(p.get("station", ""), p.get("since", ""),
                                           p.get("until", ""), p.get("outcome", ""))
    f = data["filter"]
    seen = await _analyst(request).last_seen()
    outcome = h.select("outcome", ("done", "cancelled", "refused", "failed"), f["outcome"])
    form = ('<form class="filters" method="get" action="/queries">'
            f'<label>Station (calling AE) <input name="station" value="{h.esc(f["station"])}"'
            ' list="callers" size="14"></label><datalist id="callers">'
            + "".join(f'<option value="{h.esc(s)}">' for s in seen) + "</datalist>"
            f'<label>Since <input name="since" value="{h.esc(p.get("since", ""))}" size="16"'
            ' placeholder="2h, 2026-12-03T08:00"></label>'
            f'<label>Outcome {outcome}</label>'
            '<button type="submit">Search</button></form>')
    stations = h.table(["Station", "Last query", "Outcome", "Matches", ""], [
        [h.link(h.path("queries", station=s), s), h.esc(h.when(r["queried_at"])),
         h.status(r["outcome"]), h.esc(r["matches"]),
         h.link(h.path("preview", station=s), "what does it see now?")]
        for s, r in seen.items()], "no modality has queried yet", css="stations")
    rows = [[h.link(h.path("queries", str(q["id"])), h.when(q["queried_at"])),
             h.esc(q["calling_ae"]), h.esc(q["peer"]), h.esc(_keys_text(q["keys"])),
             h.esc(q["matches"]), h.status(q["outcome"]) + f" {h.esc(q['status'])}",
             h.esc(q["ms"]), h.esc(q["error"])] for q in data["items"]]
    return page(request, "Worklist queries", "<h2>Stations</h2>" + stations + form + h.table(
        ["When", "Calling AE", "Address", "Matching keys", "Matches", "Status", "ms",
         "Error"], rows, "no query matches", css="queries"), "/queries")


async def query(request: web.Request) -> web.Response:
    pk = parse_id(request)
    q = await _analyst(request).query(pk)
    if q is None:
        return page(request, f"Query {pk}", h.table(["Query"], [], "not in the query log"),
                    "/queries", 404)
    content = h.facts([
        ("When", h.esc(h.when(q["queried_at"]))), ("Calling AE", h.esc(q["calling_ae"])),
        ("Called AE", h.esc(q["called_ae"])), ("Address", h.esc(q["peer"])),
        ("Broker", h.esc(q["node"])), ("Matching keys", h.esc(_keys_text(q["keys"]))),
        ("Station from the calling AE", h.esc(q["station_key"] or "no")),
        ("Matches", h.esc(q["matches"])),
        ("Outcome", h.status(q["outcome"]) + f" status {h.esc(q['status'])}"),
        ("Duration", h.esc(f"{q['ms']} ms")), ("Error", h.esc(q["error"])),
    ])
    content += ("<p>" + h.link(h.path("preview", station=q["calling_ae"], query=str(pk)),
                               "Run this query again now (preview)") + "</p>")
    content += "<h2>Identifier as received</h2>" + h.pretty_json(q["identifier"])
    return page(request, f"Query {pk} · {q['calling_ae']}", content, "/queries")


# -- preview --------------------------------------------------------------------------------
async def preview(request: web.Request) -> web.Response:
    p = dict(request.query)
    if request.method == "POST":
        p.update(await form_or_json(request))
    station = p.get("station", "")
    keys_text = p.get("keys", "")
    form = ('<form class="filters" method="post" action="/preview">'
            f'<label>Station (calling AE) <input name="station" value="{h.esc(station)}" '
            'size="14"></label>'
            + (f'<input type="hidden" name="query" value="{h.esc(p["query"])}">'
               if p.get("query") else "")
            + '<label>Change keys (Keyword=value per line; empty: the last query as it was)'
            f'<textarea name="keys" rows="3" cols="50">{h.esc(keys_text)}</textarea></label>'
            '<button type="submit">Show what it sees</button></form>')
    if not station:
        return page(request, "Preview", form, "/queries")
    query_id = p.get("query", "")
    if query_id and not query_id.isdigit():
        raise BadRequest(f"query {query_id!r} must be the id of a recorded query")
    data = await _analyst(request).preview(station, keys_from_text(keys_text),
                                           int(query_id) if query_id else None)
    source = data["source"]
    about = h.facts([
        ("Query", h.link(h.path("queries", str(source["id"])),
                         f"#{source['id']} of {h.when(source['queried_at'])}") if source
         else "the keys given"),
        ("Matching keys", h.esc(_keys_text(data.get("keys", {})))),
        ("Unsupported keys", h.esc(", ".join(data.get("unsupported", [])))),
    ])
    if data["refused"]:
        return page(request, f"What {station} sees now", form + about + h.pre(
            f"The SCP refuses this query: status {data['status']}, {data['error']}"),
            "/queries")
    rows = [[h.esc(i["ScheduledProcedureStepStartDate"]), h.esc(i[
        "ScheduledProcedureStepStartTime"]), h.esc(i["PatientName"]), h.esc(i["PatientID"]),
        h.link(h.path("procedures", i["AccessionNumber"] or i["StudyInstanceUID"]),
               i["AccessionNumber"]), h.esc(i["Modality"]), h.esc(i["ScheduledStationAETitle"]),
        h.esc(i["ScheduledProcedureStepID"]), h.status(i["ScheduledProcedureStepStatus"]),
        h.esc(i["ScheduledProcedureStepDescription"])] for i in data["items"]]
    table = h.table(["Date", "Time", "Patient", "Patient ID", "Accession", "Modality",
                     "Station", "SPS ID", "Status", "Description"], rows,
                    "the station gets no item for this query", css="preview")
    answers = ("<details><summary>The answers as DICOM JSON</summary>"
               + h.pretty_json(data["answers"]) + "</details>")
    return page(request, f"What {station} sees now ({data['count']})",
                form + about + table + answers, "/queries")


# -- explanation ----------------------------------------------------------------------------
async def explain(request: web.Request) -> web.Response:
    key = parse_key(request)
    station = request.query.get("station", "")
    data = await _analyst(request).explain(key, station)
    form = (f'<form class="filters" method="get" action="{h.esc(h.path("procedures", key))}'
            '/explain"><label>Station (calling AE; empty: the stations it is scheduled on)'
            f' <input name="station" value="{h.esc(station)}" size="14"></label>'
            '<button type="submit">Explain</button></form>')
    links = ("<p>" + h.link(h.path("procedures", key), "history") + " · "
             + h.link(h.path("procedures", key) + "/timeline", "timeline") + "</p>")
    if not data["found"]:
        return page(request, f"Why is {key} not on the worklist?", form + links
                    + f'<p class="verdict missing">{h.esc(data["summary"])}</p>',
                    "/queries", 404)
    sections = []
    for s in data["stations"]:
        head = f'<h2 data-station="{h.esc(s["station"])}">Station {h.esc(s["station"])}</h2>'
        if not s["steps"]:
            sections.append(head + f'<p class="verdict">{h.esc(s["summary"])}</p>')
            continue
        source = s["source"]
        about = h.facts([
            ("Its last query", h.link(h.path("queries", str(source["id"])),
                                      f"#{source['id']} of {h.when(source['queried_at'])}")
             if source else "the keys given"),
            ("Matching keys", h.esc(_keys_text(s["keys"]))),
        ] + [("Note", h.esc(n)) for n in s["notes"]])
        rows = []
        for v in s["steps"]:
            verdict = ("returned" if v["returned"] else "not returned")
            why = "; ".join(e["reason"] for e in v["exclusions"]) or "; ".join(v["notes"])
            rows.append([h.esc(v["sps_id"]), h.status(v["status"]),
                         f'<span class="verdict {"ok" if v["returned"] else "excluded"}">'
                         f"{verdict}</span>", h.esc(why)])
        sections.append(head + about + h.table(["SPS ID", "Status", "Verdict", "Why"], rows,
                                               css="explain"))
    return page(request, f"Is {key} on the worklist?", form + links + "".join(sections),
                "/queries")


# -- trace ----------------------------------------------------------------------------------
KIND_LABELS = {"hl7_in": "HL7 in", "hl7_out": "HL7 out", "step": "Step", "query": "Query",
               "mpps": "MPPS", "commitment": "Storage commitment", "ian": "IAN",
               "completion": "Completion"}


async def timeline(request: web.Request) -> web.Response:
    key = parse_key(request)
    found = await _analyst(request).timeline(key)
    if not found:
        return page(request, f"Timeline of {key}", h.table(["Timeline"], [], "no procedure "
                    "has this Study Instance UID or accession number"), "/worklist", 404)
    sections = []
    for p in found:
        facts = p["procedure"]
        rows = [[h.esc(h.when(e["at"])), f'<span class="kind {h.esc(e["kind"])}">'
                 f'{h.esc(KIND_LABELS.get(e["kind"], e["kind"]))}</span>',
                 _event_text(e)] for e in p["events"]]
        sections.append(
            f"<h2>{h.esc(facts['patient_name'])} ({h.esc(facts['patient_id'])}) · "
            f"accession {h.esc(facts['accession'])}</h2>"
            + h.table(["When", "What", "Event"], rows, "nothing happened yet", css="timeline"))
    links = ("<p>" + h.link(h.path("procedures", key), "history") + " · "
             + h.link(h.path("procedures", key) + "/explain", "is it on the worklist?")
             + "</p>")
    return page(request, f"Timeline of {key}", links + "".join(sections), "/worklist")


def _event_text(e: Row) -> str:
    d = e["detail"]
    text = h.esc(e["summary"])
    if "message_id" in d:
        text = h.link(h.path("messages", str(d["message_id"])), e["summary"])
    elif "query_id" in d:
        text = h.link(h.path("queries", str(d["query_id"])), e["summary"])
    elif "outbox_id" in d:
        text = h.link(h.path("outbox", str(d["outbox_id"])), e["summary"])
    extra = {k: v for k, v in d.items() if k not in ("message_id", "query_id", "outbox_id")}
    if extra:
        text += '<div class="detail">' + h.esc(", ".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in extra.items())) \
            + "</div>"
    return text


# -- replay ---------------------------------------------------------------------------------
async def replay_form(request: web.Request) -> web.Response:
    pk = parse_id(request)
    service = _analyst(request)
    stored = await service.reader.stored_message(pk)
    if stored is None:
        return page(request, f"Replay message {pk}", h.table(["Message"], [], "not in the "
                    "log"), "/messages", 404)
    text = stored["raw"].decode(stored["charset"] or "latin-1", errors="replace")
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r").replace("\r", "\n")
    earlier = await service.reader.replays_of(pk)
    form = (f'<form method="post" action="/messages/{pk}/replay" class="replay">'
            '<p>The message goes through the normal ingest path again, as it is below or as '
            'you edit it. The original stays as it was; the replay is logged as a new '
            'message linked to it, with your name and reason. A replay is applied even if '
            'the message was applied before (docs/hl7-interface.md, "Replay").</p>'
            '<label>Your name <input name="user" required size="24"></label>'
            '<label>Reason <input name="reason" required size="60"></label>'
            f'<label>Message<textarea name="message" rows="14" cols="100">{h.esc(text)}'
            '</textarea></label><button type="submit">Replay</button></form>')
    done = h.table(["Replay", "When", "By", "Reason", "ACK", "Error"], [
        [h.link(h.path("messages", str(r["id"])), r["id"]), h.esc(h.when(r["received_at"])),
         h.esc(r["replayed_by"]), h.esc(r["replay_reason"]), h.status(r["outcome"]),
         h.esc(r["error"])] for r in earlier], "not replayed before")
    return page(request, f"Replay message {pk} · {stored['control_id']}",
                form + "<h2>Earlier replays</h2>" + done, "/messages")


async def replay(request: web.Request) -> web.Response:
    pk = parse_id(request)
    fields = await form_or_json(request)
    stored = await _analyst(request).reader.stored_message(pk)
    if stored is None:
        raise back("/messages", error=f"no message {pk} in the log")
    original = stored["raw"].decode(stored["charset"] or "latin-1", errors="replace")
    edited = fields.get("message", "")
    same = _lines(edited) == _lines(original)
    try:
        result = await _analyst(request).replay(pk, fields.get("reason", ""),
                                                fields.get("user", ""), request.remote or "?",
                                                None if same or not edited else edited)
    except BadRequest as exc:
        raise back(f"/messages/{pk}/replay", error=str(exc)) from None
    target = f"/messages/{result['id']}" if result["id"] else f"/messages/{pk}"
    raise back(target, notice=f"replayed{' (edited)' if result['edited'] else ''}: "
               f"{result['outcome']}")


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n")
            .strip("\n").split("\n")]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/queries", queries)
    app.router.add_get("/queries/{id}", query)
    app.router.add_get("/preview", preview)
    app.router.add_post("/preview", preview)
    app.router.add_get("/procedures/{key}/explain", explain)
    app.router.add_get("/procedures/{key}/timeline", timeline)
    app.router.add_get("/messages/{id}/replay", replay_form)
    app.router.add_post("/messages/{id}/replay", replay)
