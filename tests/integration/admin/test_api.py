"""The admin server's REST API, metrics, probes and access rules against a real broker:
orders over MLLP, MPPS over DICOM, a real RIS listener, HTTP on loopback."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.app import Broker
from broker.config import ConfigError, DestinationSettings
from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.hl7.mllp import frame
from tests.support.broker import BIN, make_settings, mappings_with_orc18_station, running
from tests.support.mllp import msa, send
from tests.support.mpps import perform
from tests.support.ris import Ris
from tests.support.samples import order


def today() -> str:
    """Today's date as the broker sees it now (not at import: a run may cross midnight)."""
    return datetime.date.today().strftime("%Y%m%d")
STUDY = "1.2.826.0.1.3680043.8.498.2"  # order(1)'s Study Instance UID


def todays_order(n: int) -> bytes:
    return order(n, start=f"{today()}0930", station="CT01").encode()


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


def linked_settings(tmp_path: Path, ris: Ris) -> Any:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 1.0)]
    settings.outbound.backoff_base = 0.05
    settings.outbound.backoff_max = 0.2
    settings.outbound.poll = 0.05
    return settings


@pytest.fixture
async def broker(tmp_path: Path, ris: Ris) -> AsyncIterator[Broker]:
    async with running(linked_settings(tmp_path, ris)) as b:
        yield b


class Admin:
    """An HTTP client of one broker's admin server."""

    def __init__(self, broker: Broker, token: str = "") -> None:
        assert broker.admin is not None
        self.base = f"http://127.0.0.1:{broker.admin.bound_port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(  # unsafe: keep cookies of an IP address
            headers=headers, timeout=aiohttp.ClientTimeout(total=15),
            cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        async with self.session.get(self.base + path, allow_redirects=False,
                                    **kwargs) as response:
            assert response.status == status, (path, await response.text())
            if response.content_type == "application/json":
                return await response.json()
            return await response.text()

    async def post(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        async with self.session.post(self.base + path, allow_redirects=False,
                                     **kwargs) as response:
            assert response.status == status, (path, await response.text())
            return await response.json()

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def admin(broker: Broker) -> AsyncIterator[Admin]:
    client = Admin(broker)
    yield client
    await client.close()


async def until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return result


async def test_worklist_history_and_message_log(broker: Broker, admin: Admin) -> None:
    acks = await send(broker.mllp.bound_port, todays_order(1), todays_order(2))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]

    day = await admin.get("/api/worklist?date=today")
    assert day["filter"]["date"] == today() and day["count"] == 2
    first = day["items"][0]
    assert (first["patient_id"], first["accession"], first["stations"], first["status"],
            first["start_time"]) == ("P0000001", "A0000001", ["CT01"], "SCHEDULED", "0930")
    assert day["by_station"] == {"CT01": 2}
    assert [i["accession"] for i in (await admin.get(
        "/api/worklist?q=number2&station=CT01"))["items"]] == ["A0000002"]
    assert (await admin.get("/api/worklist?status=COMPLETED"))["count"] == 0
    assert (await admin.get("/api/worklist?date=2001-01-01"))["count"] == 0
    bad = await admin.get("/api/worklist?date=31/12/2026", status=400)
    assert "must be YYYYMMDD" in bad["error"]

    history = await admin.get("/api/procedures/A0000001")
    (procedure,) = history["procedures"]
    assert procedure["study_uid"] == STUDY
    assert [m["control_id"] for m in procedure["messages_in"]] == ["MSG00000001"]
    assert [(s["sps_id"], s["status"]) for s in procedure["steps"]] == [
        ("SPS0000001", "SCHEDULED")]
    assert procedure["mpps"] == [] and procedure["messages_out"] == []
    assert (await admin.get(f"/api/procedures/{STUDY}"))["procedures"][0]["accession"] == \
        "A0000001"
    await admin.get("/api/procedures/NOPE", status=404)

    found = await admin.get("/api/messages?q=MSG00000002")
    (logged,) = found["items"]
    assert (logged["accession"], logged["outcome"]) == ("A0000002", "AA")
    assert [m["control_id"] for m in (await admin.get("/api/messages?q=P0000001"))["items"]] \
        == ["MSG00000001"]
    full = await admin.get(f"/api/messages/{logged['id']}")
    assert full["raw"].startswith("MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|")
    assert "ORM^O01" in full["raw"] and "MSA|AA|MSG00000002" in full["ack"]
    await admin.get("/api/messages/999999", status=404)


async def test_dead_letter_retried_and_purged(broker: Broker, admin: Admin, ris: Ris) -> None:
    await send(broker.mllp.bound_port, todays_order(1))
    ris.mode = "AE"
    await asyncio.to_thread(perform, broker, None)
    dead = await until(lambda: _items(admin, "/api/outbox?state=dead"))
    (entry,) = dead
    assert "answered AE" in entry["last_error"] and entry["order_key"] == STUDY
    detail = await admin.get(f"/api/outbox/{entry['id']}")
    assert "ORC|SC|" in detail["payload"] and "MSA|AE" in detail["ack"]
    history = (await admin.get("/api/procedures/A0000001"))["procedures"][0]
    assert [m["status"] for m in history["mpps"]] == ["IN PROGRESS"]
    assert [o["state"] for o in history["messages_out"]] == ["dead"]

    ris.mode = "AA"
    assert await admin.post(f"/api/outbox/{entry['id']}/retry") == {"requeued": 1}
    await until(lambda: _items(admin, "/api/outbox?state=delivered"))
    assert len(ris.received) == 2  # refused once, then delivered
    refused = await admin.post(f"/api/outbox/{entry['id']}/retry", status=409)
    assert "already delivered" in refused["error"]
    assert await admin.post("/api/outbox/retry") == {"requeued": 0}

    wrong = await admin.post("/api/outbox/purge", status=400,
                             json={"state": "pending", "older_than_days": 0})
    assert "must be one of delivered, dead" in wrong["error"]
    assert await admin.post("/api/outbox/purge",
                            json={"state": "delivered", "older_than_days": 0}) == {"purged": 1}
    assert (await admin.get("/api/outbox"))["items"] == []


async def _items(admin: Admin, path: str) -> list[Any]:
    items: list[Any] = (await admin.get(path))["items"]
    return items


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def worklist_query(port: int) -> int:
    with WorklistClient("127.0.0.1", port, calling="CT01", timeout=10) as client:
        return len(client.find(build_query(query_keys(station="CT01", date=today()))).matches)


async def test_metrics_move_when_traffic_flows(broker: Broker, admin: Admin, ris: Ris) -> None:
    before = metric_values(await admin.get("/metrics"))
    assert before[("mwl_outbox_depth", ())] == 0
    assert before[("mwl_dicom_associations_active", ())] == 0

    acks = await send(broker.mllp.bound_port, todays_order(1), b"MSH|^~\\&|garbage")
    assert [msa(a)[1] for a in acks] == ["AA", "AR"]
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.mllp.bound_port)
    writer.write(b"noise outside any frame" + frame(todays_order(2)))  # garbage, then AA
    assert b"MSA|AA" in await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 10)
    writer.close()
    assert await asyncio.to_thread(worklist_query, broker.dicom.bound_port) == 2
    ris.mode = "AE"
    await asyncio.to_thread(perform, broker, None)
    await until(lambda: _items(admin, "/api/outbox?state=dead"))

    after = metric_values(await admin.get("/metrics"))

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("mwl_hl7_messages_in_total", type="ORM^O01", outcome="AA") == 2
    assert grew("mwl_hl7_messages_in_total", type="unknown", outcome="AR") == 1
    assert grew("mwl_hl7_ack_seconds_count") == 3
    assert grew("mwl_rejections_total", listener="mllp", reason="garbage") == 1
    assert grew("mwl_hl7_ack_seconds_sum") > 0
    assert grew("mwl_cfind_total", outcome="done") == 1
    assert grew("mwl_cfind_seconds_count") == 1
    assert grew("mwl_mpps_total", status="IN PROGRESS") == 1
    assert grew("mwl_hl7_messages_out_total", type="ORM^O01", outcome="dead") == 1
    assert after[("mwl_outbox_dead_letters", ())] == 1
    assert after[("mwl_outbox_depth", ())] == 0


async def test_readyz_follows_the_listeners(broker: Broker, admin: Admin) -> None:
    assert await admin.get("/healthz") == {"alive": True}
    ready = await admin.get("/readyz")
    assert ready == {"ready": True, "checks": {"mllp": True, "dicom": True, "outbox": True,
                                               "writer": True, "database": True}}
    health = await admin.get("/api/health")
    assert {x["name"]: x["up"] for x in health["listeners"]}["dicom"] is True
    await asyncio.to_thread(broker.dicom.stop)
    down = await admin.get("/readyz", status=503)
    assert down["ready"] is False and down["checks"]["dicom"] is False
    assert (await admin.get("/healthz")) == {"alive": True}


async def test_cluster_shows_this_broker_and_its_lanes(broker: Broker, admin: Admin) -> None:
    view = await admin.get("/api/cluster")
    assert view["node"] == broker.node
    assert [(n["node_id"], n["alive"]) for n in view["nodes"]] == [(broker.node, True)]
    assert view["nodes"][0]["mllp_port"] == broker.mllp.bound_port
    metrics = await admin.get("/metrics")
    assert "mwl_cluster_nodes_alive 1.0" in metrics


async def test_mappings_in_force_and_reload_result(broker: Broker, admin: Admin) -> None:
    data = await admin.get("/api/mappings?check=1")
    assert "ORM^O01" in data["summary"]["messages"]
    assert data["folder_check"] == {"valid": True, "errors": []}
    assert data["last_reload"] == {"at": None, "ok": None, "errors": []}
    orders = Path(data["directory"]) / "orders.yaml"
    orders.write_text(orders.read_text().replace("transform: date", "transform: dat", 1))
    refused = await admin.post("/api/mappings/reload", status=422)
    assert refused["reloaded"] is False and refused["last_reload"]["ok"] is False
    assert any("dat" in e for e in refused["last_reload"]["errors"])
    assert "ORM^O01" in refused["summary"]["messages"]  # the running set is kept


async def test_token_guards_every_request(tmp_path: Path, ris: Ris) -> None:
    settings = linked_settings(tmp_path, ris)
    settings.admin.token = "s3cret-token"
    b = Broker(settings)
    await b.start()
    anonymous, wrong, right = Admin(b), Admin(b, "guess"), Admin(b, "s3cret-token")
    try:
        for path in ("/api/worklist", "/metrics", "/readyz"):
            refused = await anonymous.get(path, status=401)
            assert "Authorization: Bearer" in refused["error"]
            await wrong.get(path, status=401)
        await anonymous.post("/api/outbox/retry", status=401)
        assert (await right.get("/api/worklist"))["count"] == 0
        assert "mwl_hl7_ack_seconds" in await right.get("/metrics")
        await right.post("/api/outbox/retry")

        async with anonymous.session.get(anonymous.base + "/worklist?station=CT01",
                                         allow_redirects=False,
                                         headers={"Accept": "text/html"}) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/login?next=/worklist?station=CT01"
        assert "Admin token" in await anonymous.get("/login")
        async with anonymous.session.post(anonymous.base + "/login", allow_redirects=False,
                                          data={"token": "s3cret-token", "next": "/outbox"}
                                          ) as response:
            assert response.status == 303 and response.headers["Location"] == "/outbox"
        assert "Outbox" in await anonymous.get("/outbox")  # the session cookie now
        cross = await anonymous.post("/api/outbox/retry", status=403,
                                     headers={"Origin": "http://evil.example"})
        assert "cross-site" in cross["error"]
        counted = metric_values(await right.get("/metrics"))
        assert counted[("mwl_rejections_total", (("listener", "admin"),
                                                 ("reason", "unauthorized")))] >= 7
    finally:
        for client in (anonymous, wrong, right):
            await client.close()
        await b.stop()


async def test_loopback_without_token_refuses_foreign_host_names(admin: Admin) -> None:
    refused = await admin.get("/api/worklist", status=403, headers={"Host": "evil.example"})
    assert "not a loopback name" in refused["error"]
    assert (await admin.get("/api/worklist", headers={"Host": "localhost"}))["count"] == 0


def test_non_loopback_address_without_token_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "mwl-broker"), "serve", "-o", f"database.path={tmp_path / 'db.sqlite'}",
         "-o", "mllp.port=0", "-o", "dicom.port=0", "-o", "admin.host=0.0.0.0",
         "-o", "admin.port=0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "admin.host '0.0.0.0' is not a loopback address" in out.stderr
    assert "admin.token" in out.stderr
    settings = make_settings(tmp_path)
    settings.admin.host = "0.0.0.0"
    with pytest.raises(ConfigError, match=r"needs admin\.token or admin\.token_file"):
        Broker(settings)
    settings.admin.token_file = str(tmp_path / "missing-token")
    with pytest.raises(ConfigError, match="cannot be read"):
        Broker(settings)


async def test_console_pages_render_escaped(broker: Broker, admin: Admin) -> None:
    evil = order(3, start=f"{today()}1100", station="CT01", patient_name="<b>EVIL</b>^X").encode()
    assert msa((await send(broker.mllp.bound_port, evil))[0])[1] == "AA"
    html_pages = {
        "/worklist": ["Worklist of", "&lt;b&gt;EVIL&lt;/b&gt;^X", "11:00"],
        "/procedures/A0000003": ["HL7 messages in", "MSG00000003", "SPS0000003"],
        "/messages?q=A0000003": ["MSG00000003", "ORM^O01"],
        "/mappings?check=1": ["the folder is valid", "ORM^O01"],
        "/health": ["mllp", "dicom", "writer", "database", "Brokers on this database",
                    f"{broker.node} (this one)", "Outbox lanes"],
        "/outbox?state=dead": ["the outbox is empty"],
    }
    for path, texts in html_pages.items():
        page = await admin.get(path)
        assert "<b>EVIL" not in page, path
        for text in texts:
            assert text in page, (path, text)
    logged = (await admin.get("/api/messages?q=MSG00000003"))["items"][0]
    page = await admin.get(f"/messages/{logged['id']}")
    assert "PID|||P0000003^^^HOSP||&lt;b&gt;EVIL" in page and "MSA|AA|MSG00000003" in page
    assert "must be YYYYMMDD" in await admin.get("/worklist?date=yesterday", status=400)
