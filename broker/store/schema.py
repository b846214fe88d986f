"""Versioned schema migrations; each entry moves the database one version up."""

from __future__ import annotations

from broker.store.schema_v9 import LATER, STEPS

__all__ = ["ADDITIVE", "MIGRATIONS", "STEPS"]

MIGRATIONS: list[str] = [
    # 1: patients, requested procedures, scheduled steps, stations, message log
    """
    CREATE TABLE patients (
        id INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL DEFAULT '',
        birth_date TEXT NOT NULL DEFAULT '',
        sex TEXT NOT NULL DEFAULT '',
        attrs TEXT NOT NULL DEFAULT '{}',
        merged_into INTEGER REFERENCES patients(id),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (patient_id, issuer)
    );

    CREATE TABLE patient_names (
        name_key TEXT NOT NULL,
        patient_fk INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        PRIMARY KEY (name_key, patient_fk)
    ) WITHOUT ROWID;
    CREATE INDEX patient_names_patient ON patient_names(patient_fk);

    CREATE TABLE procedures (
        id INTEGER PRIMARY KEY,
        patient_fk INTEGER NOT NULL REFERENCES patients(id),
        study_uid TEXT NOT NULL UNIQUE,
        accession TEXT NOT NULL DEFAULT '',
        requested_procedure_id TEXT NOT NULL DEFAULT '',
        placer_order TEXT NOT NULL DEFAULT '',
        filler_order TEXT NOT NULL DEFAULT '',
        admission_id TEXT NOT NULL DEFAULT '',
        referring_physician TEXT NOT NULL DEFAULT '',
        requesting_physician TEXT NOT NULL DEFAULT '',
        priority TEXT NOT NULL DEFAULT '',
        attrs TEXT NOT NULL DEFAULT '{}',
        order_control TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX procedures_patient ON procedures(patient_fk);
    CREATE INDEX procedures_accession ON procedures(accession);
    CREATE INDEX procedures_placer ON procedures(placer_order);

    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        procedure_fk INTEGER NOT NULL REFERENCES procedures(id) ON DELETE CASCADE,
        sps_id TEXT NOT NULL,
        status TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        start_date TEXT NOT NULL DEFAULT '',
        start_time TEXT NOT NULL DEFAULT '',
        start_dt TEXT NOT NULL DEFAULT '',
        performing_physician TEXT NOT NULL DEFAULT '',
        station_name TEXT NOT NULL DEFAULT '',
        location TEXT NOT NULL DEFAULT '',
        attrs TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (procedure_fk, sps_id)
    );
    CREATE INDEX steps_status_start ON steps(status, start_dt);
    CREATE INDEX steps_modality_start ON steps(modality, start_dt);

    CREATE TABLE step_stations (
        station_aet TEXT NOT NULL,
        start_dt TEXT NOT NULL DEFAULT '',
        step_fk INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        PRIMARY KEY (station_aet, start_dt, step_fk)
    ) WITHOUT ROWID;
    CREATE INDEX step_stations_step ON step_stations(step_fk);

    CREATE TABLE message_log (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        peer TEXT NOT NULL DEFAULT '',
        sender_application TEXT NOT NULL DEFAULT '',
        sender_facility TEXT NOT NULL DEFAULT '',
        control_id TEXT NOT NULL DEFAULT '',
        message_type TEXT NOT NULL DEFAULT '',
        charset TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        duplicate_of INTEGER REFERENCES message_log(id),
        error TEXT NOT NULL DEFAULT '',
        ack TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        accession TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL DEFAULT '',
        raw BLOB NOT NULL
    );
    CREATE INDEX message_log_received ON message_log(received_at);
    CREATE INDEX message_log_control ON message_log(control_id);
    """,
]

MIGRATIONS.append(
    # 2: Modality Performed Procedure Steps and the scheduled steps they cover
    """
    CREATE TABLE mpps (
        id INTEGER PRIMARY KEY,
        sop_instance_uid TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        calling_ae TEXT NOT NULL DEFAULT '',
        unscheduled INTEGER NOT NULL DEFAULT 0,
        dataset TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX mpps_status ON mpps(status);

    CREATE TABLE mpps_steps (
        mpps_fk INTEGER NOT NULL REFERENCES mpps(id) ON DELETE CASCADE,
        step_fk INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        PRIMARY KEY (mpps_fk, step_fk)
    ) WITHOUT ROWID;
    CREATE INDEX mpps_steps_step ON mpps_steps(step_fk);
    """
)

MIGRATIONS.append(
    # 3: the durable outbox of messages to other systems (HL7 to the RIS …)
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        order_key TEXT NOT NULL,
        control_id TEXT NOT NULL,
        message_type TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        ack TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_order ON outbox(order_key, id);
    """
)

MIGRATIONS.append(
    # 4: closing the loop — the instances an MPPS lists, storage commitment transactions,
    #    instance availability notifications, and the completion notice's state per MPPS
    """
    CREATE TABLE mpps_instances (
        mpps_fk INTEGER NOT NULL REFERENCES mpps(id) ON DELETE CASCADE,
        sop_instance_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL DEFAULT '',
        series_uid TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (mpps_fk, sop_instance_uid)
    ) WITHOUT ROWID;
    CREATE INDEX mpps_instances_uid ON mpps_instances(sop_instance_uid);

    CREATE TABLE commitments (
        id INTEGER PRIMARY KEY,
        transaction_uid TEXT NOT NULL UNIQUE,
        mpps_fk INTEGER NOT NULL REFERENCES mpps(id) ON DELETE CASCADE,
        archive TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        requested_at REAL,
        reported_at REAL,
        timeout_at REAL NOT NULL
    );
    CREATE INDEX commitments_mpps ON commitments(mpps_fk);
    CREATE INDEX commitments_waiting ON commitments(state, timeout_at);

    CREATE TABLE commitment_instances (
        commitment_fk INTEGER NOT NULL REFERENCES commitments(id) ON DELETE CASCADE,
        sop_instance_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        failure_reason INTEGER,
        PRIMARY KEY (commitment_fk, sop_instance_uid)
    ) WITHOUT ROWID;

    CREATE TABLE ian (
        id INTEGER PRIMARY KEY,
        sop_instance_uid TEXT NOT NULL UNIQUE,
        calling_ae TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT '',
        mpps_fk INTEGER REFERENCES mpps(id) ON DELETE SET NULL,
        procedure_fk INTEGER REFERENCES procedures(id) ON DELETE SET NULL,
        linked_by TEXT NOT NULL DEFAULT '',
        dataset TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX ian_mpps ON ian(mpps_fk);
    CREATE INDEX ian_study ON ian(study_uid);

    CREATE TABLE instance_availability (
        sop_instance_uid TEXT PRIMARY KEY,
        sop_class_uid TEXT NOT NULL DEFAULT '',
        series_uid TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT '',
        availability TEXT NOT NULL,
        retrieve_ae TEXT NOT NULL DEFAULT '',
        ian_fk INTEGER REFERENCES ian(id) ON DELETE SET NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX instance_availability_study ON instance_availability(study_uid);

    CREATE TABLE completions (
        mpps_fk INTEGER PRIMARY KEY REFERENCES mpps(id) ON DELETE CASCADE,
        state TEXT NOT NULL DEFAULT 'waiting',
        deadline REAL NOT NULL,
        decided_at REAL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX completions_waiting ON completions(state, deadline);
    """
)

MIGRATIONS.append(
    # 5: an index on message_log.duplicate_of, so that deleting old rows (retention) does not
    #    scan the whole log once per row for the duplicates that point at it
    """
    CREATE INDEX IF NOT EXISTS message_log_duplicate ON message_log(duplicate_of)
        WHERE duplicate_of IS NOT NULL;
    """
)

MIGRATIONS.append(
    # 6: brokers sharing one database (PostgreSQL): each instance and when it was last seen,
    #    the owner of each outbox lane with its fencing token, the instance that asked for
    #    each storage commitment
    """
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        host TEXT NOT NULL DEFAULT '',
        mllp_port INTEGER NOT NULL DEFAULT 0,
        dicom_port INTEGER NOT NULL DEFAULT 0,
        admin_port INTEGER NOT NULL DEFAULT 0,
        version TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        stopped_at REAL,
        clock_offset REAL NOT NULL DEFAULT 0
    );

    CREATE TABLE lanes (
        destination TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT '',
        fence INTEGER NOT NULL DEFAULT 0,
        taken_at REAL NOT NULL DEFAULT 0,
        expires_at REAL NOT NULL DEFAULT 0
    );

    ALTER TABLE commitments ADD COLUMN node TEXT NOT NULL DEFAULT '';
    """
)

_SAME_ORIGINAL = (
    "o.outcome = 'AA' AND o.duplicate_of IS NULL"
    " AND o.sender_application = message_log.sender_application"
    " AND o.sender_facility = message_log.sender_facility"
    " AND o.control_id = message_log.control_id")

MIGRATIONS.append(
    # 7: one accepted original per sender and control ID, enforced by the database (brokers
    #    sharing one database claim a control ID in the transaction of its effects); a
    #    second original left by an older retention run becomes a duplicate of the first
    f"""
    UPDATE message_log SET duplicate_of = (
        SELECT MIN(o.id) FROM message_log o WHERE {_SAME_ORIGINAL})
    WHERE outcome = 'AA' AND duplicate_of IS NULL AND control_id != ''
      AND id > (SELECT MIN(o.id) FROM message_log o WHERE {_SAME_ORIGINAL});
    CREATE UNIQUE INDEX message_log_original
        ON message_log(sender_application, sender_facility, control_id)
        WHERE outcome = 'AA' AND duplicate_of IS NULL AND control_id != '';
    """
)

MIGRATIONS.append(
    # 8: the query log (every worklist C-FIND: who asked what, what it found) and replays of
    #    stored inbound messages (linked to the original, with who asked and why; a replay —
    #    replayed_by is set — is never the accepted original of its control ID, so the unique
    #    index leaves it out, also once retention has removed the original it points to)
    """
    CREATE TABLE query_log (
        id INTEGER PRIMARY KEY,
        queried_at REAL NOT NULL,
        service TEXT NOT NULL DEFAULT 'mwl',
        calling_ae TEXT NOT NULL DEFAULT '',
        called_ae TEXT NOT NULL DEFAULT '',
        peer TEXT NOT NULL DEFAULT '',
        node TEXT NOT NULL DEFAULT '',
        keys TEXT NOT NULL DEFAULT '{}',
        identifier BLOB NOT NULL,
        transfer_syntax TEXT NOT NULL DEFAULT '',
        station_key TEXT NOT NULL DEFAULT '',
        matches INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        ms REAL NOT NULL DEFAULT 0,
        step_ids TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX query_log_at ON query_log(queried_at);
    CREATE INDEX query_log_caller ON query_log(calling_ae, queried_at);

    ALTER TABLE message_log ADD COLUMN replay_of INTEGER REFERENCES message_log(id);
    ALTER TABLE message_log ADD COLUMN replayed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE message_log ADD COLUMN replay_reason TEXT NOT NULL DEFAULT '';
    CREATE INDEX message_log_replay ON message_log(replay_of) WHERE replay_of IS NOT NULL;
    DROP INDEX message_log_original;
    CREATE UNIQUE INDEX message_log_original
        ON message_log(sender_application, sender_facility, control_id)
        WHERE outcome = 'AA' AND duplicate_of IS NULL AND control_id != ''
          AND replayed_by = '';
    """
)

MIGRATIONS += LATER  # 9 and on: broker/store/schema_v9.py

#: migrations that only add (tables, columns with defaults, indexes): a broker of the
#: version before still runs on them (PostgreSQL, rolling upgrades: docs/high-availability.md);
#: 14 is not: it indexes the references of FHIR resources, which a broker of schema 13 would
#: store without their index rows (so such a broker refuses a database of schema 14)
ADDITIVE: frozenset[int] = frozenset({2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
