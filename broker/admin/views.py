"""The console's pages, rendered on the server (plain HTML forms; a few lines of JS)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.admin import html as h
from broker.admin.analyst_views import last_seen, seen_line
from broker.admin.api import SERVICE, form_or_json, parse_id, parse_key
from broker.admin.pages import back, hhmm, page, return_to
from broker.admin.procedure_view import procedure_sections
from broker.admin.service import (
    OUTBOX_STATES,
    PURGEABLE,
    STEP_STATUSES,
    AdminService,
    BadRequest,
)

Row = dict[str, Any]


def _service(request: web.Request) -> AdminService:
    return request.app[SERVICE]


# -- worklist ------------------------------------------------------------------------------
async def worklist(request: web.Request) -> web.Response:
    p = request.query
    data = await _service(request).worklist(p.get("date", ""), p.get("station", ""),
                                            p.get("q", ""), p.get("status", ""))
    f = data["filter"]
    day = f"{f['date'][:4]}-{f['date'][4:6]}-{f['date'][6:]}"
    stations = sorted(data["by_station"])
    form = (
        '<form class="filters" method="get" action="/worklist">'
        f'<label>Date <input type="date" name="date" value="{day}"></label>'
        f'<label>Station AE <input name="station" value="{h.esc(f["station"])}" '
        f'list="stations" size="12"></label>'
        '<datalist id="stations">' + "".join(f'<option value="{h.esc(s)}">' for s in stations
                                              if s) + "</datalist>"
        f'<label>Patient name / ID / accession <input name="q" value="{h.esc(f["text"])}" '
        'size="24"></label>'
        f'<label>Status {h.select("status", STEP_STATUSES, f["status"])}</label>'
        '<button type="submit">Search</button>'
        '<label><span><input type="checkbox" data-autorefresh> refresh every 10 s</span></label>'
        "</form>")
    groups: dict[str, list[Row]] = {}
    for item in data["items"]:
        for aet in item["stations"] or [""]:
            if not f["station"] or aet == f["station"]:
                groups.setdefault(aet, []).append(item)
    seen = await last_seen(request)
    sections = []
    for aet in sorted(groups):
        rows = [[h.esc(hhmm(i["start_time"])), h.esc(i["patient_name"]),
                 h.esc(i["patient_id"]), h.esc(i["accession"]), h.esc(i["modality"]),
                 h.esc(i["description"]), h.esc(i["sps_id"]), h.status(i["status"]),
                 h.link(h.path("procedures", i["study_uid"] or i["accession"]), "history")]
                for i in groups[aet]]
        title = aet or "(no station AE title)"
        sections.append(f'<h2 data-station="{h.esc(aet)}">{h.esc(title)} '
                        f'<small>({len(rows)})</small></h2>' + seen_line(aet, seen)
                        + h.table(["Time", "Patient", "Patient ID", "Accession", "Modality",
                                   "Description", "SPS ID", "Status", ""], rows,
                                  css="worklist"))
    if not sections:
        sections.append(h.table(["Worklist"], [], f"no scheduled step on {day} matches"))
    return page(request, f"Worklist of {day}", form + "".join(sections), "/worklist")


# -- a procedure's history -----------------------------------------------------------------
async def procedure(request: web.Request) -> web.Response:
    key = parse_key(request)
    found = await _service(request).history(key)
    if not found:
        return page(request, f"Procedure {key}",
                    h.table(["History"], [], "no procedure has this Study Instance UID or "
                             "accession number"), "/worklist", 404)
    return page(request, f"Procedure {key}", "".join(procedure_sections(p) for p in found),
                "/worklist")


# -- message log ---------------------------------------------------------------------------
async def messages(request: web.Request) -> web.Response:
    p = request.query
    data = await _service(request).messages(p.get("q", ""), p.get("outcome", ""))
    f = data["filter"]
    form = ('<form class="filters" method="get" action="/messages">'
            f'<label>Control ID / patient ID / accession <input name="q" '
            f'value="{h.esc(f["q"])}" size="28"></label>'
            f'<label>ACK {h.select("outcome", ("AA", "AE", "AR"), f["outcome"])}</label>'
            '<button type="submit">Search</button></form>')
    rows = [[h.link(h.path("messages", str(m["id"])), m["id"]), h.esc(h.when(m["received_at"])),
             h.esc(f"{m['sender_application']} {m['sender_facility']}".strip()),
             h.esc(m["peer"]), h.esc(m["message_type"]), h.esc(m["control_id"]),
             h.esc(m["patient_id"]), h.esc(m["accession"]),
             h.status(m["outcome"]) + (" (duplicate)" if m["duplicate_of"] else ""),
             h.esc(m["error"])] for m in data["items"]]
    return page(request, "Message log", form + h.table(
        ["#", "Received", "Sender", "Peer", "Type", "Control ID", "Patient ID", "Accession",
         "ACK", "Error"], rows, "no message matches"), "/messages")


async def message(request: web.Request) -> web.Response:
    pk = parse_id(request)
    m = await _service(request).message(pk)
    if m is None:
        return page(request, f"Message {pk}", h.table(["Message"], [], "not in the log"),
                    "/messages", 404)
    history = (h.link(h.path("procedures", m["accession"]), m["accession"])
               if m["accession"] else "")
    content = h.facts([
        ("Received", h.esc(h.when(m["received_at"]))), ("Peer", h.esc(m["peer"])),
        ("Sender", h.esc(f"{m['sender_application']} {m['sender_facility']}")),
        ("Type", h.esc(m["message_type"])), ("Control ID", h.esc(m["control_id"])),
        ("Character set", h.esc(m["charset"])), ("Patient ID", h.esc(m["patient_id"])),
        ("Accession", history), ("ACK", h.status(m["outcome"])),
        ("Duplicate of", h.link(h.path("messages", str(m["duplicate_of"])), m["duplicate_of"])
         if m["duplicate_of"] else ""),
        ("Error", h.esc(m["error"])),
        ("Replay of", (h.link(h.path("messages", str(m["replay_of"])), m["replay_of"])
                       if m.get("replay_of") else "(purged)" if m.get("replayed_by") else "")
         + (h.esc(f" by {m['replayed_by']}: {m['replay_reason']}") if m.get("replayed_by")
            else "")),
    ])
    content += ('<p class="actions">' + h.link(f"/messages/{pk}/replay", "Replay this message")
                + "</p>")
    content += "<h2>Message</h2>" + _segments(m["raw"], "raw")
    content += "<h2>Acknowledgement</h2>" + _segments(m["ack"], "ack")
    return page(request, f"Message {pk} · {m['control_id']}", content, "/messages")


def _segments(text: str, css: str) -> str:
    """An HL7 message with one segment per line."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r").split("\r")
    return f'<pre class="{css}">' + h.esc("\n".join(lines)) + "</pre>"


# -- outbox --------------------------------------------------------------------------------
async def outbox(request: web.Request) -> web.Response:
    p = request.query
    data = await _service(request).outbox(p.get("state", ""))
    stats, f = data["stats"], data["filter"]
    here = h.path("outbox", state=f["state"])
    summary = h.facts([
        ("Waiting", h.esc(stats["depth"])), ("Dead letters", h.esc(stats["dead"])),
        ("Oldest waiting since", h.esc(h.when(stats["oldest_pending_at"]))),
        ("Destinations", h.esc(", ".join(data["destinations"]) or "none configured")),
    ])
    actions = ('<div class="actions">'
               + h.post_button("/outbox/retry", "Retry all dead letters",
                               fields={"return_to": here})
               + ' <form class="inline" method="post" action="/outbox/purge" '
               'data-confirm="Delete these outbox entries for good?">'
               f'<input type="hidden" name="return_to" value="{h.esc(here)}">'
               f'Purge {h.select("state", PURGEABLE, "delivered", blank=None)} '
               'older than <input name="older_than_days" value="30" size="4"> days '
               '<button type="submit" class="secondary">Purge</button></form></div>')
    form = ('<form class="filters" method="get" action="/outbox">'
            f'<label>State {h.select("state", OUTBOX_STATES, f["state"])}</label>'
            '<button type="submit">Show</button></form>')
    rows = []
    for o in data["items"]:
        button = (h.post_button(f"/outbox/{o['id']}/retry", "Retry",
                                fields={"return_to": here})
                  if o["state"] != "delivered" else "")
        rows.append([h.link(h.path("outbox", str(o["id"])), o["id"]),
                     h.esc(h.when(o["created_at"])), h.esc(o["destination"]),
                     h.esc(o["message_type"]), h.esc(o["control_id"]),
                     h.link(h.path("procedures", o["order_key"]), o["order_key"]),
                     h.status(o["state"]), h.esc(o["attempts"]),
                     h.esc(h.when(o["next_attempt_at"])) if o["state"] == "pending" else "",
                     h.esc(o["last_error"]), button])
    table = h.table(["#", "Queued", "Destination", "Type", "Control ID", "Order (study)",
                     "State", "Attempts", "Next attempt", "Last error", ""], rows,
                    "the outbox is empty", css="outbox")
    return page(request, "Outbox", summary + actions + form + table, "/outbox")


async def outbox_entry(request: web.Request) -> web.Response:
    pk = parse_id(request)
    o = await _service(request).outbox_entry(pk)
    if o is None:
        return page(request, f"Outbox entry {pk}", h.table(["Entry"], [], "no such entry"),
                    "/outbox", 404)
    content = h.facts([
        ("State", h.status(o["state"])), ("Destination", h.esc(o["destination"])),
        ("Type", h.esc(o["message_type"])), ("Control ID", h.esc(o["control_id"])),
        ("Order (study)", h.link(h.path("procedures", o["order_key"]), o["order_key"])),
        ("Attempts", h.esc(o["attempts"])), ("Last error", h.esc(o["last_error"])),
        ("Queued / updated", h.esc(f"{h.when(o['created_at'])} / {h.when(o['updated_at'])}")),
    ])
    if o["state"] != "delivered":
        content += h.post_button(f"/outbox/{pk}/retry", "Retry now",
                                 fields={"return_to": f"/outbox/{pk}"})
    content += "<h2>Message</h2>" + _segments(o["payload"], "payload")
    content += "<h2>Acknowledgement</h2>" + (_segments(o["ack"], "ack") if o["ack"]
                                               else "<p class=hint>none yet</p>")
    return page(request, f"Outbox entry {pk}", content, "/outbox")


async def retry_one(request: web.Request) -> web.Response:
    fields = await form_or_json(request)
    pk = parse_id(request)
    target = return_to(request, fields, "/outbox")
    count = await _service(request).retry(pk, request.remote or "?")
    if not count:
        raise back(target, error=f"entry {pk} does not exist or was already delivered")
    raise back(target, notice=f"entry {pk} queued again")


async def retry_dead(request: web.Request) -> web.Response:
    fields = await form_or_json(request)
    count = await _service(request).retry(None, request.remote or "?")
    raise back(return_to(request, fields, "/outbox"),
               notice=f"{count} dead letter(s) queued again")


async def purge(request: web.Request) -> web.Response:
    fields = await form_or_json(request)
    target = return_to(request, fields, "/outbox")
    try:
        count = await _service(request).purge(fields.get("state", ""),
                                              fields.get("older_than_days", ""),
                                              request.remote or "?")
    except BadRequest as exc:
        raise back(target, error=str(exc)) from None
    raise back(target, notice=f"{count} entr{'y' if count == 1 else 'ies'} purged")


# -- mappings and health -------------------------------------------------------------------
async def mappings(request: web.Request) -> web.Response:
    service = _service(request)
    m = service.mappings()
    s, last = m["summary"], m["last_reload"]
    reload_text = ("never (running the set loaded at start)" if last["at"] is None else
                   f"{h.when(last['at'])}: " + ("put into force" if last["ok"] else
                                                "refused, the running set was kept"))
    content = h.facts([
        ("Folder", h.esc(m["directory"])), ("In force since", h.esc(h.when(m["loaded_at"]))),
        ("Last reload", h.esc(reload_text)),
        ("Files", h.esc(", ".join(s["files"]))),
        ("Message types", h.esc(", ".join(s["messages"]))),
        ("Tables", h.esc(", ".join(s["tables"]))),
        ("Station rules", h.esc(s["station_rules"])),
    ])
    if last["errors"]:
        content += "<h2>Errors of the last reload</h2>" + h.pre("\n".join(last["errors"]))
    content += ('<div class="actions">'
                '<form class="inline" method="get" action="/mappings">'
                '<input type="hidden" name="check" value="1"><button type="submit" '
                'class="secondary">Validate the folder now</button></form> '
                + h.post_button("/mappings/reload", "Reload (as SIGHUP)",
                                confirm="Validate the folder and put it into force if valid?")
                + "</div>")
    if request.query.get("check"):
        errors = await service.check_mappings()
        content += ("<h2>Folder check</h2>" + (h.pre("\n".join(errors)) if errors else
                                               "<p class='notice'>the folder is valid</p>"))
    content += "<h2>Order control (ORC-1_ORC-5 → action/status)</h2>" + h.table(
        ["Key", "Rule"], [[h.esc(k), h.esc(v)] for k, v in s["order_control"].items()])
    return page(request, "Mappings", content, "/mappings")


async def reload_mappings(request: web.Request) -> web.Response:
    ok = await _service(request).reload_mappings(request.remote or "?")
    if ok:
        raise back("/mappings", notice="mappings reloaded and in force")
    raise back("/mappings", error="the folder is invalid; the running set was kept")


async def health(request: web.Request) -> web.Response:
    service = _service(request)
    ready, _ = service.ready()
    rows = [[h.esc(x["name"]), h.status("up" if x["up"] else "down"), h.esc(x["address"]),
             h.esc(", ".join(f"{k}={v}" for k, v in x["detail"].items()))]
            for x in service.health()]
    cluster = await service.cluster()
    nodes = [[h.esc(n["node_id"] + (" (this one)" if n["node_id"] == cluster["node"] else "")),
              h.status("up" if n["alive"] else "down"), h.esc(n["host"]),
              h.esc(f"{n['seen_seconds_ago']:.1f} s ago"), h.esc(f"{n['clock_offset']:+.3f} s")]
             for n in cluster["nodes"]]
    lanes = [[h.esc(lane["lane"]), h.esc(lane["owner"] or "nobody"),
              h.status("up" if lane["held"] else "down"), h.esc(lane["fence"])]
             for lane in cluster["lanes"]]
    content = (f"<p>Ready: {h.status('up' if ready else 'down')}</p>"
               + h.table(["Component", "State", "Address", "Counters"], rows)
               + "<h2>Brokers on this database</h2>"
               + h.table(["Node", "State", "Host", "Last seen", "Clock"], nodes)
               + "<h2>Outbox lanes</h2>" + h.table(["Lane", "Owner", "Lease", "Fence"], lanes))
    return page(request, "Health", content, "/health")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/worklist", worklist)
    app.router.add_get("/procedures/{key}", procedure)
    app.router.add_get("/messages", messages)
    app.router.add_get("/messages/{id}", message)
    app.router.add_get("/outbox", outbox)
    app.router.add_post("/outbox/retry", retry_dead)
    app.router.add_post("/outbox/purge", purge)
    app.router.add_get("/outbox/{id}", outbox_entry)
    app.router.add_post("/outbox/{id}/retry", retry_one)
    app.router.add_get("/mappings", mappings)
    app.router.add_post("/mappings/reload", reload_mappings)
    app.router.add_get("/health", health)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/worklist")
