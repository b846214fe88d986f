"""One timeline per order: the HL7 messages in and out with their acknowledgements, the steps,
the queries that returned them, MPPS, storage commitment, IAN and the completion notice."""

from __future__ import annotations

from typing import Any

from broker.store.admin_queries import procedure_history
from broker.store.connection import AsyncSql
from broker.store.dialect import Dialect
from broker.store.query_log import returning

Row = dict[str, Any]


def ack_code(ack: str) -> str:
    """MSA-1 of an acknowledgement ('' when there is none)."""
    for line in ack.replace("\n", "\r").split("\r"):
        if line.startswith("MSA") and len(line) > 4:
            return line.split(line[3])[1]
    return ""


#: the order of events of the same instant: a cause before its effects
RANK = {"hl7_in": 0, "step": 1, "query": 2, "mpps": 3, "step_change": 4, "commitment": 5,
        "ian": 6, "completion": 7, "hl7_out": 8}


def _event(at: float | None, kind: str, summary: str, rank: str = "", **detail: Any) -> Row:
    return {"at": at, "kind": kind, "summary": summary, "rank": RANK[rank or kind],
            "detail": {k: v for k, v in detail.items() if v not in (None, "", [], {})}}


async def timeline(conn: AsyncSql, key: str, d: Dialect) -> list[Row]:
    """For each procedure whose Study Instance UID or accession is ``key``: its facts and
    its events, oldest first."""
    out = []
    for p in await procedure_history(conn, key, d):
        events = await _messages_in(conn, p)
        for s in p["steps"]:
            where = ", ".join(filter(None, [s["modality"], _start(s), "\\".join(s["stations"])]))
            events.append(_event(s["created_at"], "step", f"step {s['sps_id']} scheduled"
                                 f" ({where})"))
            if s["updated_at"] > s["created_at"]:
                events.append(_event(s["updated_at"], "step", f"step {s['sps_id']} is "
                                     f"{s['status']} (its last change)", "step_change"))
        step_ids = [s["id"] for s in p["steps"]]
        for q in await returning(conn, step_ids, p["created_at"]):
            keys = ", ".join(f"{k}={v}" for k, v in q["keys"].items()) or "no matching key"
            events.append(_event(q["queried_at"], "query", f"{q['calling_ae']} queried "
                                 f"({keys}) and got it among {q['matches']} answer(s)",
                                 query_id=q["id"], peer=q["peer"], step_ids=q["step_ids"]))
        for m in p["mpps"]:
            events.append(_event(m["created_at"], "mpps", f"MPPS IN PROGRESS from "
                                 f"{m['calling_ae'] or '?'}", sop_instance_uid=m[
                                     "sop_instance_uid"], steps=m["sps_ids"]))
            if m["status"] != "IN PROGRESS":
                events.append(_event(m["updated_at"], "mpps", f"MPPS {m['status']}",
                                     sop_instance_uid=m["sop_instance_uid"]))
        for c in p["commitments"]:
            events.append(_event(c["created_at"], "commitment", f"storage commitment queued "
                                 f"for {c['archive']}", transaction_uid=c["transaction_uid"]))
            if c.get("requested_at"):
                events.append(_event(c["requested_at"], "commitment", "storage commitment "
                                     "requested (N-ACTION)", transaction_uid=c[
                                         "transaction_uid"]))
            if c.get("reported_at"):
                events.append(_event(c["reported_at"], "commitment", f"archive reported: "
                                     f"{c['state']}", reason=c.get("reason"),
                                     instances=c.get("instances")))
        for i in p["ian"]:
            events.append(_event(i["received_at"], "ian", f"instance availability notice "
                                 f"from {i['calling_ae'] or '?'}", sop_instance_uid=i[
                                     "sop_instance_uid"]))
        for c in p["completions"]:
            if c.get("decided_at"):
                events.append(_event(c["decided_at"], "completion", f"completion notice "
                                     f"{c['state']}", detail=c.get("detail")))
        events += await _messages_out(conn, p["study_uid"])
        events.sort(key=lambda e: (e["at"] or 0.0, e["rank"]))
        for e in events:
            del e["rank"]
        facts = {k: p[k] for k in ("id", "study_uid", "accession", "patient_id", "issuer",
                                   "patient_name", "placer_order", "filler_order",
                                   "created_at", "updated_at")}
        out.append({"procedure": facts, "events": events})
    return out


def _start(step: Row) -> str:
    date, time = step["start_date"], step["start_time"]
    if not date:
        return ""
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}" + (
        f" {time[:2]}:{time[2:4]}" if len(time) >= 4 else "")


async def _messages_in(conn: AsyncSql, p: Row) -> list[Row]:
    """Order messages of the accession, and the patient's ADT messages since the order."""
    rows = await conn.rows(
        "SELECT id, received_at, sender_application, sender_facility, control_id,"
        " message_type, outcome, duplicate_of, replay_of, replayed_by, replay_reason, error,"
        " ack FROM message_log WHERE (accession = ? AND accession != '') OR (patient_id = ?"
        " AND message_type LIKE 'ADT%' AND received_at >= ?) ORDER BY id",
        (p["accession"], p["patient_id"], p["created_at"]))
    events = []
    for m in rows:
        what = (f"{m['message_type']} {m['control_id']} from {m['sender_application']}"
                f"{'/' + m['sender_facility'] if m['sender_facility'] else ''}")
        if m["replayed_by"]:
            what = f"replay by {m['replayed_by']} of message {m['replay_of'] or '(purged)'}: " \
                + what
        tail = " (duplicate: not applied again)" if m["duplicate_of"] else ""
        kind_of_error = "warnings" if m["outcome"] == "AA" else "error"
        events.append(_event(m["received_at"], "hl7_in", f"{what}: {m['outcome']}{tail}",
                             message_id=m["id"], ack=ack_code(m["ack"] or ""),
                             **{kind_of_error: m["error"]},
                             reason=m["replay_reason"]))
    return events


async def _messages_out(conn: AsyncSql, study_uid: str) -> list[Row]:
    rows = await conn.rows(
        "SELECT id, destination, control_id, message_type, state, attempts, last_error, ack,"
        " created_at, updated_at FROM outbox WHERE order_key = ? ORDER BY id", (study_uid,))
    events = []
    for o in rows:
        what = f"{o['message_type'] or 'message'} {o['control_id']} to {o['destination']}"
        events.append(_event(o["created_at"], "hl7_out", f"{what} queued", outbox_id=o["id"]))
        if o["state"] == "delivered":
            events.append(_event(o["updated_at"], "hl7_out", f"{what} delivered: "
                                 f"{ack_code(o['ack'] or '') or 'sent'}", outbox_id=o["id"],
                                 attempts=o["attempts"]))
        elif o["state"] == "dead":
            events.append(_event(o["updated_at"], "hl7_out", f"{what} refused (dead letter)",
                                 outbox_id=o["id"], error=o["last_error"]))
        elif o["attempts"]:
            events.append(_event(o["updated_at"], "hl7_out", f"{what} not delivered yet "
                                 f"({o['attempts']} attempt(s))", outbox_id=o["id"],
                                 error=o["last_error"]))
    return events
