"""Schema migrations 9 and on (Unified Procedure Step, upstream worklists, …), appended to
broker.store.schema.MIGRATIONS in order."""

from __future__ import annotations

from collections.abc import Callable

from broker.store.connection import Connection
from broker.store.fhir_refs import backfill_references

LATER: list[str] = []
#: a migration's Python step, by migration number: run after its SQL, in its transaction, by
#: both migrators (broker.store.sqlite.connection, broker.store.postgres.schema), for what
#: the shared SQL cannot spell on both databases (reading the JSON of bodies)
STEPS: dict[int, Callable[[Connection], None]] = {}

LATER.append(
    # 9: Unified Procedure Step: each scheduled step is a workitem; its SOP Instance UID
    #    (given by a UPS Push N-CREATE, else assigned when UPS first names the step), the
    #    workitem's own state (Transaction UID, performer, progress, cancellation request,
    #    attributes the worklist does not hold) and the subscriptions of UPS Watch SCUs
    """
    ALTER TABLE steps ADD COLUMN uid TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX steps_uid ON steps(uid) WHERE uid != '';
    CREATE INDEX steps_without_uid ON steps(id) WHERE uid = '';

    CREATE TABLE workitems (
        step_fk INTEGER PRIMARY KEY REFERENCES steps(id) ON DELETE CASCADE,
        transaction_uid TEXT NOT NULL DEFAULT '',
        performer TEXT NOT NULL DEFAULT '',
        attrs TEXT NOT NULL DEFAULT '{}',
        cancel_requested_at REAL,
        cancel_reason TEXT NOT NULL DEFAULT '',
        cancel_requested_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE ups_subscriptions (
        id INTEGER PRIMARY KEY,
        ae_title TEXT NOT NULL,
        workitem_uid TEXT NOT NULL DEFAULT '',
        filter TEXT NOT NULL DEFAULT '',
        deletion_lock INTEGER NOT NULL DEFAULT 0,
        suspended INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        UNIQUE (ae_title, workitem_uid, filter)
    );
    CREATE INDEX ups_subscriptions_workitem ON ups_subscriptions(workitem_uid);
    """
)

LATER.append(
    # 10: UPS event reports for web subscribers (UPS-RS): written in the transaction of the
    #     change, sent over the subscriber's WebSocket when it is open (oldest first), then
    #     marked delivered; retention.ups_events_days removes them
    """
    CREATE TABLE ups_events (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        receiving_ae TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        event_type INTEGER NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}',
        delivered_at REAL
    );
    CREATE INDEX ups_events_pending ON ups_events(receiving_ae, id)
        WHERE delivered_at IS NULL;
    CREATE INDEX ups_events_at ON ups_events(created_at);
    """
)

LATER.append(
    # 11: upstream worklists: a procedure's source (an upstream's name; '' for HL7, UPS and
    #     the rest), and each mirrored item's digest and the polls in a row that missed it
    """
    ALTER TABLE procedures ADD COLUMN source TEXT NOT NULL DEFAULT '';
    CREATE TABLE upstream_items (
        source TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        digest TEXT NOT NULL DEFAULT '',
        missed_polls INTEGER NOT NULL DEFAULT 0,
        last_seen_at REAL NOT NULL,
        PRIMARY KEY (source, study_uid)
    );
    """
)

LATER.append(
    # 12: FHIR resources taken in at /fhir (Patient, ServiceRequest, …): the resource as
    #     last stored (its logical id, version, business identifier, digest for idempotent
    #     reposts), and for a ServiceRequest the Study Instance UID of the requested
    #     procedure it became (how a step's progress finds its ServiceRequest)
    """
    CREATE TABLE fhir_resources (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        identifier_system TEXT NOT NULL DEFAULT '',
        identifier_value TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        issuer TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT '',
        digest TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL,
        PRIMARY KEY (resource_type, id)
    );
    CREATE INDEX fhir_resources_identifier
        ON fhir_resources(resource_type, identifier_system, identifier_value);
    CREATE INDEX fhir_resources_study ON fhir_resources(study_uid) WHERE study_uid != '';
    """
)

LATER.append(
    # 13: every business identifier of each FHIR resource (a conditional create or update
    #     and an identifier search find a resource by any of them through an index, not by
    #     reading bodies); fhir_resources keeps the one it is known by
    """
    CREATE TABLE fhir_identifiers (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        system TEXT NOT NULL DEFAULT '',
        value TEXT NOT NULL,
        PRIMARY KEY (resource_type, value, system, id)
    );
    CREATE INDEX fhir_identifiers_resource ON fhir_identifiers(resource_type, id);
    """
)

LATER.append(
    # 14: the references of each FHIR resource (top-level Reference elements and an
    #     Appointment's participant.actor; relative Type/id only: broker.store.fhir_refs),
    #     led by the reference: a patient= search and the Appointments based on a
    #     ServiceRequest go through an index, not a scan of the type's bodies; the step
    #     fills it from the resources already stored
    """
    CREATE TABLE fhir_references (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        element TEXT NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (reference, element, resource_type, id)
    ) WITHOUT ROWID;
    CREATE INDEX fhir_references_resource ON fhir_references(resource_type, id);
    """
)
STEPS[14] = backfill_references
