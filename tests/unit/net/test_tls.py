"""TLS settings that cannot be used are refused with the setting named; secrets never echoed."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from broker.config import ConfigError, Settings, TlsSettings
from broker.config.loading import apply_overrides
from broker.net.tls import client_args, client_context, handshake_reason, server_context


def test_off_means_no_context() -> None:
    assert server_context(TlsSettings(), "mllp.tls") is None
    assert client_args(TlsSettings(), "storage_commitment.tls", "pacs") is None


@pytest.mark.parametrize(("tls", "fragment"), [
    (TlsSettings(enabled=True), "needs mllp.tls.cert_file and mllp.tls.key_file"),
    (TlsSettings(enabled=True, cert_file="c", key_file="k", minimum_version="SSLv3"),
     "mllp.tls.minimum_version 'SSLv3' must be one of TLSv1.2, TLSv1.3"),
])
def test_server_settings_refused(tls: TlsSettings, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        server_context(tls, "mllp.tls")


def test_client_settings_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs both outbound.destinations\[0\].tls.cert_file"):
        client_context(TlsSettings(enabled=True, cert_file="c.pem"),
                       "outbound.destinations[0].tls")
    with pytest.raises(ConfigError, match="ciphers 'NO-SUCH-CIPHER' selects no cipher"):
        client_context(TlsSettings(enabled=True, ciphers="NO-SUCH-CIPHER"), "x.tls")
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=f"x.tls.ca_file {ca}: is not a PEM certificate"):
        client_context(TlsSettings(enabled=True, ca_file=str(ca)), "x.tls")


def test_client_without_ca_trusts_the_system_and_checks_names() -> None:
    context, name = client_args(TlsSettings(enabled=True), "storage_commitment.tls",
                                "pacs.example.org") or (None, "")
    assert isinstance(context, ssl.SSLContext) and name == "pacs.example.org"
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_handshake_reasons() -> None:
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    assert handshake_reason(plain) == ("wrong version number (the client does not speak TLS: "
                                       "plain TCP?)")
    assert handshake_reason(TimeoutError()) == "handshake timed out"


def test_override_errors_never_echo_the_value() -> None:
    for override in ("admin.tokn=s3cret-value", "admintoken=s3cret-value",
                     "nosuch.token=s3cret-value"):
        with pytest.raises(ConfigError) as caught:
            apply_overrides(Settings(), [override])
        assert "s3cret-value" not in str(caught.value)


def test_documented_settings_are_the_defaults() -> None:
    from broker.config import PACKAGE_ROOT
    from broker.config.loading import load_settings

    shown, default = load_settings(PACKAGE_ROOT / "conf" / "broker.yaml"), Settings()
    assert shown.mllp.tls == default.mllp.tls and shown.dicom.tls == default.dicom.tls
    assert shown.storage_commitment.tls == default.storage_commitment.tls
    assert shown.mllp.allowed_addresses == shown.dicom.allowed_addresses == []
    assert shown.hl7.allowed_senders == []
    assert shown.mappings.watch_interval == default.mappings.watch_interval
