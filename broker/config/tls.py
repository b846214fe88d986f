"""TLS settings, shared by every listener and client of the broker."""

from __future__ import annotations

from dataclasses import dataclass


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
