"""Settings with embedded defaults; an optional YAML file (conf/broker.yaml) overrides them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from broker.config.dicom import (
    CallingAeSettings,
    DicomSettings,
    ForwardSettings,
    UpsSettings,
    UpsSubscriberSettings,
    UpstreamQuerySettings,
    UpstreamWorklistSettings,
)
from broker.config.fhir import FhirDestinationSettings, FhirIntakeSettings, FhirSettings
from broker.config.tls import TlsSettings

__all__ = ["CallingAeSettings", "DicomSettings", "FhirDestinationSettings", "FhirIntakeSettings",
           "FhirSettings", "ForwardSettings", "TlsSettings",
           "UpsSettings", "UpsSubscriberSettings", "UpstreamQuerySettings",
           "UpstreamWorklistSettings"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def shipped_defaults() -> Path:
    """Folder of the default mappings, example settings and samples installed with the package.

    In a source checkout its mappings/ and broker.yaml are symlinks to the repository's
    mappings/ and conf/broker.yaml; a wheel holds copies.
    """
    return Path(str(resources.files("broker") / "defaults"))


def _default_mappings_dir() -> str:
    shipped = shipped_defaults() / "mappings"
    return str(shipped.resolve()) if shipped.is_dir() else "mappings"


@dataclass
class DatabaseSettings:
    path: str = "var/broker.sqlite"
    synchronous: str = "FULL"
    busy_timeout_ms: int = 5000
    max_batch: int = 64
    writer_poll_ms: float = 0.0
    #: ``postgresql://user@host:port/dbname``: PostgreSQL instead of the SQLite file at path
    #: (default: the environment variable MWL_DATABASE_URL, e.g. from a systemd
    #: EnvironmentFile, so that no password sits in the settings file)
    url: str = field(default_factory=lambda: os.environ.get("MWL_DATABASE_URL", ""))
    #: PostgreSQL connections kept for worklist queries and other reads
    pool_size: int = 8
    #: PostgreSQL connections (and threads) committing writes; their transactions overlap
    #: one another's round trips (SQLite has one writer)
    writers: int = 1
    #: seconds to wait for PostgreSQL to accept a connection
    connect_timeout: float = 5.0


@dataclass
class NodeSettings:
    """This instance among several sharing one database."""

    #: empty: the host name and the MLLP port
    id: str = ""


@dataclass
class AllowedSenderSettings:
    """An HL7 sender allowed to send: MSH-3, MSH-4 (empty: any) and source addresses (IP or
    CIDR network; empty: any)."""

    application: str = ""
    facility: str = ""
    addresses: list[str] = field(default_factory=list)


@dataclass
class SenderSettings:
    """Per-sender overrides, matched on MSH-3 (and MSH-4 when given)."""

    application: str = ""
    facility: str = ""
    charset: str = ""


@dataclass
class MllpSettings:
    host: str = "0.0.0.0"
    port: int = 2575
    max_frame_bytes: int = 1 << 20
    idle_timeout: float = 300.0
    max_connections: int = 200
    #: open connections one source address may hold (0: no cap)
    max_connections_per_address: int = 20
    #: seconds from a frame's start block to its end block before the connection is closed
    frame_timeout: float = 30.0
    shutdown_grace: float = 10.0
    application: str = "MWLBROKER"
    facility: str = ""
    allowed_addresses: list[str] = field(default_factory=list)
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass
class Hl7Settings:
    accepted_versions: list[str] = field(default_factory=lambda: [
        "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"])
    accepted_processing_ids: list[str] = field(default_factory=lambda: ["P"])
    charset_aliases: dict[str, str] = field(default_factory=dict)
    sniff_utf8: bool = True
    fallback_charsets: list[str] = field(default_factory=list)
    senders: list[SenderSettings] = field(default_factory=list)
    cancel_started_steps: bool = False
    allowed_senders: list[AllowedSenderSettings] = field(default_factory=list)


@dataclass
class DestinationSettings:
    """A system that receives the broker's HL7 (the RIS)."""

    name: str = "ris"
    host: str = "127.0.0.1"
    port: int = 2576
    timeout: float = 10.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: MSH-18 of the messages sent here (HL7 table 0211, e.g. 8859/1), in place of the
    #: template's own; the bytes are encoded in it
    charset: str = ""


@dataclass
class StorageCommitmentSettings:
    """The archive asked to commit the instances of each completed MPPS (Push Model SCU).

    Off while ``ae_title`` is empty. The request goes through the outbox (destination
    ``name``); the archive's N-EVENT-REPORT may come on the same association or on a new one
    it opens to the broker's AE."""

    name: str = "archive"
    ae_title: str = ""
    host: str = "127.0.0.1"
    port: int = 104
    delay: float = 0.0
    report_timeout: float = 600.0
    same_association_wait: float = 2.0
    timeout: float = 30.0
    available_statuses: list[str] = field(default_factory=lambda: ["ONLINE", "NEARLINE"])
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass
class OutboundSettings:
    destinations: list[DestinationSettings] = field(default_factory=list)
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    poll: float = 1.0
    #: seconds a broker owns a destination's lane without renewing (brokers sharing one
    #: database: another takes a dead owner's lanes over after about this long)
    lease_seconds: float = 5.0
    #: seconds a stop waits for the acknowledgement of the message in flight on each lane
    shutdown_grace: float = 5.0


@dataclass
class AdminSettings:
    """The admin HTTP server: web console, JSON REST API, /metrics, /healthz, /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    token_file: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: a console session ends after this many seconds without a request, or this long after
    #: its sign-in, whichever comes first
    session_idle_timeout: float = 1800.0
    session_max_age: float = 28800.0
    #: failed sign-ins and bearer tokens from one address before it is refused (429) for
    #: the rest of the window
    max_auth_failures: int = 10
    auth_failure_window: float = 300.0
    #: seconds a client has to send a whole request head (from connecting or from its
    #: previous response), and to send a request body
    request_read_timeout: float = 15.0
    max_connections: int = 128
    max_connections_per_address: int = 16


@dataclass
class RetentionSettings:
    """How long finished work is kept (days; 0 keeps it for ever) and how often to purge."""

    interval: float = 3600.0
    steps_days: float = 30.0
    mpps_days: float = 30.0
    message_log_days: float = 90.0
    outbox_delivered_days: float = 30.0
    #: the query log (every worklist C-FIND with its keys and what it found)
    query_log_days: float = 30.0
    #: UPS event reports kept for web (UPS-RS) subscribers, sent or still waiting
    ups_events_days: float = 1.0
    chunk: int = 500


@dataclass
class MappingSettings:
    directory: str = field(default_factory=_default_mappings_dir)
    #: seconds between looks at the folder for changed files (0: reload on SIGHUP only)
    watch_interval: float = 2.0


@dataclass
class LoggingSettings:
    level: str = "INFO"
    format: str = "keyvalue"


@dataclass
class AuditSettings:
    """The IHE ATNA audit trail: DICOM audit messages as RFC 5424 syslog to an audit record
    repository, through a durable spool (docs/operations.md, "Audit trail")."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6514
    #: tls (RFC 5425), tcp (RFC 6587, octet counting) or udp (RFC 5426)
    transport: str = "tls"
    #: client TLS as outbound destinations have it; used with transport tls (whose
    #: ``enabled`` it implies)
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: seconds to connect, and for the repository to acknowledge what was sent
    timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    #: empty: ``audit-spool`` in the folder of database.path
    spool_directory: str = ""
    spool_max_bytes: int = 100 * 1024 * 1024
    #: syslog facility (10: authpriv, as ITI-20 wants)
    facility: int = 10
    #: AuditSourceID (empty: node.id, else the host name and the MLLP port)
    audit_source_id: str = ""
    enterprise_site_id: str = ""


@dataclass
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    mllp: MllpSettings = field(default_factory=MllpSettings)
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    storage_commitment: StorageCommitmentSettings = field(
        default_factory=StorageCommitmentSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    mappings: MappingSettings = field(default_factory=MappingSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    upstream_worklists: list[UpstreamWorklistSettings] = field(default_factory=list)
    fhir: FhirSettings = field(default_factory=FhirSettings)


class ConfigError(ValueError):
    """A setting is unknown or of the wrong type."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
