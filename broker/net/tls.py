"""The ``ssl.SSLContext``s built from TLS settings (listeners and clients).

A context is built when the broker starts: a certificate, key or CA file that is missing or
unreadable stops the start with a message naming the setting and the file. Only paths are
ever reported, never what a key file holds.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from broker.config import ConfigError, TlsSettings

#: ``minimum_version`` values
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
#: OpenSSL reasons of a handshake that got something other than a TLS ClientHello
NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"})


class TlsError(ConfigError):
    """A TLS setting cannot be used (says which setting and which file)."""


def server_context(tls: TlsSettings, setting: str) -> ssl.SSLContext | None:
    """The context of a listener (``setting`` names it in errors: ``mllp.tls``), or None."""
    if not tls.enabled:
        return None
    if not tls.cert_file or not tls.key_file:
        raise TlsError(f"{setting}: a TLS listener needs {setting}.cert_file and "
                       f"{setting}.key_file")
    if tls.require_client_cert and not tls.ca_file:
        raise TlsError(f"{setting}.require_client_cert needs {setting}.ca_file (the CAs that "
                       "sign the accepted client certificates)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(context, tls, setting)
    _load_chain(context, tls, setting)
    if tls.ca_file:
        _load_ca(context, tls, setting)
        context.verify_mode = (ssl.CERT_REQUIRED if tls.require_client_cert
                               else ssl.CERT_OPTIONAL)
    return context


def client_context(tls: TlsSettings, setting: str) -> ssl.SSLContext | None:
    """The context of an outbound connection, or None when TLS is off."""
    if not tls.enabled:
        return None
    if bool(tls.cert_file) != bool(tls.key_file):
        raise TlsError(f"{setting}: a client certificate needs both {setting}.cert_file and "
                       f"{setting}.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = tls.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _common(context, tls, setting)
    if tls.ca_file:
        _load_ca(context, tls, setting)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file:
        _load_chain(context, tls, setting)
    return context


def client_args(tls: TlsSettings, setting: str, host: str) -> tuple[ssl.SSLContext, str] | None:
    """(context, server name) for pynetdicom's ``tls_args``, or None when TLS is off."""
    context = client_context(tls, setting)
    return None if context is None else (context, tls.server_hostname or host)


def peer_subject(cert: dict[str, object] | None) -> str:
    """The common name of a peer certificate (from ``getpeercert()``), or ''."""
    for rdn in (cert or {}).get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def handshake_reason(exc: BaseException) -> str:
    """A short reason for a failed handshake (the OpenSSL reason when there is one)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        reason = str(exc.reason).lower().replace("_", " ")
        if exc.reason in NOT_TLS:
            reason += " (the client does not speak TLS: plain TCP?)"
        return reason
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return str(exc) or type(exc).__name__


def _common(context: ssl.SSLContext, tls: TlsSettings, setting: str) -> None:
    version = VERSIONS.get(tls.minimum_version)
    if version is None:
        raise TlsError(f"{setting}.minimum_version {tls.minimum_version!r} must be one of "
                       + ", ".join(VERSIONS))
    context.minimum_version = version
    if tls.ciphers:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise TlsError(f"{setting}.ciphers {tls.ciphers!r} selects no cipher OpenSSL "
                           "knows") from None
    if tls.handshake_timeout <= 0:
        raise TlsError(f"{setting}.handshake_timeout must be more than 0 seconds")


def _readable(path: str, label: str) -> Path:
    file = Path(path)
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise TlsError(f"{label} {path}: cannot be read ({exc.strerror or exc})") from None
    return file


def _pem_kind(path: Path, marker: bytes, label: str, what: str) -> None:
    """Say which file is wrong before OpenSSL's 'PEM lib' would."""
    if marker not in path.read_bytes():
        raise TlsError(f"{label} {path}: is not a PEM {what}")


def _load_chain(context: ssl.SSLContext, tls: TlsSettings, setting: str) -> None:
    cert = _readable(tls.cert_file, f"{setting}.cert_file")
    key = _readable(tls.key_file, f"{setting}.key_file")
    _pem_kind(cert, b"-----BEGIN CERTIFICATE-----", f"{setting}.cert_file", "certificate")
    _pem_kind(key, b"PRIVATE KEY-----", f"{setting}.key_file", "private key")
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = handshake_reason(exc)
        raise TlsError(f"{setting}.cert_file {cert} and {setting}.key_file {key} cannot be "
                       f"used together ({reason})") from None


def _load_ca(context: ssl.SSLContext, tls: TlsSettings, setting: str) -> None:
    ca = _readable(tls.ca_file, f"{setting}.ca_file")
    _pem_kind(ca, b"-----BEGIN CERTIFICATE-----", f"{setting}.ca_file", "certificate")
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        raise TlsError(f"{setting}.ca_file {ca}: no CA certificate could be read "
                       f"({handshake_reason(exc)})") from None
