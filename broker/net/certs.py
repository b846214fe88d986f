"""When the certificates the broker presents expire: each TLS listener's and each outbound
connection's client certificate, read from the files the TLS contexts were built from.

The contexts are built once, at start (a renewed file takes effect at the next start), so
these dates are read then too: they are those of the certificates in use.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from broker.config import Settings, TlsSettings
from broker.logs import event

log = logging.getLogger("broker.net")
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


@dataclass(frozen=True)
class Certificate:
    kind: str  # listener | client
    name: str  # mllp, dicom, admin, or the destination's name
    file: str
    not_after: float  # Unix time


def configured(settings: Settings) -> list[tuple[str, str, TlsSettings]]:
    """(kind, name, TLS settings) of every endpoint that presents a certificate."""
    out = [("listener", "mllp", settings.mllp.tls), ("listener", "dicom", settings.dicom.tls)]
    if settings.admin.enabled:
        out.append(("listener", "admin", settings.admin.tls))
    out += [("client", d.name, d.tls) for d in settings.outbound.destinations]
    sc = settings.storage_commitment
    if sc.ae_title:
        out.append(("client", sc.name, sc.tls))
    out += [("client", f.name, f.tls) for f in settings.dicom.mpps_forward]
    return [(kind, name, tls) for kind, name, tls in out if tls.enabled and tls.cert_file]


def certificates(settings: Settings) -> list[Certificate]:
    """The expiry of the first (own) certificate of each configured certificate file; one
    that cannot be read is logged and left out (the TLS context reports the file itself)."""
    found = []
    for kind, name, tls in configured(settings):
        try:
            not_after = not_after_of(Path(tls.cert_file).read_bytes())
        except (OSError, ValueError) as exc:
            event(log, "certificate_unreadable", logging.WARNING, file=tls.cert_file,
                  endpoint=name, error=str(exc))
            continue
        found.append(Certificate(kind, name, tls.cert_file, not_after))
    return found


def not_after_of(pem: bytes) -> float:
    """The notAfter (Unix time) of the first certificate of a PEM file (ValueError if none)."""
    match = _PEM.search(pem)
    if match is None:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except binascii.Error:
        raise ValueError("the PEM certificate is not valid base64") from None
    certificate, _ = _element(der, 0)
    tbs, _ = _element(certificate[1], 0)  # Certificate ::= SEQUENCE { tbsCertificate, ... }
    body, at = tbs[1], 0
    if body[:1] == b"\xa0":  # [0] EXPLICIT version
        at = _element(body, at)[1]
    for _ in range(3):  # serialNumber, signature, issuer
        at = _element(body, at)[1]
    validity, _ = _element(body, at)
    after_at = _element(validity[1], 0)[1]  # notBefore, then notAfter
    not_after, _ = _element(validity[1], after_at)
    return _time(*not_after)


def _element(data: bytes, at: int) -> tuple[tuple[int, bytes], int]:
    """((tag, content), offset after) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise ValueError("truncated certificate")
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > len(data):
        raise ValueError("truncated certificate")
    return (tag, data[at:at + length]), at + length


def _time(tag: int, content: bytes) -> float:
    text = content.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError(f"certificate time {text!r} is not UTC")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ: 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != _GENERALIZED_TIME:
        raise ValueError("certificate validity is not a time")
    digits = text[:-1]
    if len(digits) != 14 or not digits.isdigit():
        raise ValueError(f"certificate time {text!r} is not YYYYMMDDHHMMSSZ")
    parts = [int(digits[i:j]) for i, j in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12),
                                           (12, 14))]
    return float(calendar.timegm((*parts, 0, 0, 0)))
