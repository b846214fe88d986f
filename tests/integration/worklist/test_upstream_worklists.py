"""Upstream worklists against real peers: DCMTK wlmscpfs (and Orthanc's worklist plugin)
serving *.wl files, mirrored into a running broker that modalities query instead."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.peers import Orthanc, Wlmscpfs
from benchmarks.worklist_data import items, worklist_file
from broker.app import Broker
from broker.config import UpstreamQuerySettings, UpstreamWorklistSettings
from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.model.orders import OrderChange
from tests.support.broker import make_settings, running
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.mllp import msa, send
from tests.support.samples import order
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not Wlmscpfs.available(), reason="DCMTK wlmscpfs missing")
NAME = "ris-wl"
WAIT = 30.0


def today() -> str:
    return datetime.date.today().strftime("%Y%m%d")


def write(folder: Path, n: int, item: OrderChange) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()
    worklist_file(item).save_as(folder / f"item{n:04d}.wl", enforce_file_format=True)


def answers(port: int, called: str, **keys: str) -> dict[str, str]:
    """Accession number → SPS ID of the worklist answers (a pynetdicom SCU)."""
    with WorklistClient("127.0.0.1", port, called=called, calling="FINDSCU",
                        timeout=10) as client:
        result = client.find(build_query(query_keys(**keys)))
    assert result.status == 0, result
    return {str(ds.AccessionNumber): str(ds.ScheduledProcedureStepSequence[0]
                                         .ScheduledProcedureStepID)
            for ds in result.matches}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Wlmscpfs]:
    peer = Wlmscpfs(tmp_path / "wlmscpfs")
    (peer.items_folder).mkdir(parents=True)
    (peer.items_folder / "lockfile").touch()
    with peer:
        yield peer


def upstream_settings(name: str, ae_title: str, port: int) -> UpstreamWorklistSettings:
    return UpstreamWorklistSettings(name=name, ae_title=ae_title, port=port, interval=0.2,
                                    timeout=5.0, remove_after=2,
                                    query=UpstreamQuerySettings(days_before=1, days_after=1))


@pytest.fixture
async def broker(tmp_path: Path, upstream: Wlmscpfs) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.upstream_worklists = [upstream_settings(NAME, upstream.ae_title, upstream.port)]
    async with running(settings) as b:
        yield b


def gauge(broker: Broker, name: str, upstream: str = NAME) -> float | None:
    return broker.metrics.registry.get_sample_value(name, {"upstream": upstream})


async def broker_answers(broker: Broker, **keys: str) -> dict[str, str]:
    port = broker.dicom.bound_port
    assert port
    return await asyncio.to_thread(answers, port, broker.settings.dicom.ae_title, **keys)


async def scraped(broker: Broker, path: str) -> tuple[int, str]:
    assert broker.admin is not None
    url = f"http://127.0.0.1:{broker.admin.bound_port}{path}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.get(url) as response:
        return response.status, await response.text()


def metric(text: str, name: str, upstream: str = NAME) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("upstream") == upstream:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


async def test_items_propagate_outage_and_hl7_untouched(broker: Broker, upstream: Wlmscpfs,
                                                        tmp_path: Path) -> None:
    mllp = broker.mllp.bound_port
    assert mllp
    # HL7 orders: order(2) has the Study Instance UID of upstream item 2, order(50) none
    for n in (2, 50):
        ack = (await send(mllp, order(n, start=f"{today()}1000").encode()))[0]
        assert msa(ack)[1] == "AA", ack
    data = list(items(6))
    for n in range(4):
        write(upstream.items_folder, n, data[n])
    station = {"station": "CT01", "date": today()}
    await until(lambda: gauge(broker, "mwl_upstream_items") == 3, WAIT)
    mirrored = await broker_answers(broker, **station)
    upstream_answers = await asyncio.to_thread(answers, upstream.port, upstream.ae_title,
                                               **station)
    assert set(upstream_answers) == {f"A{n:08d}" for n in range(4)}
    skipped = f"A{2:08d}"  # held by HL7 order(2): the existing order wins
    assert mirrored == {k: v for k, v in upstream_answers.items() if k != skipped}
    assert broker.upstreams[0].last_outcome is not None
    assert [uid for uid, _ in broker.upstreams[0].last_outcome.skipped] == [
        data[2].procedure.study_uid]

    # DCMTK findscu through the broker: the same accession numbers and SPS IDs
    query = dump_to_dicom("", tmp_path / "q.dcm", text=(
        "(0008,0050) SH []\n(0010,0020) LO []\n(0040,0100) SQ (Sequence with undefined "
        "length #=1)\n(fffe,e000) na (Item with undefined length #=2)\n"
        "(0040,0001) AE [CT01]\n(0040,0009) SH []\n(fffe,e00d) na (ItemDelimitationItem)\n"
        "(fffe,e0dd) na (SequenceDelimitationItem)\n"))
    responses, _ = await asyncio.to_thread(findscu, broker.dicom.bound_port or 0,
                                           broker.settings.dicom.ae_title, query,
                                           tmp_path / "rsp")
    through_findscu = {str(r.AccessionNumber): str(r.ScheduledProcedureStepSequence[0]
                                                   .ScheduledProcedureStepID)
                       for r in responses}
    assert through_findscu == mirrored

    # changed, deleted and added upstream
    changed = data[0]
    changed.procedure.steps[0].attrs["ScheduledProcedureStepID"] = "SPSCHANGED"
    write(upstream.items_folder, 0, changed)
    (upstream.items_folder / "item0001.wl").unlink()
    write(upstream.items_folder, 4, data[4])

    async def settled() -> bool:
        got = await broker_answers(broker, **station)
        return got == {f"A{0:08d}": "SPSCHANGED", f"A{3:08d}": f"SPS{3:08d}",
                       f"A{4:08d}": f"SPS{4:08d}"}
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await settled():
        assert asyncio.get_running_loop().time() < deadline, await broker_answers(
            broker, **station)
        await asyncio.sleep(0.2)
    assert await asyncio.to_thread(answers, upstream.port, upstream.ae_title, **station) == \
        await broker_answers(broker, **station) | {skipped: f"SPS{2:08d}"}
    # the HL7 orders are as HL7 left them (order(2) kept its own accession number)
    for n in (2, 50):
        held = await _by_patient(broker, f"P{n:07d}")
        assert held == {f"A{n:07d}": f"SPS{n:07d}"}

    # the upstream goes away: the broker answers from its copy and says so in /metrics
    copy = await broker_answers(broker, **station)
    upstream.__exit__()
    await until(lambda: gauge(broker, "mwl_upstream_up") == 0, WAIT)
    assert await broker_answers(broker, **station) == copy
    status, text = await scraped(broker, "/metrics")
    assert status == 200 and metric(text, "mwl_upstream_up") == 0
    assert metric(text, "mwl_upstream_items") == 3
    status, _ = await scraped(broker, "/readyz")
    assert status == 200  # advisory: the worklist is still served
    row = next(r for r in broker.admin.service.health()  # type: ignore[union-attr]
               if r["name"] == f"upstream:{NAME}")
    assert row["up"] is False and row["detail"]["error"]

    # back again on the same port: polling resumes by itself
    again = Wlmscpfs(upstream.root)
    again.port = upstream.port
    with again:
        await until(lambda: gauge(broker, "mwl_upstream_up") == 1, WAIT)
        status, text = await scraped(broker, "/metrics")
        assert metric(text, "mwl_upstream_up") == 1
        assert metric(text, "mwl_upstream_last_success_timestamp_seconds") > 0
        assert await broker_answers(broker, **station) == copy
    upstream.proc = None  # already stopped; the fixture's exit has nothing left to do


async def _by_patient(broker: Broker, patient_id: str) -> dict[str, str]:
    port = broker.dicom.bound_port
    assert port

    def run() -> dict[str, str]:
        keys = query_keys([f"PatientID={patient_id}"])
        with WorklistClient("127.0.0.1", port, called=broker.settings.dicom.ae_title,
                            calling="FINDSCU", timeout=10) as client:
            result = client.find(build_query(keys))
        return {str(ds.AccessionNumber): str(ds.ScheduledProcedureStepSequence[0]
                                             .ScheduledProcedureStepID)
                for ds in result.matches}
    return await asyncio.to_thread(run)


@pytest.mark.skipif(not Orthanc.available(), reason="Orthanc or its worklist plugin missing")
async def test_two_upstreams_wlmscpfs_and_orthanc(tmp_path: Path, upstream: Wlmscpfs) -> None:
    """Two upstreams side by side, each mirrored as its own source."""
    data = list(items(8))
    for n in range(2):
        write(upstream.items_folder, n, data[n])
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for n in range(2, 4):
            write(orthanc.items_folder, n, data[n])
        settings = make_settings(tmp_path)
        from_orthanc_settings = upstream_settings("orthanc", orthanc.ae_title, orthanc.port)
        from_orthanc_settings.calling_ae = "MWLQUERY"  # an AE Orthanc knows
        settings.upstream_worklists = [
            upstream_settings(NAME, upstream.ae_title, upstream.port), from_orthanc_settings]
        broker = Broker(settings)
        await broker.start()
        try:
            try:
                await until(lambda: gauge(broker, "mwl_upstream_items") == 2
                            and gauge(broker, "mwl_upstream_items", "orthanc") == 2, WAIT)
            except AssertionError:
                raise AssertionError([u.last_error for u in broker.upstreams]) from None
            station = {"station": "CT01", "date": today()}
            from_orthanc = await asyncio.to_thread(answers, orthanc.port, orthanc.ae_title,
                                                   **station)
            assert set(from_orthanc) == {f"A{n:08d}" for n in (2, 3)}
            mirrored = await broker_answers(broker, **station)
            assert mirrored == {f"A{n:08d}": f"SPS{n:08d}" for n in range(4)}
            (orthanc.items_folder / "item0002.wl").unlink()
            await until(lambda: gauge(broker, "mwl_upstream_items", "orthanc") == 1, WAIT)
            assert gauge(broker, "mwl_upstream_items") == 2  # the other source untouched
        finally:
            await broker.stop()
