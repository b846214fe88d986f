"""Settings with embedded defaults; an optional YAML file (conf/broker.yaml) overrides them."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


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
    writer_poll_ms: float = 0.5


@dataclass
class TlsSettings:
    """TLS of one listener or one outbound connection (off unless ``enabled``).

    Listener: ``cert_file``/``key_file`` are its certificate chain and key; ``ca_file`` the CAs
    whose client certificates are accepted (needed by ``require_client_cert``).
    Client: ``ca_file`` the CAs trusted to sign the server's certificate (empty: the system's
    CAs); ``cert_file``/``key_file`` the client certificate, when the server asks for one;
    ``server_hostname`` the name checked in the server's certificate (empty: the host
    connected to), unless ``check_hostname`` is false.
    """

    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = False
    minimum_version: str = "TLSv1.2"
    ciphers: str = ""
    server_hostname: str = ""
    check_hostname: bool = True
    handshake_timeout: float = 10.0


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
    #: seconds an N-CREATE/N-SET waits for the store before answering 0110
    mpps_store_timeout: float = 30.0


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
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
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


class ConfigError(ValueError):
    """A setting is unknown or of the wrong type."""


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (so `synchronous: OFF` stays the text OFF)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_settings(path: str | Path | None = None) -> Settings:
    """Embedded defaults, overridden by the YAML file when one is given."""
    if path is None:
        return Settings()
    with open(path, encoding="utf-8") as fh:
        data = _yaml(fh.read()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    settings: Settings = _build(Settings, data, str(path))
    expand_credentials(settings, str(path))
    check(settings, str(path))
    return settings


#: DICOM Specific Character Sets the worklist can answer in
DICOM_CHARSETS = ("ISO_IR 192", "GB18030", "ISO_IR 100")


_CREDENTIALS = re.compile(r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b")


def expand_credentials(settings: Any, where: str, label: str = "") -> None:
    """Replace ``${CREDENTIALS_DIRECTORY}`` in every ``*_file`` setting by the folder systemd
    passes secrets in (``LoadCredential=``): readable by the service's user only, so a token
    or TLS key need not be world-readable under ``DynamicUser``."""
    import os

    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        name = f"{label}{f.name}"
        if dataclasses.is_dataclass(value):
            expand_credentials(value, where, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    expand_credentials(item, where, f"{name}[{i}].")
        elif f.name.endswith("_file") and isinstance(value, str) and _CREDENTIALS.search(value):
            folder = os.environ.get("CREDENTIALS_DIRECTORY", "")
            if not folder:
                raise ConfigError(f"{where}: {name} {value!r} names $CREDENTIALS_DIRECTORY, "
                                  "which is not set (systemd sets it for a unit with "
                                  "LoadCredential=; elsewhere give the file's path)")
            setattr(settings, f.name, _CREDENTIALS.sub(folder.replace("\\", "\\\\"), value))


def check(settings: Settings, where: str = "settings") -> None:
    """Values that are well typed but not usable (unknown character sets …)."""
    import codecs

    lanes = [d.name for d in settings.outbound.destinations] + [
        f.name for f in settings.dicom.mpps_forward] + (
        [settings.storage_commitment.name] if settings.storage_commitment.ae_title else [])
    for name in sorted({n for n in lanes if lanes.count(n) > 1}):
        raise ConfigError(f"{where}: destination name {name!r} is used more than once (outbound."
                          "destinations, dicom.mpps_forward, storage_commitment.name)")
    for forward in settings.dicom.mpps_forward:
        if not forward.ae_title:
            raise ConfigError(f"{where}: dicom.mpps_forward {forward.name!r} needs an ae_title")
    for name, number in dataclasses.asdict(settings.retention).items():
        if number < 0 or (name == "chunk" and number < 1):
            raise ConfigError(f"{where}: retention.{name} {number} must be "
                              + ("at least 1" if name == "chunk" else "0 or more"))
    for label, value in [("dicom.charset", settings.dicom.charset)] + [
            (f"dicom.calling_aes[{i}].charset", c.charset)
            for i, c in enumerate(settings.dicom.calling_aes)]:
        if value not in DICOM_CHARSETS:
            raise ConfigError(f"{where}: {label} {value!r} must be one of "
                              + ", ".join(DICOM_CHARSETS))
    _check_destination_charsets(settings, where)
    codec_settings = [(f"hl7.senders[{i}].charset", s.charset)
                      for i, s in enumerate(settings.hl7.senders) if s.charset]
    codec_settings += [(f"hl7.charset_aliases[{k!r}]", v)
                       for k, v in settings.hl7.charset_aliases.items()]
    codec_settings += [(f"hl7.fallback_charsets[{i}]", v)
                       for i, v in enumerate(settings.hl7.fallback_charsets)]
    for label, codec in codec_settings:
        try:
            codecs.lookup(codec)
        except LookupError:
            raise ConfigError(f"{where}: {label} {codec!r} is not a known character "
                              "set (Python codec names such as latin-1, gb18030)") from None
    _check_addresses(settings, where)
    for label, number in (("mllp.max_connections_per_address",
                           settings.mllp.max_connections_per_address),
                          ("mllp.frame_timeout", settings.mllp.frame_timeout)):
        if number < 0:
            raise ConfigError(f"{where}: {label} {number} must be 0 (off) or more")
    _check_dicom_limits(settings.dicom, where)
    if settings.mappings.watch_interval < 0:
        raise ConfigError(f"{where}: mappings.watch_interval "
                          f"{settings.mappings.watch_interval} must be 0 (off) or more")
    admin = settings.admin
    if admin.enabled and not is_loopback(admin.host) and not (admin.token or admin.token_file):
        raise ConfigError(f"{where}: admin.host {admin.host!r} is not a loopback address, so "
                          "the admin console needs admin.token or admin.token_file (or bind "
                          "admin.host to 127.0.0.1, or set admin.enabled: false)")
    for name in ("session_idle_timeout", "session_max_age", "max_auth_failures",
                 "auth_failure_window", "request_read_timeout", "max_connections",
                 "max_connections_per_address"):
        if getattr(admin, name) <= 0:
            raise ConfigError(f"{where}: admin.{name} {getattr(admin, name)} must be more "
                              "than 0")


def _check_dicom_limits(dicom: DicomSettings, where: str) -> None:
    """The DICOM listener's per-message, per-address and negotiation bounds."""
    if dicom.max_associations_per_address < 0:
        raise ConfigError(f"{where}: dicom.max_associations_per_address "
                          f"{dicom.max_associations_per_address} must be 0 (off) or more")
    for label, number in (("max_message_bytes", dicom.max_message_bytes),
                          ("negotiation_timeout", dicom.negotiation_timeout)):
        if number <= 0:
            raise ConfigError(f"{where}: dicom.{label} {number} must be more than 0")


def _check_destination_charsets(settings: Settings, where: str) -> None:
    """Each destination's MSH-18 is a table 0211 name the sender can encode in."""
    from broker.mapping.outbound import ENCODABLE

    for i, d in enumerate(settings.outbound.destinations):
        if d.charset and d.charset not in ENCODABLE:
            raise ConfigError(f"{where}: outbound.destinations[{i}].charset {d.charset!r} must "
                              "be one of " + ", ".join(ENCODABLE))


def _check_addresses(settings: Settings, where: str) -> None:
    """Every allow-list entry is an IP address or a CIDR network."""
    from broker.net.allow import parse_networks

    lists = [("mllp.allowed_addresses", settings.mllp.allowed_addresses),
             ("dicom.allowed_addresses", settings.dicom.allowed_addresses)]
    lists += [(f"hl7.allowed_senders[{i}].addresses", s.addresses)
              for i, s in enumerate(settings.hl7.allowed_senders)]
    for label, values in lists:
        try:
            parse_networks(values, label)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}{hint}")
        kwargs[key] = _convert(hints[key], value, f"{where}: {key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if origin in (Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number")
        return tp(value)
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where} must be a text value")
        return "" if value is None else str(value)
    return value


def apply_overrides(settings: Settings, overrides: list[str]) -> Settings:
    """Apply ``section.key=value`` overrides (values read as YAML scalars)."""
    for item in overrides:
        name, sep, text = item.partition("=")
        section, _, key = name.strip().partition(".")
        shown = f"{name.strip()}=…" if sep else item  # a value may be a secret: never echo it
        if not sep or not key:
            raise ConfigError(f"override {shown!r} must look like section.key=value")
        target = getattr(settings, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise ConfigError(f"override {shown!r}: unknown section {section!r}")
        hints = get_type_hints(type(target))
        if key not in hints:
            raise ConfigError(f"override {shown!r}: unknown setting {section}.{key}")
        value = _convert(hints[key], _yaml(text), f"override {name}")
        setattr(target, key, value)
    if overrides:
        expand_credentials(settings, "overrides")
        check(settings, "overrides")
    return settings
