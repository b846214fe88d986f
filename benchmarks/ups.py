"""Issue 16's figures: UPS search at 100,000 items with the MWL benchmark's query shapes
(station + today: 36 matches, one patient ID, a name pattern), through UPS C-FIND (a stock
pynetdicom SCU, association kept open) and UPS-RS (an aiohttp client, connection kept open),
beside MWL C-FIND on the same items; and the delivery latency of event reports from a
state change (a claim by N-ACTION) to a DIMSE subscriber (a stock pynetdicom event SCP in
this process) and to a UPS-RS WebSocket subscriber.

    python benchmarks/ups.py --quick   # 1,000 items
    python benchmarks/ups.py           # 100,000 items
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    UnifiedProcedureStepEvent,
    UnifiedProcedureStepPull,
    UnifiedProcedureStepPush,
    UnifiedProcedureStepWatch,
)

from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from benchmarks.ha_soak import cpu_seconds, others
from benchmarks.mwl_query import identifier as mwl_identifier
from benchmarks.mwl_query import populate
from benchmarks.worklist_data import (
    PATIENT_QUERY_ID,
    PATIENTS_NAMED_NEEDLE,
    STATION,
    TODAY,
    TODAY_MATCHES,
    items,
)

SHAPES = {"station": TODAY_MATCHES, "patient": 1, "name": PATIENTS_NAMED_NEEDLE}


def ups_identifier(shape: str) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = ""
    ds.ProcedureStepState = ""
    ds.PatientName = ""
    ds.PatientID = ""
    ds.ScheduledProcedureStepStartDateTime = ""
    if shape == "station":
        code = Dataset()
        code.CodeValue = STATION
        ds.ScheduledStationNameCodeSequence = [code]
        ds.ScheduledProcedureStepStartDateTime = f"{TODAY}-{TODAY}"
    elif shape == "patient":
        ds.PatientID = PATIENT_QUERY_ID
    else:
        ds.PatientName = "NEEDLE*"
    return ds


def rs_params(shape: str) -> dict[str, str]:
    if shape == "station":
        return {"ScheduledStationNameCodeSequence.CodeValue": STATION,
                "ScheduledProcedureStepStartDateTime": f"{TODAY}-{TODAY}"}
    if shape == "patient":
        return {"PatientID": PATIENT_QUERY_ID}
    return {"PatientName": "NEEDLE*"}


def summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(percentile(times, 99), 2), "n": len(times)}


def dimse_search(port: int, reps: int, pid: int) -> dict[str, Any]:
    """UPS C-FIND and MWL C-FIND, the same shapes, one association each kept open."""
    from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore

    ae = AE(ae_title="STOCKUPS")
    ae.add_requested_context(UnifiedProcedureStepPull)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    out: dict[str, Any] = {}
    try:
        for shape, expected in SHAPES.items():
            for label, query, context in (
                    ("ups_cfind", ups_identifier(shape), UnifiedProcedureStepPull),
                    ("mwl_cfind", mwl_identifier(shape), ModalityWorklistInformationFind)):
                times = []
                cpu0 = cpu_seconds(pid)
                for _ in range(reps + 1):
                    t0 = time.perf_counter()
                    found = [i for s, i in assoc.send_c_find(query, context)
                             if s is not None and s.Status in (0xFF00, 0xFF01)]
                    times.append((time.perf_counter() - t0) * 1000)
                    if len(found) != expected:
                        raise RuntimeError(f"{label} {shape}: {len(found)} of {expected}")
                out[f"{label}_{shape}"] = {**summary(times[1:]), "broker_cpu_ms": round(
                    (cpu_seconds(pid) - cpu0) * 1000 / (reps + 1), 3)}
    finally:
        assoc.release()
    return out


async def rs_search(base: str, reps: int, pid: int) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Accept": "application/dicom+json"}) as http:
        for shape, expected in SHAPES.items():
            times = []
            cpu0 = cpu_seconds(pid)
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                async with http.get(f"{base}/dicomweb/workitems",
                                    params={**rs_params(shape), "limit": "1000"}) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"UPS-RS {shape}: {answer.status} {body[:200]!r}")
                times.append((time.perf_counter() - t0) * 1000)
                if len(json.loads(body)) != expected:
                    raise RuntimeError(f"UPS-RS {shape}: {len(json.loads(body))} of {expected}")
            out[f"ups_rs_{shape}"] = {**summary(times[1:]), "broker_cpu_ms": round(
                (cpu_seconds(pid) - cpu0) * 1000 / (reps + 1), 3)}
    return out


class Receiver:
    """A stock pynetdicom UPS event SCP: when each report for a workitem arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.ae = AE(ae_title="WATCHER")
        self.ae.add_supported_context(UnifiedProcedureStepEvent, scu_role=True, scp_role=True)

        def on_report(ev: Any) -> tuple[int, None]:
            info = ev.event_information
            if info.get("ProcedureStepState") == "IN PROGRESS":
                self.arrived.setdefault(str(ev.request.AffectedSOPInstanceUID),
                                        time.perf_counter())
            return 0, None
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        self.port = int(self.server.server_address[1])


def ws_listener(base: str, arrived: dict[str, float], ready: threading.Event,
                stop: threading.Event) -> None:
    """A UPS-RS WebSocket subscriber (WEBWATCH) in its own thread and loop."""
    import aiohttp

    async def run() -> None:
        url = base.replace("http://", "ws://") + "/dicomweb/ws/subscribers/WEBWATCH"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            ready.set()
            while not stop.is_set():
                try:
                    message = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                uid = data.get("00001000", {}).get("Value", [""])[0]
                state = data.get("00741000", {}).get("Value", [""])[0]
                if uid and state == "IN PROGRESS":
                    arrived.setdefault(uid, time.perf_counter())
    asyncio.run(run())


def event_latency(broker: BrokerUnderTest, receiver: Receiver, claims: int,
                  web: bool) -> dict[str, Any]:
    """Claim ``claims`` workitems, each watched by the DIMSE (and the web) subscriber."""
    import urllib.request

    base = f"http://127.0.0.1:{broker.admin_port}"
    ae = AE(ae_title="PERFORMER")
    for context in (UnifiedProcedureStepPush, UnifiedProcedureStepPull,
                    UnifiedProcedureStepWatch):
        ae.add_requested_context(context)
    ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", broker.dicom_port, ae_title="MWLBROKER")
    web_arrived: dict[str, float] = {}
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=ws_listener, args=(base, web_arrived, ready, stop),
                                daemon=True) if web else None
    if listener is not None:
        listener.start()
        ready.wait(10)
    try:
        query = ups_identifier("station")
        query.ProcedureStepState = "SCHEDULED"
        uids = [str(i.SOPInstanceUID) for s, i in assoc.send_c_find(
            query, UnifiedProcedureStepPull) if s is not None and s.Status in (0xFF00, 0xFF01)]
        uids = uids[:claims]
        for uid in uids:
            info = Dataset()
            info.ReceivingAE = "WATCHER"
            info.DeletionLock = "FALSE"
            status, _ = assoc.send_n_action(info, 3, UnifiedProcedureStepPush, uid)
            assert status.Status == 0, status
            if web:
                request = urllib.request.Request(
                    f"{base}/dicomweb/workitems/{uid}/subscribers/WEBWATCH", method="POST")
                urllib.request.urlopen(request, timeout=10).close()
        time.sleep(5.0)  # the initial state reports are delivered, the WAL checkpointed
        sent: dict[str, float] = {}
        answered: list[float] = []
        for uid in uids:
            info = Dataset()
            info.ProcedureStepState = "IN PROGRESS"
            info.TransactionUID = generate_uid()
            sent[uid] = time.perf_counter()
            status, _ = assoc.send_n_action(info, 1, UnifiedProcedureStepPush, uid)
            answered.append((time.perf_counter() - sent[uid]) * 1000)
            assert status.Status == 0, status
            time.sleep(0.05)  # one claim at a time: the latency of one, not of a queue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(receiver.arrived) < len(uids) or (
                web and len(web_arrived) < len(uids))):
            time.sleep(0.05)
    finally:
        assoc.release()
        stop.set()
    out: dict[str, Any] = {"claim_answer": summary(answered), "claims": len(uids),
                           "dimse_received": len(
        [u for u in uids if u in receiver.arrived])}
    out["dimse"] = summary([(receiver.arrived[u] - sent[u]) * 1000 for u in uids
                            if u in receiver.arrived])
    if web:
        out["websocket_received"] = len([u for u in uids if u in web_arrived])
        out["websocket"] = summary([(web_arrived[u] - sent[u]) * 1000 for u in uids
                                    if u in web_arrived]) if web_arrived else {}
    return out


def main(quick: bool, web: bool) -> int:
    size = 1000 if quick else 100_000
    reps = 20 if quick else 100
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "items": size,
                               "others_before": others()}
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = BrokerUnderTest(
            folder, "logging.level=WARNING", "outbound.poll=0.05",
            f"dicom.ups.subscribers=[{{ae_title: WATCHER, host: 127.0.0.1, "
            f"port: {receiver.port}, timeout: 10}}]")
        results["populate_s"] = round(populate(broker.db, list(items(size))), 1)
        with broker:
            assert broker.proc is not None
            pid = broker.proc.pid
            results["search"] = dimse_search(broker.dicom_port, reps, pid)
            if web:
                results["search"].update(asyncio.run(rs_search(
                    f"http://127.0.0.1:{broker.admin_port}", reps, pid)))
            print(results["search"], flush=True)
            results["events"] = event_latency(broker, receiver, 30, web)
            print(results["events"], flush=True)
    receiver.server.shutdown()
    results["others_after"] = others()
    write_results("ups_quick" if quick else "ups", results, table(results))
    return 0


def table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("figure", "p50 ms", "p99 ms", "broker CPU ms", "n")]
    for key, value in r["search"].items():
        rows.append((f"{key} ({r['items']:,} items)", str(value["p50_ms"]),
                     str(value["p99_ms"]), str(value["broker_cpu_ms"]), str(value["n"])))
    e = r["events"]
    rows.append(("claim (N-ACTION change state) answered", str(e["claim_answer"]["p50_ms"]),
                 str(e["claim_answer"]["p99_ms"]), "", str(e["claim_answer"]["n"])))
    rows.append(("event report, claim → DIMSE subscriber", str(e["dimse"].get("p50_ms")),
                 str(e["dimse"].get("p99_ms")), "", f"{e['dimse_received']}/{e['claims']}"))
    if "websocket" in e:
        rows.append(("event report, claim → WebSocket subscriber",
                     str(e["websocket"].get("p50_ms")), str(e["websocket"].get("p99_ms")),
                     "", f"{e['websocket_received']}/{e['claims']}"))
    rows.append(("load average before / after", str(r["others_before"]["loadavg"]),
                 str(r["others_after"]["loadavg"]), "", ""))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-web", action="store_true", help="DIMSE only (no UPS-RS)")
    args = parser.parse_args()
    sys.exit(main(args.quick, not args.no_web))
