"""TLS: MLLP and DICOM listeners with client certificates, the outbound HL7 client, the
``send`` command, and certificate files that cannot be used. Certificates are made here."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from broker.app import Broker
from broker.config import ConfigError, DestinationSettings, TlsSettings
from broker.hl7.mllp import MllpClient, MllpError, frame
from broker.net.tls import client_context, server_context
from tests.support.broker import BIN, BrokerProcess, make_settings, rejections, running
from tests.support.certs import Pair, Pki, make_pki
from tests.support.db import Db
from tests.support.mllp import msa
from tests.support.ris import Ris
from tests.support.samples import order
from tests.support.waiting import until

REFUSED = (ssl.SSLError, ConnectionError, MllpError, TimeoutError)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def listener_tls(pki: Pki, require_client_cert: bool = True) -> TlsSettings:
    return TlsSettings(enabled=True, cert_file=str(pki.server.cert),
                       key_file=str(pki.server.key), ca_file=str(pki.ca),
                       require_client_cert=require_client_cert, handshake_timeout=2.0)


def client_tls(pki: Pki, pair: Pair | None, ca: Path | None = None) -> TlsSettings:
    return TlsSettings(enabled=True, ca_file=str(ca or pki.ca),
                       cert_file=str(pair.cert) if pair else "",
                       key_file=str(pair.key) if pair else "")


def client_ssl(pki: Pki, pair: Pair | None) -> ssl.SSLContext:
    context = client_context(client_tls(pki, pair), "test")
    assert context is not None
    return context


@pytest.fixture
async def tls_broker(tmp_path: Path, pki: Pki) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0)
    settings.mllp.tls = listener_tls(pki)
    settings.dicom.tls = listener_tls(pki)
    async with running(settings) as b:
        yield b


async def tls_send(port: int, context: ssl.SSLContext, payload: bytes) -> str:
    async with MllpClient("127.0.0.1", port, timeout=5.0, ssl_context=context) as client:
        return (await client.send(payload)).decode("utf-8", errors="replace")


async def test_mllp_over_tls_refuses_clients_without_a_valid_certificate(
        tls_broker: Broker, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.mllp")
    port = tls_broker.mllp.bound_port
    ack = await tls_send(port, client_ssl(pki, pki.client), order(1).encode())
    assert msa(ack)[1:3] == ["AA", "MSG00000001"]

    for pair in (None, pki.stranger):  # no certificate; a certificate of another CA
        with pytest.raises(REFUSED):
            await tls_send(port, client_ssl(pki, pair), order(2).encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # plain TCP
    writer.write(frame(order(3).encode()))
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 5.0)
    except ConnectionError:
        answer = b""
    writer.close()
    assert b"MSA" not in answer

    await until(lambda: rejections(tls_broker, "mllp", "tls_handshake") == 3)
    refused = [r.__dict__["fields"] for r in caplog.records if r.msg == "mllp_tls_refused"]
    assert len(refused) == 3 and all(f["peer"].startswith("127.0.0.1:") for f in refused)
    reasons = " | ".join(f["reason"] for f in refused)
    assert "certificate" in reasons and "does not speak TLS" in reasons
    connected = [r.__dict__["fields"] for r in caplog.records if r.msg == "mllp_connected"]
    assert connected[0]["client_cert"] == "modality" and connected[0]["tls"].startswith("TLS")

    ack = await tls_send(port, client_ssl(pki, pki.client), order(4).encode())
    assert msa(ack)[1] == "AA"  # still serving
    assert [row[:2] for row in Db(tls_broker.settings.database.path).log()] == [
        ("MSG00000001", "AA"), ("MSG00000004", "AA")]


def _dicom(port: int, tls_args: tuple[ssl.SSLContext, str] | None) -> tuple[bool, int, list[str]]:
    """(established, C-ECHO status, accession numbers the worklist answers) — blocking."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER", tls_args=tls_args)
    if not assoc.is_established:
        return False, -1, []
    try:
        echo = assoc.send_c_echo()
        query = Dataset()
        query.AccessionNumber = ""
        step = Dataset()
        step.Modality = "CT"
        query.ScheduledProcedureStepSequence = [step]
        found = [str(ds.AccessionNumber) for status, ds in
                 assoc.send_c_find(query, ModalityWorklistInformationFind)
                 if status and status.Status in (0xFF00, 0xFF01) and ds is not None]
        return True, int(echo.Status), found
    finally:
        assoc.release()


async def test_dicom_echo_and_find_over_tls(tls_broker: Broker, pki: Pki) -> None:
    ack = await tls_send(tls_broker.mllp.bound_port, client_ssl(pki, pki.client),
                         order(7).encode())
    assert msa(ack)[1] == "AA"
    port = tls_broker.dicom.bound_port
    good = (client_ssl(pki, pki.client), "127.0.0.1")
    assert await asyncio.to_thread(_dicom, port, good) == (True, 0, ["A0000007"])

    for tls_args in ((client_ssl(pki, None), "127.0.0.1"),
                     (client_ssl(pki, pki.stranger), "127.0.0.1"), None):
        established, _, _ = await asyncio.to_thread(_dicom, port, tls_args)
        assert not established
    await until(lambda: rejections(tls_broker, "dicom", "tls_handshake") == 3)
    assert await asyncio.to_thread(_dicom, port, good) == (True, 0, ["A0000007"])


async def test_outbound_hl7_to_a_tls_ris(tmp_path: Path, pki: Pki) -> None:
    """The RIS asks for a client certificate; a destination that does not trust the RIS's
    CA keeps its messages pending with the reason."""
    from tests.support.mpps import perform

    ris_context = server_context(listener_tls(pki), "ris")
    ris = await Ris().start(ssl=ris_context)
    settings = make_settings(tmp_path)
    settings.outbound.destinations = [
        DestinationSettings("ris", "127.0.0.1", ris.port, 2.0, client_tls(pki, pki.client)),
        DestinationSettings("doubting", "127.0.0.1", ris.port, 2.0,
                            client_tls(pki, pki.client, ca=pki.other_ca))]
    settings.outbound.backoff_base = settings.outbound.poll = 0.05
    broker = Broker(settings)
    await broker.start()
    try:
        async with MllpClient("127.0.0.1", broker.mllp.bound_port, timeout=5.0) as client:
            assert msa((await client.send(order(1).encode())).decode())[1] == "AA"
        await asyncio.to_thread(perform, broker)
        db = Db(broker.settings.database.path)

        def states(destination: str) -> list[tuple[str, str]]:
            return db.query("SELECT state, last_error FROM outbox WHERE destination = ? "
                            "ORDER BY id", destination)
        await until(lambda: [s for s, _ in states("ris")] == ["delivered", "delivered"])
        assert len(ris.received) == 2
        await until(lambda: bool(states("doubting")) and states("doubting")[0][1] != "")
        state, error = states("doubting")[0]
        assert state == "pending" and "certificate verify failed" in error
    finally:
        await broker.stop()
        await ris.stop()


def test_storage_commitment_request_over_tls(pki: Pki) -> None:
    """The storage commitment SCU reaches a TLS archive; it refuses an archive whose
    certificate it cannot trust (retried later)."""
    from pynetdicom import evt
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    from broker.dicom.stgcmt import CommitmentRequester
    from broker.net.tls import client_args

    asked: list[str] = []

    def on_action(ev: evt.Event) -> tuple[int, None]:
        asked.append(str(ev.action_information.TransactionUID))
        return 0x0000, None

    archive = AE(ae_title="ARCHIVE")
    archive.add_supported_context(StorageCommitmentPushModel)
    server = archive.start_server(("127.0.0.1", 0), block=False,
                                  ssl_context=server_context(listener_tls(pki), "archive"),
                                  evt_handlers=[(evt.EVT_N_ACTION, on_action)])
    port = server.server_address[1]
    instance = ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5")
    try:
        trusting = CommitmentRequester(
            "MWLBROKER", "ARCHIVE", "127.0.0.1", port, timeout=5, same_association_wait=0,
            tls_args=client_args(client_tls(pki, pki.client), "storage_commitment.tls",
                                 "127.0.0.1"))
        assert trusting.request("1.2.3.99", [instance]).outcome == "delivered"
        doubting = CommitmentRequester(
            "MWLBROKER", "ARCHIVE", "127.0.0.1", port, timeout=5, same_association_wait=0,
            tls_args=client_args(client_tls(pki, pki.client, ca=pki.other_ca),
                                 "storage_commitment.tls", "127.0.0.1"))
        assert doubting.request("1.2.3.100", [instance]).outcome == "retry"
        assert asked == ["1.2.3.99"]
    finally:
        server.shutdown()


def _tls_option(section: str, tls: TlsSettings) -> str:
    return (f"{section}.tls={{enabled: true, cert_file: {tls.cert_file}, key_file: "
            f"{tls.key_file}, ca_file: {tls.ca_file}, require_client_cert: true}}")


def test_serve_and_send_command_over_tls(pki: Pki, tmp_path: Path) -> None:
    """The real ``serve`` (on uvloop) and ``send`` with and without a client certificate."""
    served = BrokerProcess(tmp_path, (_tls_option("mllp", listener_tls(pki)),))
    served.start()
    try:
        message = tmp_path / "order.hl7"
        message.write_bytes(order(9).encode())
        common = [str(BIN / "mwl-broker"), "send", "-p", str(served.port), "-t", "5", "-q",
                  "--tls-ca", str(pki.ca)]
        done = subprocess.run([*common, "--tls-cert", str(pki.client.cert), "--tls-key",
                               str(pki.client.key), str(message)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "AA (MSA-2 MSG00000009)" in done.stdout
        refused = subprocess.run([*common, str(message)], capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 3 and "no acknowledgement" in refused.stderr
    finally:
        assert served.stop() == 0
    log = served.log_text()
    assert "event=mllp_listening" in log and "tls=True" in log
    assert "client_cert=modality" in log
    assert 'reason="peer did not return a certificate"' in log
    assert str(pki.server.key.read_text().splitlines()[1]) not in log


def _broken(pki: Pki, folder: Path, case: str) -> tuple[TlsSettings, list[str]]:
    tls = listener_tls(pki)
    if case == "missing key":
        tls.key_file = str(folder / "nowhere.key")
        return tls, ["mllp.tls.key_file", tls.key_file, "cannot be read"]
    if case == "not a certificate":
        tls.cert_file = str(pki.server.key)
        return tls, ["mllp.tls.cert_file", tls.cert_file, "not a PEM certificate"]
    if case == "key of another certificate":
        tls.key_file = str(pki.client.key)
        return tls, ["mllp.tls.cert_file", "mllp.tls.key_file", tls.key_file, "together"]
    tls.ca_file = ""
    return tls, ["mllp.tls.require_client_cert needs mllp.tls.ca_file"]


@pytest.mark.parametrize("case", ["missing key", "not a certificate",
                                  "key of another certificate", "client certs without a CA"])
def test_unusable_certificate_files_stop_the_start(tmp_path: Path, pki: Pki, case: str) -> None:
    settings = make_settings(tmp_path)
    settings.mllp.tls, expected = _broken(pki, tmp_path, case)
    with pytest.raises(ConfigError) as caught:
        Broker(settings)
    for fragment in expected:
        assert fragment in str(caught.value)


def test_serve_names_the_unreadable_file(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.pem"
    done = subprocess.run(
        [str(BIN / "mwl-broker"), "serve", "-o", f"database.path={tmp_path / 'b.sqlite'}",
         "-o", "admin.enabled=false", "-o",
         f"dicom.tls={{enabled: true, cert_file: {missing}, key_file: {pki.server.key}}}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"dicom.tls.cert_file {missing}: cannot be read" in done.stderr
    assert "Traceback" not in done.stderr
