"""The procedure page's sections: what the broker knows of one requested procedure."""

from __future__ import annotations

from typing import Any

from broker.admin import html as h
from broker.admin.pages import hhmm
from broker.model.ups import state_of

Row = dict[str, Any]


def procedure_sections(p: Row) -> str:
    """A requested procedure's history: facts, messages, steps and workitems, MPPS,
    storage commitment, IAN, completion, messages out."""
    key = p["accession"] or p["study_uid"]
    parts = ['<p class="actions">' + h.link(h.path("procedures", key) + "/explain",
                                             "Why is it (not) on the worklist?")
             + " · " + h.link(h.path("procedures", key) + "/timeline", "Timeline") + "</p>"]
    parts += [h.facts([
        ("Patient", f"{h.esc(p['patient_name'])} ({h.esc(p['patient_id'])}"
                    f"{'^^^' + h.esc(p['issuer']) if p['issuer'] else ''})"),
        ("Birth date / sex", h.esc(f"{p['birth_date']} {p['sex']}")),
        ("Accession", h.esc(p["accession"])),
        ("Study Instance UID", h.esc(p["study_uid"])),
        ("Requested procedure", h.esc(f"{p['requested_procedure_id']} "
                                      f"{p['attrs'].get('RequestedProcedureDescription', '')}")),
        ("Placer / filler order", h.esc(f"{p['placer_order']} / {p['filler_order']}")),
        ("Priority", h.esc(p["priority"])),
        ("Last order control", h.esc(p["order_control"])),
        ("Created / updated", h.esc(f"{h.when(p['created_at'])} / {h.when(p['updated_at'])}")),
    ])]
    parts.append("<h2>HL7 messages in</h2>" + h.table(
        ["Received", "Sender", "Type", "Control ID", "ACK", "Error"],
        [[h.link(h.path("messages", str(m["id"])), h.when(m["received_at"])),
          h.esc(m["sender_application"]), h.esc(m["message_type"]), h.esc(m["control_id"]),
          h.status(m["outcome"]) + (" (duplicate)" if m["duplicate_of"] else ""),
          h.esc(m["error"])] for m in p["messages_in"]], "no logged message names this accession"))
    parts.append("<h2>Scheduled procedure steps</h2>" + h.table(
        ["SPS ID", "Status", "Modality", "Start", "Stations", "Station name", "Description",
         "Updated"],
        [[h.esc(s["sps_id"]), h.status(s["status"]), h.esc(s["modality"]),
          h.esc(f"{s['start_date']} {hhmm(s['start_time'])}"), h.esc(", ".join(s["stations"])),
          h.esc(s["station_name"]), h.esc(s["attrs"].get("ScheduledProcedureStepDescription",
                                                           "")),
          h.esc(h.when(s["updated_at"]))] for s in p["steps"]], "no step"))
    parts.append(_workitems(p))
    parts.append("<h2>Performed procedure steps (MPPS)</h2>" + h.table(
        ["SOP Instance UID", "Status", "Calling AE", "Steps", "Created", "Updated", "Dataset"],
        [[h.esc(m["sop_instance_uid"]), h.status(m["status"]), h.esc(m["calling_ae"]),
          h.esc(m["sps_ids"] or ("unscheduled" if m["unscheduled"] else "")),
          h.esc(h.when(m["created_at"])), h.esc(h.when(m["updated_at"])),
          "<details><summary>show</summary>" + h.pretty_json(m["dataset"]) + "</details>"]
         for m in p["mpps"]], "no MPPS yet"))
    if p["commitments"]:
        parts.append("<h2>Storage commitment</h2>" + _generic(p["commitments"]))
    if p["ian"] or p["availability"]:
        summary = ", ".join(f"{k}: {v}" for k, v in p["availability"].items())
        parts.append("<h2>Instance availability (IAN)</h2>"
                     + (f"<p>Instances {h.esc(summary)}</p>" if summary else "")
                     + _generic(p["ian"]))
    if p["completions"]:
        parts.append("<h2>Completion</h2>" + _generic(p["completions"]))
    parts.append("<h2>HL7 messages out</h2>" + h.table(
        ["Entry", "Destination", "Type", "Control ID", "State", "Attempts", "Last error",
         "Updated"],
        [[h.link(h.path("outbox", str(o["id"])), o["id"]), h.esc(o["destination"]),
          h.esc(o["message_type"]), h.esc(o["control_id"]), h.status(o["state"]),
          h.esc(o["attempts"]), h.esc(o["last_error"]), h.esc(h.when(o["updated_at"]))]
         for o in p["messages_out"]], "nothing sent for this procedure"))
    return "<section class=procedure>" + "".join(parts) + "</section>"


def _workitems(p: Row) -> str:
    """The steps as UPS workitems: state, performer, cancellation request, subscribers."""
    rows = [[h.esc(s["sps_id"]), h.esc(s["uid"] or "(not named by UPS yet)"),
             h.status(state_of(s["status"]).value), h.esc(s["ups_performer"] or ""),
             h.esc(f"{h.when(s['ups_cancel_requested_at'])} {s['ups_cancel_reason']}"
                   if s["ups_cancel_requested_at"] else ""),
             h.esc(", ".join(s["ups_subscribers"]))] for s in p["steps"]]
    glob = ", ".join(p["ups_global_subscribers"]) or "none"
    return ("<h2>Workitems (UPS)</h2>" + h.table(
        ["SPS ID", "Workitem UID", "UPS state", "Performer", "Cancellation requested",
         "Subscribers"], rows, "no step", css="workitems")
        + f'<p class="hint">Global subscribers: {h.esc(glob)}</p>')


def _generic(rows: list[Row]) -> str:
    """Rows of tables this console does not know in detail, column by column."""
    if not rows:
        return ""
    headers = list(rows[0])
    return h.table(headers, [[h.esc(h.when(r[c]) if c.endswith("_at") and isinstance(
        r[c], float) else r[c]) for c in headers] for r in rows])
