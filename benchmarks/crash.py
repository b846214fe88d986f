"""Crash suite: the real broker is killed with SIGKILL at random moments under load and
restarted on the same database; senders behave like a RIS and a modality (they resend what
got no answer). Afterwards every message is stored exactly once, the database is intact, and
the outbox delivers every status message to a real MLLP RIS.

Phase 1 (HL7): 20,000 ORM^O01 over 8 connections, 3 kills.
Phase 2 (MPPS): modalities send N-CREATE IN PROGRESS + N-SET COMPLETED for performed orders
(pre-agreed SOP Instance UIDs, so a resend names the same instance), 3 kills; the outbox
sends an IP and a CM message per procedure to the RIS throughout.

What is asserted, and why it is all that can be:
- every control ID has exactly one accepted (non-duplicate) row in the message log, and the
  ACK each sender finally got is that row's stored ACK byte for byte;
- a resent N-CREATE may find its first copy committed (0111) and a resent N-SET COMPLETED may
  find the MPPS already completed (0110 "may no longer be updated"): both count as success
  only for a resend; every MPPS is stored once, COMPLETED, linked to its step, which is
  COMPLETED;
- every outbox row ends 'delivered' and the RIS receives every outbox control ID; a control
  ID may arrive twice only when a kill fell between the two arrivals (the RIS acknowledged it
  but the broker died before recording the delivery); de-duplicated by control ID, each
  order's messages arrive IP then CM.

    python benchmarks/crash.py            # full run, writes benchmarks/results/crash.*
    python benchmarks/crash.py --quick    # 2,000 messages, 1 kill per phase
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from benchmarks.common import BrokerUnderTest, free_port, machine, write_results
from benchmarks.mpps import in_progress
from broker.hl7.mllp import MllpClient, MllpError
from tests.support.db import Db
from tests.support.ris import Ris, segment
from tests.support.samples import order

MPPS = ModalityPerformedProcedureStep
ATTEMPT_TIMEOUT = 10.0
NETWORK_ERRORS = (OSError, EOFError, TimeoutError, MllpError, dicom_wire.WireError)


@dataclass
class Config:
    messages: int = 20_000
    connections: int = 8
    hl7_kills: int = 3
    procedures: int = 2_000
    modalities: int = 8
    mpps_kills: int = 3
    seed: int = 7
    deadline_s: float = 600.0

    @classmethod
    def quick(cls) -> Config:
        return cls(messages=2_000, hl7_kills=1, procedures=200, mpps_kills=1,
                   deadline_s=180.0)


@dataclass
class Kill:
    phase: str
    at_progress: int
    killed_at: float = 0.0
    restarted_at: float = 0.0
    downtime_s: float = 0.0
    integrity: str = ""


@dataclass
class Progress:
    done: int = 0
    resends: int = 0
    errors: list[str] = field(default_factory=list)


class RecordingRis(Ris):
    """The test RIS, noting when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str, str, str]] = []  # time, control ID, order, ORC-5

    async def _answer(self, message: str, writer: asyncio.StreamWriter) -> None:
        self.arrivals.append((time.monotonic(), segment(message, "MSH")[10],
                              segment(message, "ZDS")[1].split("^")[0],
                              segment(message, "ORC")[5]))
        await super()._answer(message, writer)


class Crasher:
    """Kills the broker when the load reaches planned points and restarts it."""

    def __init__(self, broker: BrokerUnderTest, rng: random.Random) -> None:
        self.broker, self.rng = broker, rng
        self.kills: list[Kill] = []

    async def run(self, phase: str, progress: Progress, points: list[int],
                  finished: asyncio.Event) -> None:
        for point in points:
            while progress.done < point and not finished.is_set():
                await asyncio.sleep(0.002)
            if finished.is_set():
                progress.errors.append(f"{phase}: load ended before the kill at {point}")
                return
            await asyncio.sleep(self.rng.uniform(0, 0.02))
            await self.kill_and_restart(phase, progress.done)

    async def kill_and_restart(self, phase: str, done: int) -> None:
        kill = Kill(phase, done)
        kill.killed_at = time.monotonic()
        await asyncio.to_thread(self.broker.kill)  # SIGKILL, then reaped
        problems = await asyncio.to_thread(Db(self.broker.db).integrity)
        kill.integrity = ";".join(problems) or "ok"
        await asyncio.sleep(self.rng.uniform(0.1, 1.0))
        await asyncio.to_thread(self.broker.start)
        kill.restarted_at = time.monotonic()
        kill.downtime_s = round(kill.restarted_at - kill.killed_at, 3)
        self.kills.append(kill)
        print(f"killed during {phase} at {done}, back after {kill.downtime_s} s", flush=True)


def kill_points(rng: random.Random, total: int, kills: int) -> list[int]:
    """Random progress points between 10 % and 90 % of the load, apart from each other."""
    if kills == 0:
        return []
    span = (total * 0.8) / kills
    return [int(total * 0.1 + span * k + rng.uniform(0.1, 0.9) * span) for k in range(kills)]


# -- phase 1: HL7 senders ----------------------------------------------------------------------


async def hl7_sender(port: int, numbers: list[int], progress: Progress,
                     acks: dict[str, str], deadline: float) -> None:
    """Send each message until it is acknowledged, reconnecting as a RIS does."""
    client: MllpClient | None = None
    try:
        for n in numbers:
            payload = order(n).encode()
            attempts = 0
            while True:
                attempts += 1
                if time.monotonic() > deadline:
                    progress.errors.append(f"MSG{n:08d}: no acknowledgement before the deadline")
                    return
                try:
                    if client is None:
                        client = MllpClient("127.0.0.1", port, timeout=ATTEMPT_TIMEOUT)
                        await client.connect()
                    answer = (await client.send(payload)).decode("utf-8")
                    break
                except NETWORK_ERRORS:
                    if client is not None:
                        await client.close()
                    client = None
                    await asyncio.sleep(0.05)
            if attempts > 1:
                progress.resends += 1
            acks[f"MSG{n:08d}"] = answer
            if "\rMSA|AA|" not in answer:
                progress.errors.append(f"MSG{n:08d}: answered {answer.split(chr(13))[1]!r}")
            progress.done += 1
    finally:
        if client is not None:
            await client.close()


async def hl7_phase(cfg: Config, broker: BrokerUnderTest, crasher: Crasher,
                    rng: random.Random) -> dict[str, Any]:
    progress = Progress()
    acks: dict[str, str] = {}
    finished = asyncio.Event()
    deadline = time.monotonic() + cfg.deadline_s
    started = time.perf_counter()
    killer = asyncio.create_task(crasher.run(
        "hl7", progress, kill_points(rng, cfg.messages, cfg.hl7_kills), finished))
    await asyncio.gather(*(
        hl7_sender(broker.port, list(range(k, cfg.messages, cfg.connections)), progress, acks,
                   deadline) for k in range(cfg.connections)))
    finished.set()
    await killer
    elapsed = time.perf_counter() - started
    db = Db(broker.db)
    errors = progress.errors + check_hl7(db, cfg.messages, acks)
    return {"messages": cfg.messages, "connections": cfg.connections,
            "acknowledged": len(acks), "resent_messages": progress.resends,
            "resends_found_stored": db.query(
                "SELECT COUNT(*) FROM message_log WHERE duplicate_of IS NOT NULL")[0][0],
            "seconds": round(elapsed, 1), "errors": errors}


def check_hl7(db: Db, total: int, acks: dict[str, str]) -> list[str]:
    errors: list[str] = []
    accepted = db.query("SELECT control_id, COUNT(*), MIN(ack) FROM message_log "
                        "WHERE outcome = 'AA' AND duplicate_of IS NULL GROUP BY control_id")
    expected = {f"MSG{n:08d}" for n in range(total)}
    counts = {cid: count for cid, count, _ in accepted}
    stored_acks = {cid: ack for cid, _, ack in accepted}
    missing = sorted(expected - counts.keys())
    if missing:
        errors.append(f"{len(missing)} messages not stored, e.g. {missing[:3]}")
    twice = sorted(cid for cid, count in counts.items() if count != 1)
    if twice:
        errors.append(f"{len(twice)} messages applied more than once, e.g. {twice[:3]}")
    strangers = sorted(counts.keys() - expected)
    if strangers:
        errors.append(f"{len(strangers)} unexpected control IDs stored, e.g. {strangers[:3]}")
    different = [cid for cid, ack in acks.items() if stored_acks.get(cid) != ack]
    if different:
        errors.append(f"{len(different)} ACKs differ from the stored ACK, e.g. {different[:3]}")
    refused = db.query("SELECT COUNT(*) FROM message_log WHERE outcome != 'AA'")[0][0]
    if refused:
        errors.append(f"{refused} messages were answered AE/AR")
    counts_now = db.counts()
    if counts_now["procedures"] != total or counts_now["steps"] != total:
        errors.append(f"store holds {counts_now}, expected {total} procedures and steps")
    return errors


# -- phase 2: modalities sending MPPS ----------------------------------------------------------


def sop_instance(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.77.{n + 1}"


def completed(n: int) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261122", "1010"
    series = Dataset()
    series.SeriesInstanceUID = f"{sop_instance(n)}.1"
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = f"{sop_instance(n)}.1.1"
    series.ReferencedImageSequence = [image]
    ds.PerformedSeriesSequence = [series]
    return ds


@dataclass
class MppsTally:
    created_on_resend: int = 0  # 0111 to a resent N-CREATE: the first copy was committed
    completed_on_resend: int = 0  # 0110 A710 to a resent N-SET: the first copy was committed


def accepted_status(kind: str, status: int, comment: str, attempts: int,
                    tally: MppsTally) -> bool:
    if status == 0:
        return True
    if attempts > 1 and kind == "N-CREATE" and status == 0x0111:
        tally.created_on_resend += 1
        return True
    if attempts > 1 and kind == "N-SET" and status == 0x0110 and "no longer" in comment:
        tally.completed_on_resend += 1
        return True
    return False


async def modality(port: int, station: str, numbers: list[int], progress: Progress,
                   tally: MppsTally, deadline: float) -> None:
    assoc: dicom_wire.Association | None = None
    message_id = 0
    try:
        for n in numbers:
            requests = [("N-CREATE", dicom_wire.encode_dataset(in_progress(n))),
                        ("N-SET", dicom_wire.encode_dataset(completed(n)))]
            for kind, dataset in requests:
                attempts = 0
                while True:
                    attempts += 1
                    message_id = message_id % 65535 + 1
                    encode = dicom_wire.n_create if kind == "N-CREATE" else dicom_wire.n_set
                    if time.monotonic() > deadline:
                        progress.errors.append(f"{kind} {n}: no answer before the deadline")
                        return
                    try:
                        if assoc is None:
                            assoc = await asyncio.wait_for(dicom_wire.Association.open(
                                "127.0.0.1", port, station, "MWLBROKER", MPPS), ATTEMPT_TIMEOUT)
                        response = await asyncio.wait_for(assoc.request(
                            encode(message_id, MPPS, sop_instance(n), dataset)), ATTEMPT_TIMEOUT)
                        break
                    except NETWORK_ERRORS:
                        if assoc is not None:
                            assoc.writer.close()
                        assoc = None
                        await asyncio.sleep(0.05)
                if attempts > 1:
                    progress.resends += 1
                if not accepted_status(kind, response.status, response.comment, attempts, tally):
                    progress.errors.append(f"{kind} {n} (attempt {attempts}): "
                                           f"{response.status:#06x} {response.comment}")
                progress.done += 1
    finally:
        if assoc is not None:
            with contextlib.suppress(*NETWORK_ERRORS):
                await asyncio.wait_for(assoc.release(), 5)


async def mpps_phase(cfg: Config, broker: BrokerUnderTest, crasher: Crasher, ris: RecordingRis,
                     rng: random.Random) -> dict[str, Any]:
    progress = Progress()
    tally = MppsTally()
    finished = asyncio.Event()
    deadline = time.monotonic() + cfg.deadline_s
    started = time.perf_counter()
    requests = 2 * cfg.procedures
    killer = asyncio.create_task(crasher.run(
        "mpps", progress, kill_points(rng, requests, cfg.mpps_kills), finished))
    await asyncio.gather(*(
        modality(broker.dicom_port, f"CT{k + 1:02d}",
                 list(range(k, cfg.procedures, cfg.modalities)), progress, tally, deadline)
        for k in range(cfg.modalities)))
    finished.set()
    await killer
    elapsed = time.perf_counter() - started
    db = Db(broker.db)
    errors = progress.errors + check_mpps(db, cfg.procedures)
    delivered = await wait_delivered(db, 2 * cfg.procedures, deadline)
    await asyncio.sleep(0.5)  # a message sent twice would arrive now
    errors += check_outbox(db, ris, crasher.kills, cfg.procedures)
    return {"procedures": cfg.procedures, "modalities": cfg.modalities, "requests": requests,
            "resent_requests": progress.resends, **asdict(tally),
            "seconds": round(elapsed, 1), "outbox_delivered": delivered,
            "ris_arrivals": len(ris.arrivals),
            "ris_duplicates": sum(c - 1 for c in Counter(a[1] for a in ris.arrivals).values()),
            "errors": errors}


def check_mpps(db: Db, procedures: int) -> list[str]:
    errors: list[str] = []
    rows = db.query("SELECT m.sop_instance_uid, m.status, s.sps_id, s.status FROM mpps m "
                    "LEFT JOIN mpps_steps ms ON ms.mpps_fk = m.id "
                    "LEFT JOIN steps s ON s.id = ms.step_fk")
    expected = {sop_instance(n): f"SPS{n:07d}" for n in range(procedures)}
    seen = Counter(uid for uid, *_ in rows)
    if set(seen) != set(expected) or any(c != 1 for c in seen.values()):
        errors.append(f"MPPS stored: {len(seen)} instances ({sum(seen.values())} links), "
                      f"expected {procedures} each linked once")
    wrong = [uid for uid, status, sps, step_status in rows
             if status != "COMPLETED" or step_status != "COMPLETED" or expected.get(uid) != sps]
    if wrong:
        errors.append(f"{len(wrong)} MPPS or their steps are not COMPLETED as expected, "
                      f"e.g. {wrong[:3]}")
    return errors


async def wait_delivered(db: Db, expected: int, deadline: float) -> int:
    delivered = 0
    while time.monotonic() < deadline:
        delivered = db.query("SELECT COUNT(*) FROM outbox WHERE state = 'delivered'")[0][0]
        if delivered >= expected:
            break
        await asyncio.sleep(0.1)
    return int(delivered)


def check_outbox(db: Db, ris: RecordingRis, kills: list[Kill], procedures: int) -> list[str]:
    errors: list[str] = []
    rows = db.query("SELECT control_id, state FROM outbox")
    states = Counter(state for _, state in rows)
    if len(rows) != 2 * procedures or states["delivered"] != len(rows):
        errors.append(f"outbox: {len(rows)} rows {dict(states)}, expected {2 * procedures} "
                      "all delivered")
    queued = {cid for cid, _ in rows}
    arrivals: dict[str, list[float]] = {}
    first_by_order: dict[str, list[str]] = {}
    for when, cid, order_key, status in ris.arrivals:
        if cid not in arrivals:
            first_by_order.setdefault(order_key, []).append(status)
        arrivals.setdefault(cid, []).append(when)
    if set(arrivals) != queued:
        errors.append(f"RIS received {len(arrivals)} control IDs, the outbox queued "
                      f"{len(queued)}; missing e.g. {sorted(queued - set(arrivals))[:3]}")
    for cid, times in arrivals.items():
        for first, again in itertools.pairwise(times):
            if not any(first <= k.restarted_at and again >= k.killed_at for k in kills):
                errors.append(f"{cid} arrived twice without a kill in between")
                break
    out_of_order = [key for key, statuses in first_by_order.items() if statuses != ["IP", "CM"]]
    if len(first_by_order) != procedures or out_of_order:
        errors.append(f"{len(first_by_order)} orders at the RIS; not IP then CM: "
                      f"{out_of_order[:3]}")
    return errors


# -- the run -----------------------------------------------------------------------------------


async def crash_suite(cfg: Config, folder: Path) -> dict[str, Any]:
    """Both phases against one broker; the report with its list of failures ("errors")."""
    rng = random.Random(cfg.seed)
    ris = RecordingRis()
    await ris.start(free_port())
    destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris.port},"
                   " timeout: 2}]")
    broker = BrokerUnderTest(folder, destination, "outbound.backoff_base=0.05",
                             "outbound.backoff_max=0.5", "outbound.poll=0.1")
    crasher = Crasher(broker, rng)
    try:
        await asyncio.to_thread(broker.start)
        hl7 = await hl7_phase(cfg, broker, crasher, rng)
        mpps = await mpps_phase(cfg, broker, crasher, ris, rng)
        exit_code = await asyncio.to_thread(broker.stop)
    finally:
        await asyncio.to_thread(broker.kill)
        await ris.stop()
    integrity = Db(broker.db).integrity()
    errors = [f"hl7: {e}" for e in hl7["errors"]] + [f"mpps: {e}" for e in mpps["errors"]]
    errors += [f"integrity after the {k.phase} kill at {k.at_progress}: {k.integrity}"
               for k in crasher.kills if k.integrity != "ok"]
    if integrity:
        errors.append(f"integrity at the end: {integrity}")
    if exit_code != 0:
        errors.append(f"broker exited with {exit_code} on SIGTERM")
    planned = cfg.hl7_kills + cfg.mpps_kills
    if len(crasher.kills) != planned:
        errors.append(f"{len(crasher.kills)} kills made, {planned} planned")
    return {"config": asdict(cfg), "kills": [asdict(k) for k in crasher.kills], "hl7": hl7,
            "mpps": mpps, "sigterm_exit_code": exit_code, "errors": errors}


def report(results: dict[str, Any], quick: bool) -> None:
    hl7, mpps, kills = results["hl7"], results["mpps"], results["kills"]
    ok = "yes" if not results["errors"] else "NO"
    rows = [("figure", "measured"),
            ("HL7: messages / connections / SIGKILLs",
             f"{hl7['messages']} / {hl7['connections']} / "
             f"{sum(k['phase'] == 'hl7' for k in kills)}"),
            ("HL7: messages resent after a lost ACK / of them found already stored",
             f"{hl7['resent_messages']} / {hl7['resends_found_stored']}"),
            ("HL7: every message stored exactly once, ACK = stored ACK",
             "yes" if not hl7["errors"] else "NO"),
            ("MPPS: procedures (N-CREATE + N-SET) / modalities / SIGKILLs",
             f"{mpps['procedures']} / {mpps['modalities']} / "
             f"{sum(k['phase'] == 'mpps' for k in kills)}"),
            ("MPPS: requests resent / 0111 on resent N-CREATE / 0110 on resent N-SET",
             f"{mpps['resent_requests']} / {mpps['created_on_resend']} / "
             f"{mpps['completed_on_resend']}"),
            ("MPPS: every MPPS stored once, COMPLETED, step COMPLETED",
             "yes" if not mpps["errors"] else "NO"),
            ("outbox: delivered / RIS arrivals / repeats (each across a kill)",
             f"{mpps['outbox_delivered']} / {mpps['ris_arrivals']} / {mpps['ris_duplicates']}"),
            ("broker down per kill, s (kill → listening again)",
             " · ".join(f"{k['downtime_s']}" for k in kills)),
            ("PRAGMA integrity_check after every kill and at the end",
             "ok" if all(k["integrity"] == "ok" for k in kills) else "FAILED"),
            ("all checks pass", ok)]
    write_results("crash_quick" if quick else "crash", results, rows)


def main(quick: bool) -> int:
    cfg = Config.quick() if quick else Config()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(crash_suite(cfg, Path(tmp)))
    results["machine"] = machine()
    results["quick"] = quick
    report(results, quick)
    for error in results["errors"]:
        print("FAILED:", error)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 1 kill per phase")
    sys.exit(main(parser.parse_args().quick))
