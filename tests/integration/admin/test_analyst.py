"""The analyst's tools over a real broker: DCMTK findscu queries as CT01, then the query log,
the preview, the explanation of a step hidden for each reason, the timeline and replays
(REST, console and CLI)."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom.dataset import Dataset

from broker.app import Broker
from broker.config import CallingAeSettings, DestinationSettings
from tests.support.broker import BIN, make_settings, mappings_with_orc18_station, running
from tests.support.dicom_peers import dump_to_dicom, findscu
from tests.support.mllp import msa, send
from tests.support.mpps import mpps
from tests.support.ris import Ris
from tests.support.samples import order

pytestmark = pytest.mark.peers


def today() -> str:
    return datetime.date.today().strftime("%Y%m%d")


def tomorrow() -> str:
    return (datetime.date.today() + datetime.timedelta(days=1)).strftime("%Y%m%d")


CT01_QUERY = """(0008,0005) CS [ISO_IR 100]
(0008,0050) SH []
(0010,0010) PN []
(0010,0020) LO []
(0020,000d) UI []
(0040,0100) SQ
  (fffe,e000) na
    (0008,0060) CS [CT]
    (0040,0001) AE [CT01]
    (0040,0002) DA [{date}]
    (0040,0003) TM []
    (0040,0009) SH []
    (0040,0020) CS []
  (fffe,e00d) na
(fffe,e0dd) na
(0040,1001) SH []
"""


class Http:
    def __init__(self, broker: Broker) -> None:
        assert broker.admin is not None
        self.base = f"http://127.0.0.1:{broker.admin.bound_port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.session.get(self.base + path, allow_redirects=False) as r:
            text = await r.text()
            assert r.status == status, (path, text)
            return json.loads(text) if r.content_type == "application/json" else text

    async def post(self, path: str, data: Any, status: int = 200) -> Any:
        async with self.session.post(self.base + path, json=data) as r:
            text = await r.text()
            assert r.status == status, (path, text)
            return json.loads(text)

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


@pytest.fixture
async def broker(tmp_path: Path, ris: Ris) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 2.0)]
    settings.outbound.poll = 0.05
    # CT01 is configured for Latin-1 answers: a name it cannot hold is a note of explain
    settings.dicom.calling_aes = [CallingAeSettings("CT01", charset="ISO_IR 100")]
    async with running(settings) as b:
        yield b


@pytest.fixture
async def http(broker: Broker) -> AsyncIterator[Http]:
    client = Http(broker)
    yield client
    await client.close()


async def post(broker: Broker, *messages: bytes) -> list[str]:
    return [msa(a)[1] for a in await send(broker.mllp.bound_port, *messages)]


def start_mpps(broker: Broker, accession: str, study_uid: str, sps_id: str) -> None:
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore

    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", broker.dicom.bound_port, ae_title="MWLBROKER")
    assert assoc.is_established
    ds = mpps(study_uid=study_uid, sps_id=sps_id, accession=accession)
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())
    assoc.release()
    assert status.Status == 0


async def scenario(broker: Broker, tmp_path: Path) -> list[Any]:
    """Orders for CT01 today and one hidden for each reason; then findscu as CT01."""
    t, d = today(), tomorrow()
    orders = [
        order(1, station="CT01", start=f"{t}0930", patient_name="PETROV^ИВАН"),
        order(2, station="CT02", start=f"{t}0930"),                 # another station
        order(3, station="CT01", start=f"{d}0930"),                 # tomorrow
        order(4, station="CT01", start=f"{t}1000", modality="MR"),  # another modality
        order(5, station="CT01", start=f"{t}1030"),                 # cancelled below
        order(6, station="CT01", start=f"{t}1100"),                 # started below
        order(7, station="CT01", start=f"{t}1130", patient_id="OLD7", issuer="HOSP"),
        order(8, station="CT01", start=f"{t}1200", study_uid=None, placer="PLC8"),
    ]
    assert await post(broker, *(o.encode() for o in orders)) == ["AA"] * len(orders)
    cancel = order(5, control_id="CA5", order_control="CA", order_status="CA",
                   station="CT01", start=f"{t}1030")
    merge = ("MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A40^ADT_A39|A40-7|P|2.5.1"
             "\rPID|||NEW7^^^HOSP||SMITH^ANN\rMRG|OLD7^^^HOSP\r")
    assert await post(broker, cancel.encode(), merge.encode()) == ["AA", "AA"]
    await asyncio.to_thread(start_mpps, broker, "A0000006", orders[5].study_uid or "",
                            "SPS0000006")
    query = dump_to_dicom("", tmp_path / "ct01.dcm", CT01_QUERY.format(date=t))
    responses, _ = await asyncio.to_thread(findscu, broker.dicom.bound_port, "MWLBROKER",
                                           query, tmp_path / "rsp", calling="CT01")
    return responses


async def wait_for_query(http: Http, station: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = (await http.get(f"/api/queries?station={station}"))["items"]
        return bool(found)
    deadline = asyncio.get_running_loop().time() + 15
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the query was not logged"
        await asyncio.sleep(0.2)
    return found[0]


async def test_findscu_query_is_logged_previewed_and_explained(
        broker: Broker, http: Http, tmp_path: Path) -> None:
    responses = await scenario(broker, tmp_path)
    accessions = sorted(str(r.AccessionNumber) for r in responses)
    # today, CT01, CT, still to be done (7's patient merged: the step is still there)
    assert accessions == ["A0000001", "A0000007", "A0000008"]

    # the query log: who asked, from where, with which keys, what it found
    logged = await wait_for_query(http, "CT01")
    assert logged["calling_ae"] == "CT01" and logged["called_ae"] == "MWLBROKER"
    assert logged["peer"].startswith("127.0.0.1:")
    assert logged["keys"] == {"Modality": "CT", "ScheduledStationAETitle": "CT01",
                              "ScheduledProcedureStepStartDate": today()}
    assert (logged["matches"], logged["outcome"], logged["status"]) == (3, "done", "0000")
    entry = await http.get(f"/api/queries/{logged['id']}")
    assert entry["identifier"]["00400100"]["Value"][0]["00400001"]["Value"] == ["CT01"]
    assert len(entry["step_ids"]) == 3
    stations = await http.get("/api/stations")
    assert stations["CT01"]["matches"] == 3

    # preview: the same answers, from the same matching code, now
    preview = await http.get("/api/preview?station=CT01")
    assert sorted(i["AccessionNumber"] for i in preview["items"]) == accessions
    assert preview["source"]["id"] == logged["id"]
    # the answers as CT01 gets them: Latin-1, the alphabetic group only
    names = {a["00080050"]["Value"][0]: a["00100010"]["Value"][0]["Alphabetic"]
             for a in preview["answers"]}
    assert names["A0000001"] == "PETROV^????"
    # an edited query: tomorrow instead of today
    edited = await http.post("/api/preview", {"station": "CT01", "keys": {
        "ScheduledProcedureStepStartDate": tomorrow()}})
    assert [i["AccessionNumber"] for i in edited["items"]] == ["A0000003"]

    # explain: a step hidden for each reason, in words
    async def why(accession: str, station: str = "CT01") -> dict[str, Any]:
        data = await http.get(f"/api/procedures/{accession}/explain?station={station}")
        (only,) = data["stations"]
        (step,) = only["steps"]
        return dict(step)

    returned = await why("A0000001")
    assert returned["returned"] and "ISO_IR 100 cannot hold" in returned["notes"][0]
    station = await why("A0000002")
    assert not station["returned"]
    assert [e["keyword"] for e in station["exclusions"]] == ["ScheduledStationAETitle"]
    assert "station CT02" in station["exclusions"][0]["reason"]
    date = await why("A0000003")
    assert [e["keyword"] for e in date["exclusions"]] == ["ScheduledProcedureStepStartDate"]
    assert "outside the query's date" in date["summary"]
    modality = await why("A0000004")
    assert [(e["keyword"], e["stored"], e["asked"]) for e in modality["exclusions"]] == [
        ("Modality", "MR", "CT")]
    cancelled = await why("A0000005")
    assert [e["keyword"] for e in cancelled["exclusions"]] == ["status"]
    assert "cancelled" in cancelled["summary"] and cancelled["status"] == "CANCELED"
    started = await why("A0000006")
    assert started["status"] == "STARTED" and "MPPS IN PROGRESS" in started["summary"]
    # a query by the merged patient ID (an edited CT01 query)
    merged = await http.post("/api/procedures/A0000007/explain", {
        "station": "CT01", "keys": {"PatientID": "OLD7"}})
    (step,) = merged["stations"][0]["steps"]
    assert [e["keyword"] for e in step["exclusions"]] == ["PatientID"]
    assert "merged into NEW7" in step["summary"]
    # no station given: the stations the step is scheduled on (CT02 has never asked)
    data = await http.get("/api/procedures/A0000002/explain")
    assert [s["station"] for s in data["stations"]] == ["CT02"]
    assert "no query from CT02" in data["stations"][0]["summary"]
    # an order that never arrived
    missing = await http.get("/api/procedures/NOPE/explain", status=404)
    assert "no order" in missing["summary"]

    # the console shows the same
    page = await http.get("/procedures/A0000004/explain?station=CT01")
    assert "the modality is MR, the query asked for CT" in page
    worklist = await http.get("/worklist")
    assert 'class="last-query"' in worklist and "3 item(s)" in worklist


async def test_timeline_of_an_order(broker: Broker, http: Http, tmp_path: Path) -> None:
    await scenario(broker, tmp_path)
    await wait_for_query(http, "CT01")
    data = await http.get("/api/procedures/A0000006/timeline")
    (procedure,) = data["procedures"]
    kinds = [e["kind"] for e in procedure["events"]]
    assert kinds[0] == "hl7_in" and "step" in kinds and "mpps" in kinds
    times = [e["at"] for e in procedure["events"]]
    assert times == sorted(times)
    first = await http.get("/api/procedures/A0000001/timeline")
    queries = [e for e in first["procedures"][0]["events"] if e["kind"] == "query"]
    assert len(queries) == 1 and queries[0]["summary"].startswith("CT01 queried")
    await http.get("/api/procedures/NOPE/timeline", status=404)
    page = await http.get("/procedures/A0000006/timeline")
    assert "MPPS IN PROGRESS from CT01" in page

    # the status message to the RIS, queued then acknowledged
    async def delivered() -> list[str]:
        data = await http.get("/api/procedures/A0000006/timeline")
        return [e["summary"] for e in data["procedures"][0]["events"]
                if e["kind"] == "hl7_out"]
    deadline = asyncio.get_running_loop().time() + 15
    while not any("delivered: AA" in s for s in await delivered()):
        assert asyncio.get_running_loop().time() < deadline, await delivered()
        await asyncio.sleep(0.1)
    out = await delivered()
    assert out[0].endswith("to ris queued") and out[1].endswith("to ris delivered: AA")


async def test_replay_as_it_was_and_edited(broker: Broker, http: Http) -> None:
    t = today()
    # an order without its PID segment: refused, nothing stored
    xo = order(20, with_pid=False, station="CT01", start=f"{t}0800")
    assert await post(broker, xo.encode()) in (["AE"], ["AR"])
    log = (await http.get("/api/messages?q=" + xo.control_id))["items"]
    (original,) = log
    # replayed edited into a new order: applied, logged as a new message linked to it
    text = order(20, station="CT01", start=f"{t}0800").text().replace("\r", "\n")
    result = await http.post(f"/api/messages/{original['id']}/replay", {
        "reason": "RIS left out PID", "user": "ana", "message": text})
    assert result["outcome"] == "AA" and result["edited"] and result["id"] != original["id"]
    replayed = await http.get(f"/api/messages/{result['id']}")
    assert replayed["replay_of"] == original["id"]
    assert replayed["replayed_by"].startswith("ana from 127.0.0.1")
    assert replayed["replay_reason"] == "RIS left out PID"
    assert (await http.get(f"/api/messages/{original['id']}"))["outcome"] == original[
        "outcome"]
    worklist = await http.get(f"/api/worklist?date={t}&station=CT01")
    assert [i["accession"] for i in worklist["items"]] == ["A0000020"]

    # replaying an applied message as it was applies it again (the duplicate rule is the
    # RIS's resend rule, not an operator's replay) and keeps the one accepted original
    nw = order(21, station="CT01", start=f"{t}0815")
    assert await post(broker, nw.encode()) == ["AA"]
    (first,) = (await http.get("/api/messages?q=" + nw.control_id))["items"]
    again = await http.post(f"/api/messages/{first['id']}/replay",
                            {"reason": "steps deleted by hand", "user": "ana"})
    assert again["outcome"] == "AA" and not again["duplicate"] and not again["edited"]
    # the RIS resending the original is still answered as a duplicate of the original
    ack = (await send(broker.mllp.bound_port, nw.encode()))[0]
    assert msa(ack)[1] == "AA"
    rows = (await http.get("/api/messages?q=" + nw.control_id))["items"]
    assert [r["duplicate_of"] for r in rows] == [first["id"], None, None]
    # a replay needs a reason and a name
    await http.post(f"/api/messages/{first['id']}/replay", {"user": "ana"}, status=400)
    await http.post("/api/messages/999999/replay", {"user": "a", "reason": "r"}, status=404)
    timeline = await http.get("/api/procedures/A0000020/timeline")
    summaries = [e["summary"] for e in timeline["procedures"][0]["events"]
                 if e["kind"] == "hl7_in"]
    assert any(s.startswith("replay by ana") for s in summaries)


async def test_cli_queries_preview_explain_trace(broker: Broker, http: Http,
                                                 tmp_path: Path) -> None:
    await scenario(broker, tmp_path)
    await wait_for_query(http, "CT01")
    db = ["-o", f"database.path={broker.settings.database.path}"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "mwl-broker"), *args, *db], capture_output=True, text=True,
                              timeout=60)

    out = await asyncio.to_thread(cli, "queries", "--station", "CT01")
    assert out.returncode == 0 and "CT01" in out.stdout and "matches=3" in out.stdout
    out = await asyncio.to_thread(cli, "query", "--as", "CT01")
    assert out.returncode == 0, out.stderr
    assert "A0000001" in out.stdout and "3 item(s)" in out.stdout
    out = await asyncio.to_thread(cli, "explain", "A0000004", "--station", "CT01")
    assert out.returncode == 0, out.stderr
    assert "the modality is MR, the query asked for CT" in out.stdout
    out = await asyncio.to_thread(cli, "trace", "A0000006")
    assert out.returncode == 0 and "MPPS IN PROGRESS" in out.stdout


def refused_find(port: int) -> int:
    """A stock pynetdicom SCU whose query is over the wildcard cap: C000."""
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

    ae = AE(ae_title="MR1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    ds = Dataset()
    ds.PatientName = "*?" * 20
    statuses = [s.Status for s, _ in assoc.send_c_find(ds, ModalityWorklistInformationFind)]
    assoc.release()
    return int(statuses[-1])


async def test_a_refused_query_is_logged_with_its_error(broker: Broker, http: Http) -> None:
    assert await asyncio.to_thread(refused_find, broker.dicom.bound_port) == 0xC000
    logged = await wait_for_query(http, "MR1")
    assert (logged["outcome"], logged["status"], logged["matches"]) == ("refused", "C000", 0)
    assert "wildcards" in logged["error"]
    entry = await http.get(f"/api/queries/{logged['id']}")
    assert entry["identifier"]["00100010"]["Value"][0]["Alphabetic"] == "*?" * 20
    refused = await http.get("/api/queries?outcome=refused&since=1h")
    assert [q["id"] for q in refused["items"]] == [logged["id"]]
    page = await http.get("/queries?station=MR1")
    assert "MR1" in page and "refused" in page
