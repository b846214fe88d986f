"""RFC 5424 syslog messages as IHE ITI-20 (Record Audit Event) and DICOM PS3.15 A.6/A.7 want
them: facility authpriv (10), severity notice (5) or warning (4), MSGID ``IHE+RFC-3881``, no
structured data, the XML as a UTF-8 MSG after a BOM; and the octet-counting frame of stream
transports (RFC 5425 over TLS, RFC 6587 over TCP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from broker.audit.codes import SUCCESS

#: facility 10: security/authorization messages (ITI-20, PS3.15 A.6)
AUTHPRIV = 10
NOTICE, WARNING = 5, 4
#: ITI TF-2 3.20.4.1.2: the MSGID of a DICOM/RFC 3881 audit message
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"


@dataclass(frozen=True, slots=True)
class Framing:
    """The header fields that do not change from one message to the next."""

    facility: int = AUTHPRIV
    hostname: str = ""
    app_name: str = "mwl-broker"
    procid: str = ""


def severity(outcome: str) -> int:
    """Notice for a success, warning for any failure (ITI-20 allows 4 or 5)."""
    return NOTICE if outcome == SUCCESS else WARNING


def message(xml: bytes, framing: Framing, level: int, when: datetime) -> bytes:
    """One SYSLOG-MSG: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML``."""
    header = " ".join((f"<{framing.facility * 8 + level}>1", timestamp(when),
                       field(framing.hostname, 255), field(framing.app_name, 48),
                       field(framing.procid, 128), field(MSGID, 32), NILVALUE))
    return header.encode("ascii") + b" " + BOM + xml


def timestamp(when: datetime) -> str:
    """An RFC 5424 TIMESTAMP in UTC, to the microsecond (at most 6 fraction digits)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII only (others dropped), at most ``limit`` long;
    NILVALUE when nothing is left."""
    text = "".join(ch for ch in value if "!" <= ch <= "~")[:limit]
    return text or NILVALUE


def octet_counted(msg: bytes) -> bytes:
    """``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 4.3, RFC 6587 3.4.1)."""
    return b"%d %s" % (len(msg), msg)
