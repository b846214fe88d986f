"""UPS-RS subscriptions and the WebSocket event channel over a real broker: a web subscriber
(any AE title) gets every event report as DICOM JSON, whatever caused it (UPS-RS, a stock
pynetdicom claim, an MPPS, an HL7 cancel); reports queued while its socket was closed arrive
when it opens, oldest first; filtered and per-workitem subscriptions, unsubscribe and
suspend; a configured DIMSE subscriber still gets N-EVENT-REPORTs; retention."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    UnifiedProcedureStepEvent,
    UnifiedProcedureStepPush,
)

from broker.app import Broker
from broker.config import UpsSubscriberSettings
from tests.integration.admin.test_ups_rs import STATION, performed, workitem
from tests.support.broker import make_settings, mappings_with_orc18_station, running
from tests.support.db import Db
from tests.support.dicomweb import (
    FILTERED,
    GLOBAL,
    UpsRs,
    body,
    dataset,
    next_report,
    reports,
    silent,
)
from tests.support.mllp import msa, send
from tests.support.mpps import mpps
from tests.support.samples import order


def today() -> str:
    return datetime.date.today().strftime("%Y%m%d")


class Watcher:
    """A stock pynetdicom AE receiving N-EVENT-REPORTs (a configured DIMSE subscriber)."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, str]] = []
        ae = AE(ae_title="WATCHER")
        ae.add_supported_context(UnifiedProcedureStepEvent, scu_role=True, scp_role=True)

        def on_report(ev: Any) -> tuple[int, None]:
            self.reports.append((int(ev.event_type), str(ev.request.AffectedSOPInstanceUID)))
            return 0, None
        server = ae.start_server(("127.0.0.1", 0), block=False,
                                 evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        assert server is not None
        self.server = server
        self.port = int(self.server.server_address[1])

    async def wait_for(self, uid: str, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while not any(r[1] == uid for r in self.reports):
            assert time.monotonic() < deadline, self.reports
            await asyncio.sleep(0.05)


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    w = Watcher()
    yield w
    w.server.shutdown()


@pytest.fixture
async def broker(tmp_path: Path, watcher: Watcher) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    settings.dicom.ups.subscribers = [UpsSubscriberSettings("WATCHER", "127.0.0.1",
                                                            watcher.port, 5.0)]
    settings.outbound.poll = 0.05
    settings.retention.interval = 0
    async with running(settings) as b:
        yield b


@pytest.fixture
async def web(broker: Broker) -> AsyncIterator[UpsRs]:
    assert broker.admin is not None
    client = UpsRs(broker.admin.bound_port)
    yield client
    await client.close()


async def scheduled(broker: Broker, web: UpsRs, *stations: str) -> dict[str, str]:
    """One HL7 order per station (order n on stations[n-1]): accession → workitem UID."""
    t = today()
    acks = await send(broker.mllp.bound_port, *(
        order(n, station=s, start=f"{t}{9 + n:02d}00").encode()
        for n, s in enumerate(stations, 1)))
    assert [msa(a)[1] for a in acks] == ["AA"] * len(stations)
    return {dataset(d).ReferencedRequestSequence[0].AccessionNumber:
            str(dataset(d).SOPInstanceUID) for d in await web.search({"limit": "100"})}


def dimse(port: int, work: Any) -> Any:
    """Run ``work(assoc)`` on an association of a stock pynetdicom SCU (UPS Push, MPPS)."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(UnifiedProcedureStepPush)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 15
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assert assoc.is_established
    try:
        return work(assoc)
    finally:
        assoc.release()


def claim(assoc: Any, uid: str, transaction: str) -> int:
    ds = Dataset()
    ds.ProcedureStepState = "IN PROGRESS"
    ds.TransactionUID = transaction
    status, _ = assoc.send_n_action(ds, 1, UnifiedProcedureStepPush, uid)
    return int(status.Status)


async def test_the_websocket_gets_every_event_whatever_caused_it(
        broker: Broker, web: UpsRs) -> None:
    uids = await scheduled(broker, web, "CT01", "CT01", "CT01")
    first, second, third = uids["A0000001"], uids["A0000002"], uids["A0000003"]
    subscribed = await web.call("POST", f"/workitems/{GLOBAL}/subscribers/WEBAI", None, 201)
    where = subscribed.headers["Content-Location"]
    assert where == f"{web.ws_base}/ws/subscribers/WEBAI"

    # the state of each workitem, queued at subscription, arrives when the socket opens
    ws = await web.session.ws_connect(where)
    initial = await reports(ws, 3)
    assert sorted((r.event_type, r.uid, r.state) for r in initial) == sorted(
        (1, uid, "SCHEDULED") for uid in (first, second, third))
    assert initial[0].data.AffectedSOPClassUID == "1.2.840.10008.5.1.4.34.6.4"
    assert initial[0].data.InputReadinessState == "READY"

    # a stock pynetdicom claim over DIMSE
    mine = generate_uid()
    assert await asyncio.to_thread(dimse, broker.dicom.bound_port,
                                   lambda a: claim(a, first, mine)) == 0
    got = await next_report(ws)
    assert (got.event_type, got.uid, got.state) == (1, first, "IN PROGRESS")

    # an MPPS on the third
    ds = mpps(study_uid=order(3).study_uid or "", sps_id="SPS0000003", accession="A0000003")
    status = await asyncio.to_thread(dimse, broker.dicom.bound_port, lambda a: int(
        a.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())[0].Status))
    assert status == 0
    got = await next_report(ws)
    assert (got.uid, got.state) == (third, "IN PROGRESS")

    # an HL7 cancel of the second
    t = today()
    cancel = order(2, control_id="CA2", order_control="CA", order_status="CA",
                   station="CT01", start=f"{t}1100")
    assert [msa(a)[1] for a in await send(broker.mllp.bound_port, cancel.encode())] == ["AA"]
    got = await next_report(ws)
    assert (got.event_type, got.uid, got.state) == (1, second, "CANCELED")

    # a cancellation request through UPS-RS on the claimed one: refused (C312) while its
    # performer CT01 does not subscribe to its events; once it does, 202 and Cancel Requested
    await web.call("POST", f"/workitems/{first}/cancelrequest", None, 409)
    await web.call("POST", f"/workitems/{first}/subscribers/CT01", None, 201)
    request = Dataset()
    request.ReasonForCancellation = "scanner down"
    request.ContactDisplayName = "Desk"
    await web.call("POST", f"/workitems/{first}/cancelrequest", body(request), 202)
    got = await next_report(ws)
    assert (got.event_type, got.uid) == (2, first)
    assert got.data.ReasonForCancellation == "scanner down"
    assert got.data.ContactDisplayName == "Desk"

    # closed: the reports wait, then arrive oldest first when the socket opens again
    await ws.close()
    progress = performed()
    progress.ProcedureStepProgressInformationSequence = [Dataset()]
    progress.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress = "80"
    await web.call("POST", f"/workitems/{first}?{mine}", body(progress), 200)
    await web.change(first, "COMPLETED", mine)
    pushed = generate_uid()
    await web.call("POST", f"/workitems?{pushed}", body(workitem()), 201)
    ws = await web.channel("WEBAI")
    later = await reports(ws, 3)
    assert [(r.event_type, r.uid, r.state) for r in later] == [
        (3, first, ""), (1, first, "COMPLETED"), (1, pushed, "SCHEDULED")]
    progress_item = later[0].data.ProcedureStepProgressInformationSequence[0]
    assert float(progress_item.ProcedureStepProgress) == 80
    assert await silent(ws)  # each report once: those sent before are not sent again
    await ws.close()
    db = Db(broker.settings.database.path)
    assert db.query("SELECT COUNT(*) FROM ups_events WHERE receiving_ae = 'WEBAI'"
                    " AND delivered_at IS NULL")[0][0] == 0


async def test_filtered_and_workitem_subscriptions_unsubscribe_and_suspend(
        broker: Broker, web: UpsRs, watcher: Watcher) -> None:
    uids = await scheduled(broker, web, "CT01")
    first = uids["A0000001"]
    # the PS3.18 11.10.1.2 form: filter=Key=value
    filtered = await web.call("POST", f"/workitems/{FILTERED}/subscribers/CT02WATCH",
                              None, 201, params={"filter": f"{STATION}=CT02"})
    assert not filtered.warnings
    ct02 = await web.channel("CT02WATCH")
    elsewhere, here = generate_uid(), generate_uid()
    await web.call("POST", f"/workitems?{elsewhere}", body(workitem(
        "W3", station="CT03", accession="ACC-CT03")), 201)
    await web.call("POST", f"/workitems?{here}", body(workitem(
        "W2", station="CT02", accession="ACC-CT02")), 201)
    got = await next_report(ct02)
    assert (got.uid, got.state) == (here, "SCHEDULED")

    # one workitem: its state at once, its changes, not another's
    await web.call("POST", f"/workitems/{first}/subscribers/ONE ITEM", None, 201,
                   params={"deletionlock": "true"})
    one = await web.channel("ONE%20ITEM")
    assert (await next_report(one)).uid == first
    await web.call("POST", f"/workitems/{here}/cancelrequest", None, 202)
    assert (await next_report(ct02)).state == "CANCELED"
    mine = generate_uid()
    await web.change(first, "IN PROGRESS", mine)
    got = await next_report(one)
    assert (got.uid, got.state) == (first, "IN PROGRESS")
    assert await silent(ct02, 0.3)

    # unsubscribed: nothing more; suspended: no new workitems
    await web.call("DELETE", f"/workitems/{first}/subscribers/ONE ITEM", None, 200)
    gone = await web.call("DELETE", f"/workitems/{first}/subscribers/ONE ITEM", None, 404)
    assert "holds no subscription" in gone.body["error"]
    await web.call("DELETE", f"/workitems/{GLOBAL}/subscribers/NOBODY", None, 404)
    nobody = await web.call("POST", f"/workitems/{first}/cancelrequest", None, 409)
    assert nobody.body["dimse_status"] == "0xC312"  # its performer cannot be told
    assert await silent(one)
    await web.call("POST", f"/workitems/{FILTERED}/subscribers/CT02WATCH/suspend", None, 200)
    await web.call("POST", "/workitems", body(workitem("W4", station="CT02",
                                                       accession="ACC-CT02-2")), 201)
    assert await silent(ct02)
    await web.call("DELETE", f"/workitems/{FILTERED}/subscribers/CT02WATCH", None, 200)
    for socket in (one, ct02):
        await socket.close()

    # what UPS-RS refuses, with what was wrong
    for method, path, params, status in (
            ("POST", f"/workitems/{first}/subscribers/CT02WATCH/suspend", None, 400),
            ("POST", f"/workitems/{GLOBAL}/subscribers/X", {STATION: "CT02"}, 400),
            ("POST", f"/workitems/{GLOBAL}/subscribers/{'A' * 17}", None, 400),
            ("POST", f"/workitems/{GLOBAL}/subscribers/X", {"deletionlock": "maybe"}, 400),
            ("POST", "/workitems/1.2.3.4.5/subscribers/X", None, 404),
            ("DELETE", "/workitems/1.2.3.4.5/subscribers/X", None, 404)):
        refused = await web.call(method, path, None, params=params)
        assert refused.status == status and refused.body["error"], (path, refused)

    # a configured DIMSE subscriber subscribed through UPS-RS: N-EVENT-REPORT (outbox)
    await web.call("POST", f"/workitems/{elsewhere}/subscribers/WATCHER", None, 201)
    await watcher.wait_for(elsewhere)
    db = Db(broker.settings.database.path)
    assert db.query("SELECT COUNT(*) FROM ups_events WHERE receiving_ae = 'WATCHER'")[0][0] \
        == 0


async def test_event_reports_expire_with_retention(broker: Broker, web: UpsRs) -> None:
    await scheduled(broker, web, "CT01", "CT01")
    await web.call("POST", f"/workitems/{GLOBAL}/subscribers/NEVERCOMES", None, 201)
    db = Db(broker.settings.database.path)
    assert db.query("SELECT COUNT(*) FROM ups_events")[0][0] == 2  # waiting for a socket
    assert db.execute("UPDATE ups_events SET created_at = ?", time.time() - 2 * 86400) == 2
    assert await asyncio.to_thread(broker.purger.purge) == {"ups_events": 2}
    assert db.query("SELECT COUNT(*) FROM ups_events")[0][0] == 0
