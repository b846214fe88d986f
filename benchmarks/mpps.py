"""MPPS: N-CREATE + N-SET COMPLETED pairs per second from 8 modalities at once, and the time
from N-SET COMPLETED to the RIS receiving its status message (RIS up, real MLLP listener).

    python benchmarks/mpps.py            # full run
    python benchmarks/mpps.py --quick    # bounded (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from benchmarks.common import BrokerUnderTest, free_port, machine, percentile, write_results
from broker.dicom import pynetdicom_patches
from broker.hl7.mllp import MllpClient
from tests.support.ris import Ris, segment
from tests.support.samples import order

TARGETS = {"pairs_per_s": 300, "completed_to_ris_p99_ms": 100.0}
MODALITIES = 8


def study(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{n + 1}"


def in_progress(n: int) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study(n)
    item.AccessionNumber = f"A{n:07d}"
    item.ScheduledProcedureStepID = f"SPS{n:07d}"
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName, ds.PatientID = f"PATIENT^NUMBER{n}", f"P{n:07d}"
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle = f"PPS{n}", "CT01"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261122", "1000"
    ds.PerformedProcedureStepStatus, ds.Modality = "IN PROGRESS", "CT"
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = None
    ds.PerformedSeriesSequence = []
    return ds


def completed() -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261122", "1010"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = generate_uid()
    series.ReferencedImageSequence = [image]
    ds.PerformedSeriesSequence = [series]
    return ds


def modality(port: int, numbers: range, sent: dict[str, float], errors: list[str],
             pause: float = 0.0) -> None:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for n in numbers:
            uid = generate_uid()
            status, _ = assoc.send_n_create(in_progress(n), ModalityPerformedProcedureStep, uid)
            if not status:
                errors.append(f"N-CREATE {n}: no response ({_why(assoc)})")
                break
            if status.Status != 0:
                errors.append(f"N-CREATE {n}: {status.Status:#06x}")
                continue
            if pause:
                time.sleep(pause)
            sent[study(n)] = time.time()
            status, _ = assoc.send_n_set(completed(), ModalityPerformedProcedureStep, uid)
            if not status:
                errors.append(f"N-SET {n}: no response ({_why(assoc)})")
                break
            if status.Status != 0:
                errors.append(f"N-SET {n}: {status.Status:#06x}")
    finally:
        if assoc.is_established:
            assoc.release()


def _why(assoc: Any) -> str:
    return ("association aborted" if assoc.is_aborted else
            "association released" if assoc.is_released else "DIMSE timeout")


def wire_requests(numbers: range) -> list[tuple[str, bytes, bytes]]:
    """Every pair's N-CREATE and N-SET, encoded before the clock starts."""
    sop_class = ModalityPerformedProcedureStep
    requests = []
    for k, n in enumerate(numbers):
        uid = generate_uid()
        requests.append((study(n),
                         dicom_wire.n_create(2 * k + 1, sop_class, uid,
                                             dicom_wire.encode_dataset(in_progress(n))),
                         dicom_wire.n_set(2 * k + 2, sop_class, uid,
                                          dicom_wire.encode_dataset(completed()))))
    return requests


async def wire_modality(port: int, station: str, requests: list[tuple[str, bytes, bytes]],
                        errors: list[str]) -> None:
    assoc = await dicom_wire.Association.open("127.0.0.1", port, station, "MWLBROKER",
                                              ModalityPerformedProcedureStep)
    try:
        for key, create, update in requests:
            for name, request in (("N-CREATE", create), ("N-SET", update)):
                response = await assoc.request(request)
                if response.status != 0:
                    errors.append(f"{name} {key}: {response.status:#06x}")
                    break
    finally:
        await assoc.release()


async def wire_modalities(port: int, parts: list[list[tuple[str, bytes, bytes]]],
                          errors: list[str]) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(wire_modality(port, f"CT{k + 1:02d}", part, errors)
                           for k, part in enumerate(parts)))
    return time.perf_counter() - started


def _warm() -> None:
    pynetdicom_patches.apply(fast_path=True)
    logging.basicConfig(level=logging.WARNING)  # pynetdicom says why a request got no answer


def _modality_process(port: int, numbers: range) -> tuple[dict[str, float], list[str]]:
    sent: dict[str, float] = {}
    errors: list[str] = []
    modality(port, numbers, sent, errors)
    return sent, errors


class RisThread:
    """The RIS listener in its own event loop thread, noting when each CM arrives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrived: dict[str, float] = {}
        self.ris = Ris()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RisThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.ris.start(self.port), self.loop).result(10)
        original = self.ris._answer

        async def answer(message: str, writer: Any) -> None:
            if segment(message, "ORC")[5] == "CM":
                self.arrived.setdefault(segment(message, "ZDS")[1].split("^")[0], time.time())
            await original(message, writer)

        self.ris._answer = answer  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.ris.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def feed(port: int, total: int) -> None:
    await feed_range(port, range(total))


async def feed_range(port: int, numbers: range) -> None:
    async with MllpClient("127.0.0.1", port) as client:
        for n in numbers:
            await client.send(order(n).encode())


def main(quick: bool) -> int:
    pynetdicom_patches.apply(fast_path=True)
    per_modality = 40 if quick else 250
    total = MODALITIES * per_modality
    ris_port = free_port()
    destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris_port},"
                   " timeout: 5}]")
    sent: dict[str, float] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, RisThread(ris_port) as ris, \
            BrokerUnderTest(Path(tmp), destination) as broker:
        asyncio.run(feed(broker.port, 2 * total))
        # 1) lean modalities: 8 associations from one process with pre-encoded messages
        parts = [wire_requests(range(total + k * per_modality, total + (k + 1) * per_modality))
                 for k in range(MODALITIES)]
        wire_elapsed = asyncio.run(wire_modalities(broker.dicom_port, parts, errors))
        # 2) each modality in its own pynetdicom process, as real modalities are (full run
        # only: on 2 CPUs it measures the 8 client processes as much as the broker)
        elapsed = float("nan")
        jobs = [(broker.dicom_port, range(k * per_modality, (k + 1) * per_modality))
                for k in range(MODALITIES)] if not quick else []
        if jobs:
            # every worker applies the fast path (pool.map of a warm-up would not reach each
            # worker surely; stock pynetdicom clients lose a response now and then to their
            # reactor race, see docs/pynetdicom-requestor-race.md)
            with multiprocessing.get_context("spawn").Pool(MODALITIES,
                                                           initializer=_warm) as pool:
                started = time.perf_counter()
                for part_sent, part_errors in pool.starmap(_modality_process, jobs):
                    sent.update(part_sent)
                    errors += part_errors
                elapsed = time.perf_counter() - started
        deadline = time.time() + 60
        while len(ris.arrived) < (0 if quick else total) and time.time() < deadline:
            time.sleep(0.05)
        wire_keys = [key for part in parts for key, _, _ in part]
        while (any(k not in ris.arrived for k in wire_keys) and time.time() < deadline):
            time.sleep(0.05)
        throughput_arrivals = len([k for k in sent if k in ris.arrived])
        wire_arrivals = len([k for k in wire_keys if k in ris.arrived])
        # latency when the RIS is up and the broker is not saturated: one modality, paced
        paced: dict[str, float] = {}
        paced_numbers = range(2 * total, 2 * total + (40 if quick else 200))
        asyncio.run(feed_range(broker.port, paced_numbers))
        modality(broker.dicom_port, paced_numbers, paced, errors, pause=0.02)
        deadline = time.time() + 30
        while any(k not in ris.arrived for k in paced) and time.time() < deadline:
            time.sleep(0.05)
        if errors:  # what the broker said about it
            noteworthy = [line for line in broker.log_text().splitlines()
                          if "level=WARNING" in line or "level=ERROR" in line
                          or "abort" in line.lower()]
            print("\n".join(["broker log, warnings and errors:", *noteworthy[-40:]]),
                  file=sys.stderr)
    latencies = [(ris.arrived[k] - paced[k]) * 1000 for k in paced if k in ris.arrived]
    expected = total if quick else 2 * total
    pairs = {"modalities": MODALITIES, "pairs": total, "seconds": round(wire_elapsed, 2),
             "per_s": round(total / wire_elapsed, 1),
             "client": "8 associations from one asyncio process, messages pre-encoded",
             "errors": len(errors), "error_examples": errors[:3]}
    pynetdicom_pairs = {"modalities": MODALITIES, "pairs": len(jobs) and total,
                        "seconds": round(elapsed, 2),
                        "per_s": round(total / elapsed, 1) if jobs else None,
                        "client": "pynetdicom SCU, one process per modality"}
    to_ris = {"paced_pairs": len(paced), "messages": len(latencies),
              "p50_ms": round(percentile(latencies, 50), 1),
              "p99_ms": round(percentile(latencies, 99), 1),
              "max_ms": round(max(latencies, default=float("nan")), 1)}
    results = {"machine": machine(), "quick": quick, "targets": TARGETS, "pairs": pairs,
               "pairs_pynetdicom_clients": pynetdicom_pairs, "completed_to_ris": to_ris}
    rows = [("figure", "measured", "target", "ratio"),
            (f"N-CREATE + N-SET pairs/s, {MODALITIES} modalities (lean clients, one process)",
             f"{pairs['per_s']}", f"≥ {TARGETS['pairs_per_s']}",
             f"{pairs['per_s'] / TARGETS['pairs_per_s']:.2f}×"),
            (f"the same with {MODALITIES} pynetdicom SCU processes (they share the 2 CPUs "
             "with the broker; full run only)", f"{pynetdicom_pairs['per_s'] or '-'}", "", ""),
            ("N-SET COMPLETED → RIS receives, p50 / p99 ms (1 modality, paced; includes the "
             "N-SET round trip)",
             f"{to_ris['p50_ms']} / {to_ris['p99_ms']}",
             f"p99 ≤ {TARGETS['completed_to_ris_p99_ms']}", ""),
            ("status messages at the RIS / procedures (both throughput phases)",
             f"{wire_arrivals + throughput_arrivals} / {expected}", "all", ""),
            ("errors", f"{len(errors)}", "0", "")]
    write_results("mpps_quick" if quick else "mpps", results, rows)
    missing = throughput_arrivals + wire_arrivals < expected or len(latencies) < len(paced)
    return 1 if errors or missing else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short bounded run (CI)")
    sys.exit(main(parser.parse_args().quick))
