"""DICOM settings: the broker's AE, its peers (MPPS forwarding, UPS subscribers) and
the upstream worklists it mirrors."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config.tls import TlsSettings


@dataclass
class CallingAeSettings:
    """Options for one calling AE title (a modality)."""

    ae_title: str = ""
    station_key: bool = False
    charset: str = "ISO_IR 192"


@dataclass
class ForwardSettings:
    """A downstream MPPS SCP that gets a copy of every N-CREATE and N-SET (through the outbox)."""

    name: str = "mpps-archive"
    ae_title: str = ""
    host: str = "127.0.0.1"
    port: int = 104
    timeout: float = 30.0
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass
class UpsSubscriberSettings:
    """An AE that may subscribe to UPS events (UPS Watch), and where its event reports go."""

    ae_title: str = ""
    host: str = "127.0.0.1"
    port: int = 104
    timeout: float = 30.0
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass
class UpsSettings:
    """Unified Procedure Step over DIMSE on the broker's AE (docs/dicom-conformance.md)."""

    enabled: bool = True
    #: the AEs that may subscribe (N-ACTION Subscribe naming another AE is C308)
    subscribers: list[UpsSubscriberSettings] = field(default_factory=list)


@dataclass
class DicomSettings:
    ae_title: str = "MWLBROKER"
    host: str = "0.0.0.0"
    port: int = 11112
    max_associations: int = 128
    fast_path: bool = True
    mpps_match_accession: bool = True
    allowed_calling_aes: list[str] = field(default_factory=list)
    show_all_statuses: bool = False
    charset: str = "ISO_IR 192"
    calling_aes: list[CallingAeSettings] = field(default_factory=list)
    allowed_addresses: list[str] = field(default_factory=list)
    tls: TlsSettings = field(default_factory=TlsSettings)
    mpps_forward: list[ForwardSettings] = field(default_factory=list)
    ups: UpsSettings = field(default_factory=UpsSettings)
    max_concurrent_queries: int = 4
    #: bytes of one DIMSE message (command + data set, over all its P-DATA fragments)
    max_message_bytes: int = 4 << 20
    #: open connections from one source address (0: no cap)
    max_associations_per_address: int = 32
    #: seconds from the TCP connect to a whole A-ASSOCIATE-RQ (TLS handshake included)
    negotiation_timeout: float = 10.0
    #: a C-FIND matching value longer than this (each UID of a list on its own) is C000
    max_query_value_length: int = 256
    #: a C-FIND matching value with more wildcards ('*' and '?') than this is C000
    max_query_wildcards: int = 16
    #: a C-FIND UID list with more UIDs than this is C000 (a real SCU sends a few; 240,000
    #: held a query for 2.3 s and the HL7 ACKs past 100 ms)
    max_query_uids: int = 1000
    #: record every worklist C-FIND in the query log (console "Queries", GET /api/queries)
    query_log: bool = True
    #: seconds an N-CREATE/N-SET waits for the store before answering 0110
    mpps_store_timeout: float = 30.0


@dataclass
class UpstreamQuerySettings:
    """What an upstream worklist is asked for: SPS start dates from ``days_before`` before
    today to ``days_after`` after it, optionally one modality and station, plus ``keys``
    (keyword or tag: matching value; empty: return key)."""

    modality: str = ""
    station: str = ""
    days_before: int = 0
    days_after: int = 1
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class UpstreamWorklistSettings:
    """A Modality Worklist SCP (a RIS's own) queried every ``interval`` seconds and mirrored
    into the store as orders of source ``name`` (docs/operations.md, "Upstream worklists")."""

    name: str = ""
    ae_title: str = ""
    host: str = "127.0.0.1"
    port: int = 104
    #: empty: dicom.ae_title
    calling_ae: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)
    interval: float = 60.0
    timeout: float = 30.0
    query: UpstreamQuerySettings = field(default_factory=UpstreamQuerySettings)
    #: an item missing from this many polls in a row is removed (its steps CANCELED)
    remove_after: int = 3
