"""Settings that are well typed but not usable: unknown character sets, clashing names, bad
limits and addresses."""

from __future__ import annotations

import dataclasses
import re

from broker.config import (
    AuditSettings,
    ConfigError,
    DicomSettings,
    Settings,
    UpstreamWorklistSettings,
    is_loopback,
)
from broker.config.fhir import check_destination

#: DICOM Specific Character Sets the worklist can answer in
DICOM_CHARSETS = ("ISO_IR 192", "GB18030", "ISO_IR 100")


#: the password of a URL's user part (``postgresql://mwl:SECRET@db/mwl``)
_URL_PASSWORD = re.compile(r"(://[^/?#@\s:]*:)[^/?#\s]*@")
#: a secret parameter of a URL query or a libpq ``key=value`` connection string
#: (``?password=SECRET``, ``&sslpassword=SECRET``, ``host=db password=SECRET``)
_SECRET_PARAMETER = re.compile(
    r"((?:^|[?&;\s])[A-Za-z_]*(?:password|passwd|secret|token|key)[A-Za-z_]*\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|[^&;\s]*)", re.IGNORECASE)


def safe_url(url: str) -> str:
    """A database URL (or libpq connection string) with its password and every secret
    parameter shown as ``***``."""
    url = _URL_PASSWORD.sub(r"\1***@", url)
    return _SECRET_PARAMETER.sub(r"\1***", url)


def check(settings: Settings, where: str = "settings") -> None:
    """Values that are well typed but not usable (unknown character sets …)."""
    import codecs

    lanes = [d.name for d in settings.outbound.destinations] + [
        f.name for f in settings.dicom.mpps_forward] + (
        [settings.storage_commitment.name] if settings.storage_commitment.ae_title else [])
    for name in sorted({n for n in lanes if lanes.count(n) > 1}):
        raise ConfigError(f"{where}: destination name {name!r} is used more than once (outbound."
                          "destinations, dicom.mpps_forward, storage_commitment.name)")
    ups_lanes = [f"ups-events:{u.ae_title.strip()}" for u in settings.dicom.ups.subscribers]
    for problem in check_destination(settings.fhir.destination, lanes + ups_lanes, where):
        raise ConfigError(problem)
    url = settings.database.url
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where}: database.url {safe_url(url)!r} must start with "
                          "postgresql:// (or be empty for the SQLite file database.path)")
    if settings.database.writers < 1:
        raise ConfigError(f"{where}: database.writers must be at least 1")
    if settings.database.pool_size < 1:
        raise ConfigError(f"{where}: database.pool_size must be at least 1")
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
    _check_audit(settings.audit, where)
    _check_upstreams(settings.upstream_worklists, where)
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


def _check_audit(audit: AuditSettings, where: str) -> None:
    """The audit repository's transport, port, syslog facility and timings."""
    if audit.transport not in ("tls", "tcp", "udp"):
        raise ConfigError(f"{where}: audit.transport {audit.transport!r} must be tls, tcp or "
                          "udp")
    if audit.tls.enabled and audit.transport != "tls":
        raise ConfigError(f"{where}: audit.tls.enabled is true but audit.transport is "
                          f"{audit.transport}: set audit.transport: tls")
    if audit.enabled and not audit.host.strip():
        raise ConfigError(f"{where}: audit.enabled needs audit.host (the audit record "
                          "repository)")
    if not 0 < audit.port < 65536:
        raise ConfigError(f"{where}: audit.port {audit.port} must be 1 to 65535")
    if not 0 <= audit.facility <= 23:
        raise ConfigError(f"{where}: audit.facility {audit.facility} must be 0 to 23 "
                          "(10: authpriv)")
    for label, number in (("timeout", audit.timeout), ("backoff_base", audit.backoff_base),
                          ("backoff_max", audit.backoff_max),
                          ("spool_max_bytes", audit.spool_max_bytes)):
        if number <= 0:
            raise ConfigError(f"{where}: audit.{label} {number} must be more than 0")


def _check_upstreams(upstreams: list[UpstreamWorklistSettings], where: str) -> None:
    """Each upstream worklist has a unique name, an AE title, a port and usable timings."""
    from broker.dicom.client import keyword_of

    names = [u.name for u in upstreams]
    for i, u in enumerate(upstreams):
        label = f"{where}: upstream_worklists[{i}]"
        if not u.name.strip():
            raise ConfigError(f"{label} needs a name (its orders' source, a metrics label)")
        if names.count(u.name) > 1:
            raise ConfigError(f"{label}: name {u.name!r} is used more than once")
        if not u.ae_title.strip() or not u.host.strip():
            raise ConfigError(f"{label} ({u.name}) needs an ae_title and a host")
        if not 0 < u.port < 65536:
            raise ConfigError(f"{label} ({u.name}): port {u.port} must be 1 to 65535")
        for key, number in (("interval", u.interval), ("timeout", u.timeout),
                            ("remove_after", u.remove_after)):
            if number <= 0 or (key == "remove_after" and number != int(number)):
                raise ConfigError(f"{label} ({u.name}): {key} {number} must be more than 0"
                                  + (" (a whole number of polls)" if key == "remove_after"
                                     else ""))
        if u.query.days_before < 0 or u.query.days_after < 0:
            raise ConfigError(f"{label} ({u.name}): query.days_before and query.days_after "
                              "must be 0 or more")
        for key in u.query.keys:
            try:
                keyword_of(key)
            except ValueError as exc:
                raise ConfigError(f"{label} ({u.name}): query.keys: {exc}") from None


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
