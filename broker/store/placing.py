"""A new order in one statement where the database chains inserts (PostgreSQL's
data-modifying WITH): its patient created or found (merges followed), its requested
procedure, its steps and their stations, with one result to wait for."""

from __future__ import annotations

from functools import cache

from broker.store.dialect import Dialect
from broker.store.messages import ACCEPTED

#: the procedure columns after patient_fk, in OrderRepo._procedure_columns' order
PROCEDURE_COLUMNS = ("study_uid", "accession", "requested_procedure_id", "placer_order",
                     "filler_order", "admission_id", "referring_physician",
                     "requesting_physician", "priority", "attrs")
STEP_COLUMNS = ("modality", "start_date", "start_time", "start_dt", "performing_physician",
                "station_name", "location", "attrs")


@cache
def place_order_sql(d: Dialect, guarded: bool = False) -> str:
    """Parameters, in order: with ``guarded``, the sender's application, facility and the
    control ID; the patient's 8 row values, its name keys (JSON array), its key twice
    (patient ID, issuer), the 10 procedure columns, order control, created, updated, the
    steps' status, created, updated, the step rows (JSON), the station rows (JSON).

    One row: patient id, patient_id, issuer, attrs, merged_into (the last four NULL when the
    patient was created here; all five NULL when nothing was written), the procedure's id
    (NULL when its Study Instance UID exists: nothing of the procedure was written); with
    ``guarded``, then the message log id, ACK, content hash and reception time of an accepted
    original with that sender and control ID: when there is one, nothing was written."""
    steps = ", ".join(f"v.{c}" for c in STEP_COLUMNS)
    # the guard: a message already accepted under this control ID changes nothing (its
    # resend is answered from the log); read in this statement, after the transaction's
    # locks, so no round trip of its own
    accepted = f" accepted AS ({ACCEPTED})," if guarded else ""
    not_accepted = "NOT EXISTS (SELECT 1 FROM accepted)"
    return (
        "WITH RECURSIVE" + accepted + " new_patient AS ("
        " INSERT INTO patients (patient_id, issuer, name, birth_date, sex, attrs, created_at,"
        " updated_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
        + (f" WHERE {not_accepted}" if guarded else "") +
        " ON CONFLICT (patient_id, issuer) DO NOTHING RETURNING id),"
        " new_names AS ("
        " INSERT INTO patient_names (name_key, patient_fk) SELECT k.name_key, p.id"
        f" FROM new_patient p, {d.json_values()} AS k(name_key) ON CONFLICT DO NOTHING),"
        # the statement's snapshot predates new_patient: the chain finds a patient only when
        # it existed before, so exactly one of the two sides of ``patient`` has a row
        " chain (id, patient_id, issuer, attrs, merged_into, depth) AS ("
        " SELECT id, patient_id, issuer, attrs, merged_into, 0 FROM patients"
        " WHERE patient_id = ? AND issuer = ?" + (f" AND {not_accepted}" if guarded else "") +
        " UNION ALL SELECT p.id, p.patient_id, p.issuer, p.attrs, p.merged_into, c.depth + 1"
        " FROM patients p JOIN chain c ON p.id = c.merged_into WHERE c.depth < 64),"
        " patient AS ("
        " SELECT id, NULL AS patient_id, NULL AS issuer, NULL AS attrs,"
        " CAST(NULL AS bigint) AS merged_into FROM new_patient"
        " UNION ALL (SELECT id, patient_id, issuer, attrs, merged_into FROM chain"
        " ORDER BY depth DESC LIMIT 1)),"
        " new_procedure AS ("
        " INSERT INTO procedures (patient_fk, " + ", ".join(PROCEDURE_COLUMNS) + ","
        " order_control, created_at, updated_at)"
        " SELECT patient.id, " + ", ".join("?" for _ in PROCEDURE_COLUMNS) + ", ?, ?, ?"
        " FROM patient ON CONFLICT (study_uid) DO NOTHING RETURNING id),"
        " new_steps AS ("
        " INSERT INTO steps (procedure_fk, status, created_at, updated_at, sps_id, "
        + ", ".join(STEP_COLUMNS) + ")"
        f" SELECT r.id, ?, ?, ?, v.sps_id, {steps} FROM new_procedure r, "
        + d.json_rows(("sps_id", *STEP_COLUMNS)) + " AS v ORDER BY v.ord"
        " RETURNING id, sps_id),"
        " new_stations AS ("
        " INSERT INTO step_stations (station_aet, start_dt, step_fk)"
        " SELECT v.station_aet, v.start_dt, s.id FROM "
        + d.json_rows(("sps_id", "station_aet", "start_dt"))
        + " AS v JOIN (SELECT sps_id, max(id) AS id FROM new_steps GROUP BY sps_id) AS s"
        " ON s.sps_id = v.sps_id ON CONFLICT DO NOTHING)"
        " SELECT patient.id, patient.patient_id, patient.issuer, patient.attrs,"
        " patient.merged_into, (SELECT id FROM new_procedure)"
        + (", accepted.id, accepted.ack, accepted.content_hash, accepted.received_at"
           " FROM (SELECT 1) AS one LEFT JOIN patient ON true LEFT JOIN accepted ON true"
           if guarded else " FROM patient"))
