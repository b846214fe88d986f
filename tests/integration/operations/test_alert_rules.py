"""The Prometheus alert rules (conf/prometheus/alerts.yml): promtool accepts them and their
unit tests pass (a case firing and one not for every alert), each alert tells the operator
what to do, and a real broker's /metrics has every metric they read, with the right values.

promtool comes from the Debian package ``prometheus`` (scripts/install-system-deps.sh). Without
it these tests are skipped on a workstation and fail under CI (CI=true)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from broker.app import Broker
from broker.config import DestinationSettings, TlsSettings
from broker.metrics import LATE_STEP_MINUTES
from tests.support.broker import (
    ROOT,
    free_port,
    make_settings,
    mappings_with_orc18_station,
    running,
)
from tests.support.certs import make_pki
from tests.support.mllp import msa, send
from tests.support.mpps import perform
from tests.support.ris import Ris
from tests.support.samples import order

RULES = ROOT / "conf" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "conf" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bmwl_[a-z0-9_]+")


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool"
                                         if Path("/usr/bin/promtool").exists() else None)
    if found:
        return found
    message = "promtool is missing: bash scripts/install-system-deps.sh (Debian: prometheus)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def referenced_metrics() -> set[str]:
    return {name for rule in rules() for name in METRIC.findall(rule["expr"])}


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                            text=True, timeout=60, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_explained_tested_and_documented() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in test.get("alert_rule_test", []):
            cases.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    docs = OPERATIONS.read_text()
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule.get("for"), f"{name}: no for: (it would flap)"
        assert {"summary", "description"} <= set(rule["annotations"]), name
        description = rule["annotations"]["description"]
        assert re.search(r"mwl-broker [a-z]+|console|/health|systemctl", description), name
        assert cases.get(name) == {True, False}, f"{name}: needs a firing and a quiet case"
        assert name in docs, f"{name} is not in docs/operations.md"
    for metric in referenced_metrics():
        assert metric in docs, f"{metric} is not in docs/operations.md"


# -- a real broker ---------------------------------------------------------------------------
def minutes_ago(minutes: float) -> str:
    """An HL7 start time (YYYYMMDDHHMM, local time) this many minutes before now."""
    return time.strftime("%Y%m%d%H%M", time.localtime(time.time() - minutes * 60))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris(mode="AE").start()  # refuses every message: dead letters
    yield r
    await r.stop()


@pytest.fixture
async def broker(tmp_path: Path, ris: Ris) -> AsyncIterator[Broker]:
    pki = make_pki(tmp_path / "pki")
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    client = TlsSettings(enabled=True, cert_file=str(pki.client.cert),
                         key_file=str(pki.client.key), ca_file=str(pki.ca))
    settings.outbound.destinations = [
        DestinationSettings("ris", "127.0.0.1", ris.port, 1.0),
        DestinationSettings("secure-ris", "127.0.0.1", free_port(), 1.0, tls=client)]  # closed
    settings.outbound.backoff_base = 0.05
    settings.outbound.backoff_max = 0.2
    settings.outbound.poll = 0.05
    async with running(settings) as b:
        yield b


async def scrape(broker: Broker) -> str:
    assert broker.admin is not None
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{broker.admin.bound_port}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_a_running_broker_has_every_metric_the_rules_read(broker: Broker) -> None:
    before = time.time()
    acks = await send(broker.mllp.bound_port,
                      order(1, start=minutes_ago(90), station="CT01").encode(),
                      order(2, start=minutes_ago(90), station="CT01").encode())
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    after = time.time()
    await asyncio.to_thread(perform, broker, None)  # order 1 started: its MPPS came

    deadline = time.monotonic() + 20
    while True:
        values = samples(text := await scrape(broker))
        if values.get(("mwl_outbox_destination_dead_letters", (("destination", "ris"),))):
            break
        assert time.monotonic() < deadline, "no dead letter for the refusing RIS"
        await asyncio.sleep(0.1)

    names = {name for name, _ in values}
    assert referenced_metrics() - names == set()
    for name in referenced_metrics():  # and each is described
        assert f"# HELP {name} " in text, name

    def value(metric: str, /, **labels: str) -> float:
        return values[(metric, tuple(sorted(labels.items())))]

    assert value("mwl_outbox_destination_dead_letters", destination="ris") == 1
    assert value("mwl_outbox_destination_depth", destination="ris") == 0
    assert value("mwl_outbox_destination_depth", destination="secure-ris") == 1  # unreachable
    assert value("mwl_outbox_destination_oldest_age_seconds", destination="secure-ris") > 0
    assert value("mwl_outbox_destination_dead_letters", destination="secure-ris") == 0
    assert value("mwl_outbox_dead_letters") == 1 and value("mwl_outbox_depth") == 1  # totals
    # order 2 is still SCHEDULED 90 minutes after its start; order 1 has its MPPS
    assert {m: value("mwl_steps_not_started", after_minutes=str(m))
            for m in LATE_STEP_MINUTES} == {15: 1, 30: 1, 60: 1, 120: 0, 240: 0}
    last = value("mwl_hl7_last_message_timestamp_seconds", application="RIS", facility="HOSP")
    assert before <= last <= after + 1
    assert value("mwl_storage_commitments_timed_out") == 0
    assert value("mwl_completions_overdue") == 0
    assert {n: value("mwl_listener_up", listener=n) for n in ("mllp", "dicom", "admin")} == {
        "mllp": 1, "dicom": 1, "admin": 1}
    assert value("mwl_store_writer_up") == 1
    assert value("mwl_store_writer_commits_total") >= 3
    assert value("mwl_store_writer_queued_jobs") >= 0
    assert 0 <= value("mwl_store_writer_busy_seconds") < 5
    cert = broker.settings.outbound.destinations[1].tls.cert_file
    expiry = x509.load_pem_x509_certificate(Path(cert).read_bytes()).not_valid_after_utc
    assert value("mwl_tls_certificate_expiry_timestamp_seconds", kind="client",
                 name="secure-ris", file=cert) == expiry.timestamp()

    await asyncio.to_thread(broker.dicom.stop)
    values = samples(await scrape(broker))
    assert value("mwl_listener_up", listener="dicom") == 0
    assert value("mwl_listener_up", listener="mllp") == 1


async def test_a_restarted_broker_remembers_the_senders(tmp_path: Path) -> None:
    """A sender seen before the restart has its series from the first scrape on: the silence
    alert keeps watching it."""
    settings = make_settings(tmp_path)
    first = Broker(settings)
    await first.start()
    try:
        acks = await send(first.mllp.bound_port,
                          order(1, sending_application="LAB", sending_facility="EAST").encode())
        assert msa(acks[0])[1] == "AA"
        sent = time.time()
    finally:
        await first.stop()
    second = Broker(settings)
    await second.start()
    try:
        values = samples(await scrape(second))
        last = values[("mwl_hl7_last_message_timestamp_seconds",
                       (("application", "LAB"), ("facility", "EAST")))]
        assert sent - 10 < last <= sent
    finally:
        await second.stop()
