"""The expiry dates of the certificates the broker presents: read from the PEM files of the
listeners and outbound connections that have one, as cryptography reads them."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.config import DestinationSettings, ForwardSettings, Settings, TlsSettings
from broker.net.certs import certificates, configured, not_after_of


def pem(not_after: datetime.datetime, serial: int = 12345) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("not_after", [
    datetime.datetime(2027, 3, 4, 5, 6, 7, tzinfo=datetime.UTC),  # UTCTime
    datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),  # UTCTime, last year
    datetime.datetime(2050, 1, 1, tzinfo=datetime.UTC),  # GeneralizedTime from 2050 on
    datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),  # "no expiry"
])
def test_not_after_is_the_certificates_own(not_after: datetime.datetime) -> None:
    text = pem(not_after, serial=2**150)  # a long serial number (multi-byte length)
    assert not_after_of(text) == not_after.timestamp()
    assert x509.load_pem_x509_certificate(text).not_valid_after_utc == not_after


def test_the_first_certificate_of_a_chain_counts() -> None:
    own = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    chain = pem(own) + pem(datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC))
    assert not_after_of(b"subject=CN = broker\n" + chain) == own.timestamp()


@pytest.mark.parametrize("text", [
    b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",  # truncated DER
])
def test_what_is_no_certificate_is_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        not_after_of(text)


def test_every_endpoint_that_presents_a_certificate(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "good.pem"
    good.write_bytes(pem(datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC)))

    def tls(cert: Path | str = good) -> TlsSettings:
        return TlsSettings(enabled=True, cert_file=str(cert), key_file="k.pem")

    s = Settings()
    s.mllp.tls = tls()
    s.dicom.tls = TlsSettings(enabled=False, cert_file=str(good))  # off: not presented
    s.admin.tls = tls(tmp_path / "missing.pem")  # unreadable: logged, left out
    s.outbound.destinations = [DestinationSettings("ris", tls=tls()),
                               DestinationSettings("plain"),
                               DestinationSettings("no-client-cert",
                                                   tls=TlsSettings(enabled=True))]
    s.storage_commitment.tls = tls()  # no ae_title: commitment is off
    s.dicom.mpps_forward = [ForwardSettings("pacs", tls=tls())]
    assert [(k, n) for k, n, _ in configured(s)] == [
        ("listener", "mllp"), ("listener", "admin"), ("client", "ris"), ("client", "pacs")]
    s.storage_commitment.ae_title = "ARCHIVE"
    with caplog.at_level(logging.WARNING, "broker.net"):
        found = certificates(s)
    assert [(c.kind, c.name, c.file) for c in found] == [
        ("listener", "mllp", str(good)), ("client", "ris", str(good)),
        ("client", "archive", str(good)), ("client", "pacs", str(good))]
    assert {c.not_after for c in found} == {
        datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC).timestamp()}
    assert [r.getMessage() for r in caplog.records] == ["certificate_unreadable"]
