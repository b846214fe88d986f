"""Versioned schema migrations; each entry moves the database one version up."""

from __future__ import annotations

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
