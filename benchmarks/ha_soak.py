"""HA soak (issue 13): two ``mwl-broker serve`` instances on one durable PostgreSQL (fsync on)
behind HAProxy, 8 RIS senders sending ORM^O01 (each resending on a new connection until
answered, as MLLP senders do), a few modalities doing MPPS IN PROGRESS → COMPLETED through
HAProxy, and a random instance SIGKILLed 3 times and restarted (full run: PostgreSQL itself
restarted once with ``-m immediate`` as well). Afterwards: every AA'd message stored once as the
original of record with the ACK its sender got, every MPPS stored once and COMPLETED, the outbox
delivered, C-FIND identical from both instances, amcheck clean. Broker CPU from /proc.

Before the soak, side by side in the same run, ingest with 8 senders (benchmarks/hl7_ingest.py's
``throughput``): SQLite 1 instance, PostgreSQL 1 instance, PostgreSQL 2 instances behind
HAProxy (each on a fresh database of the same durable cluster); then the same with an
unmodified peer, 8 python-hl7 ``mllp_send`` processes (each sends its file of distinct ORMs
on one connection, waiting for each ACK).

    python benchmarks/ha_soak.py --quick   # bounded (a few minutes on 2 cores)
    python benchmarks/ha_soak.py           # full: 8 × 2,500 ORMs, 8 modalities, PG restart
    python benchmarks/ha_soak.py --ingest-only 1000   # the ingest figures alone, printed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from benchmarks.common import PG_BENCH_SETTINGS, BrokerUnderTest, machine, write_results
from benchmarks.hl7_ingest import throughput
from benchmarks.mpps import completed, in_progress, study
from broker.dicom import pynetdicom_patches
from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.hl7.mllp import MllpClient, MllpError
from tests.support import throwaway
from tests.support.db import Db
from tests.support.haproxy import Backend, HAProxy, Server
from tests.support.postgres import PostgresCluster
from tests.support.ris import Ris, segment
from tests.support.samples import order

TICKS = os.sysconf("SC_CLK_TCK")
ATTEMPTS = 400
#: the first order number of the soak's ORMs and of the orders the MPPS refer to
SOAK_FIRST, MPPS_FIRST = 5_000_000, 7_000_000


# -- CPU from /proc --------------------------------------------------------------------------

def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a live process (all its threads), 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def pg_cpu_seconds(pg: PostgresCluster) -> float:
    """The postmaster, its reaped children (cutime + cstime) and its live children."""
    pid = pg.pid
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / TICKS
    return own + sum(cpu_seconds(child) for child in throwaway.children(pid))


def others() -> dict[str, Any]:
    """What else ran on the machine: load average and the busiest processes."""
    top = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"],
                         capture_output=True, text=True, check=False).stdout.splitlines()
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "top_processes": [line[:160] for line in top[1:9]]}


# -- the pieces ------------------------------------------------------------------------------

def front(brokers: list[BrokerUnderTest]) -> HAProxy:
    def backend(port_of: str) -> Backend:
        return Backend([Server("127.0.0.1", getattr(b, port_of), check_port=b.admin_port,
                               name=b.folder.name) for b in brokers], check_path="/readyz")

    return HAProxy({"mllp": None, "dicom": None},
                   {"mllp": backend("port"), "dicom": backend("dicom_port")})


def wait_up(haproxy: HAProxy, names: list[str], timeout: float = 30.0) -> None:
    for frontend in ("mllp", "dicom"):
        for name in names:
            haproxy.wait_status(frontend, name, "UP", timeout)


def new_database(pg: PostgresCluster, name: str) -> str:
    pg.psql(f"CREATE DATABASE {name}")
    return pg.url(name)


def pg_broker(folder: Path, url: str, node: str, *options: str) -> BrokerUnderTest:
    where = folder / node
    where.mkdir(parents=True, exist_ok=True)
    return BrokerUnderTest(where, f"database.url={url}", f"node.id={node}", *options)


# -- ingest side by side ---------------------------------------------------------------------

async def ingest(port: int, per_sender: int, first: int, pids: list[int | None],
                 pg: PostgresCluster | None) -> dict[str, Any]:
    await throughput(port, 8, 25, first + 9_000_000)  # warm-up: 200 messages
    cpu0 = sum(cpu_seconds(p) for p in pids)
    pg0 = pg_cpu_seconds(pg) if pg else 0.0
    client0 = time.process_time()
    result = await throughput(port, 8, per_sender, first)
    result["client_cpu_ms_per_msg"] = round(
        (time.process_time() - client0) / result["messages"] * 1000, 3)  # this process
    broker_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    result["broker_cpu_s"] = round(broker_cpu, 2)
    result["broker_cpu_ms_per_msg"] = round(broker_cpu / result["messages"] * 1000, 3)
    if pg:
        pg_cpu = pg_cpu_seconds(pg) - pg0
        result["postgres_cpu_s"] = round(pg_cpu, 2)
        result["postgres_cpu_ms_per_msg"] = round(pg_cpu / result["messages"] * 1000, 3)
    return result


MLLP_SEND = Path(sys.executable).parent / "mllp_send"


async def ingest_mllp_send(port: int, per_sender: int, first: int, folder: Path,
                           pids: list[int | None], pg: PostgresCluster | None
                           ) -> dict[str, Any]:
    """8 python-hl7 ``mllp_send`` processes, each with a file of distinct ORMs: messages/s
    from the first start to the last exit (process start-up included), broker CPU per
    message; every answer must be an AA."""
    files = []
    for k in range(8):
        path = folder / f"mllp_send_{first}_{k}.hl7"
        path.write_bytes(b"\n".join(order(first + k * per_sender + n).encode().rstrip(b"\r")
                                     for n in range(per_sender)) + b"\n")
        files.append(path)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    pg0 = pg_cpu_seconds(pg) if pg else 0.0
    clients0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # each one's answers go to a file: a pipe left unread while another process is awaited
    # stops its writer once the buffer fills (and makes that sender look slow)
    answers = [path.with_suffix(".acks") for path in files]
    outs = [a.open("wb") for a in answers]
    procs = [await asyncio.create_subprocess_exec(
        str(MLLP_SEND), "--loose", "-f", str(path), "-p", str(port), "127.0.0.1",
        stdout=out, stderr=subprocess.STDOUT) for path, out in zip(files, outs, strict=True)]
    for p in procs:
        await p.wait()
    for out in outs:
        out.close()
    outputs = [(a.read_bytes(), b"") for a in answers]
    seconds = time.perf_counter() - started
    broker_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    clients1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the mllp_send processes ended
    client_cpu = (clients1.ru_utime + clients1.ru_stime - clients0.ru_utime
                  - clients0.ru_stime)
    messages = 8 * per_sender
    aa = sum(out.count(b"MSA|AA|") for out, _ in outputs)
    result: dict[str, Any] = {
        "client": "python-hl7 mllp_send x 8", "messages": messages, "seconds": round(seconds, 3),
        "per_s": round(messages / seconds, 1), "aa": aa,
        "failures": messages - aa + sum(1 for p in procs if p.returncode),
        "broker_cpu_ms_per_msg": round(broker_cpu / messages * 1000, 3),
        "client_cpu_ms_per_msg": round(client_cpu / messages * 1000, 3)}
    if pg:
        result["postgres_cpu_ms_per_msg"] = round((pg_cpu_seconds(pg) - pg0) / messages * 1000,
                                                  3)
    return result


async def ingest_figures(tmp: Path, pg: PostgresCluster, per_sender: int,
                         options: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    saved = os.environ.pop("MWL_DATABASE_URL", None)  # the SQLite broker: its own file
    try:
        (tmp / "sqlite1").mkdir()
        with BrokerUnderTest(tmp / "sqlite1") as broker:
            assert broker.proc is not None
            out["sqlite_1"] = await ingest(broker.port, per_sender, 0, [broker.proc.pid], None)
            out["sqlite_1_mllp_send"] = await ingest_mllp_send(
                broker.port, per_sender, 20_000_000, tmp, [broker.proc.pid], None)
    finally:
        if saved is not None:
            os.environ["MWL_DATABASE_URL"] = saved
    url = new_database(pg, "ingest1")
    with pg_broker(tmp / "pg1", url, "a", *options) as broker:
        assert broker.proc is not None
        out["postgres_1"] = await ingest(broker.port, per_sender, 0, [broker.proc.pid], pg)
        quiesce(pg, "ingest1")
        out["postgres_1_mllp_send"] = await ingest_mllp_send(
            broker.port, per_sender, 20_000_000, tmp, [broker.proc.pid], pg)
    # a finished run's tables are vacuumed by PostgreSQL in the background a minute later:
    # that work (and its CPU) would land in the next runs' figures
    pg.psql("DROP DATABASE ingest1 WITH (FORCE)")
    url = new_database(pg, "ingest2")
    a, b = pg_broker(tmp / "pg2", url, "a", *options), pg_broker(tmp / "pg2", url, "b", *options)
    with a, b, front([a, b]) as haproxy:
        await asyncio.to_thread(wait_up, haproxy, ["a", "b"])
        pids = [x.proc.pid if x.proc else None for x in (a, b)]
        before = transactions(pg, "ingest2")
        out["postgres_2_haproxy"] = await ingest(haproxy.port("mllp"), per_sender, 0, pids, pg)
        quiesce(pg, "ingest2")
        middle = transactions(pg, "ingest2")
        out["postgres_2_haproxy_mllp_send"] = await ingest_mllp_send(
            haproxy.port("mllp"), per_sender, 20_000_000, tmp, pids, pg)
        after = transactions(pg, "ingest2")
        out["postgres_2_haproxy"]["transactions"] = _minus(middle, before)
        out["postgres_2_haproxy_mllp_send"]["transactions"] = _minus(after, middle)
    for name, figures in out.items():
        print(f"ingest {name}: {figures}", flush=True)
    return out


def quiesce(pg: PostgresCluster, database: str) -> None:
    """Vacuum and analyse what the run before wrote, so that autovacuum does not do it during
    the next run (measured: PostgreSQL's CPU per message doubled in the run it landed in)."""
    pg.psql("VACUUM (ANALYZE)", database)


def transactions(pg: PostgresCluster, database: str) -> dict[str, int]:
    """The database's commits, rollbacks and deadlocks so far (pg_stat_database)."""
    row = pg.psql("SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database"
                  f" WHERE datname = '{database}'")[0]
    return {"commits": int(row[0]), "rollbacks": int(row[1]), "deadlocks": int(row[2])}


def _minus(end: dict[str, int], start: dict[str, int]) -> dict[str, int]:
    return {key: end[key] - start[key] for key in end}


# -- the soak --------------------------------------------------------------------------------

@dataclass
class Soak:
    haproxy: HAProxy
    brokers: list[BrokerUnderTest]
    pg: PostgresCluster
    total: int
    acked: int = 0
    acks: dict[str, str] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    non_aa: list[str] = field(default_factory=list)
    mpps: dict[str, str] = field(default_factory=dict)  # SOP instance UID → study UID
    mpps_retry_statuses: Counter[str] = field(default_factory=Counter)
    mpps_errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    killed_cpu: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str, **extra: Any) -> None:
        event = {"t": round(time.monotonic() - self.started, 2), "event": what, **extra}
        self.events.append(event)
        print(f"soak: {event}", flush=True)


async def ris_sender(soak: Soak, numbers: range) -> None:
    """A RIS: one connection; a message is resent on a new connection until answered AA."""
    client: MllpClient | None = None
    port = soak.haproxy.port("mllp")
    try:
        for number in numbers:
            raw = order(number).encode()
            control = f"MSG{number:08d}"
            while True:
                soak.attempts[control] += 1
                if soak.attempts[control] > ATTEMPTS:
                    raise RuntimeError(f"{control} unanswered after {ATTEMPTS} attempts")
                try:
                    if client is None:
                        client = MllpClient("127.0.0.1", port, timeout=15)
                        await client.connect()
                    ack = (await client.send(raw)).decode()
                except (MllpError, OSError, TimeoutError):
                    if client is not None:
                        with contextlib.suppress(OSError, MllpError):
                            await client.close()
                    client = None
                    await asyncio.sleep(0.05)
                    continue
                if "MSA|AA|" in ack:
                    soak.acks[control] = ack
                    soak.acked += 1
                    break
                code = ack.split("MSA|", 1)[1][:2] if "MSA|" in ack else "?"
                soak.non_aa.append(f"{control}: MSA {code} …{ack[-100:]}")
                await asyncio.sleep(0.2)  # AR/AE: a RIS resends after a pause
    finally:
        if client is not None:
            with contextlib.suppress(OSError, MllpError):
                await client.close()


async def modality(soak: Soak, station: str, numbers: range, pause: float) -> None:
    """MPPS pairs through HAProxy; a request cut by a kill is resent on a new association
    (on a resend 0x0111 to an N-CREATE or 0x0110 to an N-SET can mean 'already done')."""
    sop_class = ModalityPerformedProcedureStep
    assoc: dicom_wire.Association | None = None
    port = soak.haproxy.port("dicom")
    message_id = 0
    try:
        for n in numbers:
            uid = generate_uid()
            soak.mpps[uid] = study(n)
            for name in ("N-CREATE", "N-SET"):
                tries = 0
                while True:
                    tries += 1
                    message_id += 1
                    request = (dicom_wire.n_create(message_id, sop_class, uid,
                                                   dicom_wire.encode_dataset(in_progress(n)))
                               if name == "N-CREATE" else
                               dicom_wire.n_set(message_id, sop_class, uid,
                                                dicom_wire.encode_dataset(completed())))
                    try:
                        if assoc is None:
                            assoc = await asyncio.wait_for(dicom_wire.Association.open(
                                "127.0.0.1", port, station, "MWLBROKER", sop_class), 15)
                        response = await asyncio.wait_for(assoc.request(request), 15)
                    except (OSError, TimeoutError, asyncio.IncompleteReadError,
                            dicom_wire.WireError):
                        if assoc is not None:
                            assoc.writer.close()
                        assoc = None
                        if tries > ATTEMPTS:
                            soak.mpps_errors.append(f"{name} {uid}: unanswered")
                            break
                        await asyncio.sleep(0.1)
                        continue
                    status = response.status
                    if status == 0:
                        if tries > 1:
                            soak.mpps_retry_statuses[f"{name} resend 0x0000"] += 1
                        break
                    already = tries > 1 and (
                        (name == "N-CREATE" and status == 0x0111) or
                        (name == "N-SET" and status == 0x0110
                         and "no longer be updated" in response.comment))
                    if already:  # a resend of what the killed broker had done
                        soak.mpps_retry_statuses[f"{name} resend {status:#06x} (done)"] += 1
                        break
                    if status in (0xA700, 0xC001, 0x0110) and tries < ATTEMPTS:
                        # out of resources / database away: try again shortly
                        soak.mpps_retry_statuses[f"{name} {status:#06x}, retried"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    soak.mpps_errors.append(f"{name} {uid}: {response.status:#06x} "
                                            f"{response.comment}")
                    break
            await asyncio.sleep(pause)
    finally:
        if assoc is not None:
            with contextlib.suppress(Exception):
                await assoc.release()


async def chaos(soak: Soak, pg_restart: bool) -> None:
    """Three SIGKILLs of a random instance at ¼, ½ and ¾ of the acknowledged ORMs, each
    restarted a second later; with ``pg_restart`` PostgreSQL restarted (immediate) at ⅝."""
    rng = random.Random(13)
    plan: list[tuple[float, str]] = [(0.25, "kill"), (0.5, "kill"), (0.75, "kill")]
    if pg_restart:
        plan.insert(2, (0.625, "pg_restart"))
    for fraction, what in plan:
        while soak.acked < fraction * soak.total:
            await asyncio.sleep(0.01)
        if what == "pg_restart":
            at = time.monotonic()
            await asyncio.to_thread(soak.pg.restart, "immediate")
            soak.note("postgres restarted -m immediate", seconds=round(time.monotonic() - at, 2),
                      acked=soak.acked)
            continue
        victim = rng.choice(soak.brokers)
        assert victim.proc is not None
        soak.killed_cpu += cpu_seconds(victim.proc.pid)
        at = time.monotonic()
        victim.proc.kill()
        await asyncio.to_thread(victim.proc.wait, 10)
        soak.note("SIGKILL", node=victim.folder.name, acked=soak.acked)
        await asyncio.to_thread(soak.haproxy.wait_status, "mllp", victim.folder.name, "DOWN",
                                15.0)
        down = time.monotonic() - at
        await asyncio.sleep(max(0.0, 1.0 - down))
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(wait_up, soak.haproxy, [victim.folder.name])
        soak.note("restarted", node=victim.folder.name, haproxy_down_after_s=round(down, 2),
                  back_up_after_s=round(time.monotonic() - at, 2), acked=soak.acked)


def find(port: int, keys: dict[str, str]) -> tuple[int, list[str]]:
    with WorklistClient("127.0.0.1", port, timeout=60) as client:
        result = client.find(build_query(keys))
    return result.status, sorted(json.dumps(m.to_json_dict(), sort_keys=True)
                                 for m in result.matches)


async def soak_run(tmp: Path, pg: PostgresCluster, senders: int, per_sender: int,
                   modalities: int, pairs: int, pg_restart: bool) -> dict[str, Any]:
    url = new_database(pg, "soak")
    db = Db(url)
    ris = await Ris().start()
    destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris.port},"
                   " timeout: 5}]")
    a, b = (pg_broker(tmp / "soak", url, node, destination) for node in ("a", "b"))
    total = senders * per_sender
    results: dict[str, Any] = {"senders": senders, "orm_per_sender": per_sender,
                               "orms": total, "modalities": modalities,
                               "mpps_pairs_per_modality": pairs}
    try:
        with a, b, front([a, b]) as haproxy:
            await asyncio.to_thread(wait_up, haproxy, ["a", "b"])
            # the orders the MPPS refer to, in before the clock starts
            async with MllpClient("127.0.0.1", haproxy.port("mllp"), timeout=30) as client:
                for n in range(MPPS_FIRST, MPPS_FIRST + modalities * pairs):
                    assert b"MSA|AA|" in await client.send(order(n).encode())
            soak = Soak(haproxy, [a, b], pg, total)
            cpu0 = {x.folder.name: cpu_seconds(x.proc.pid if x.proc else None) for x in (a, b)}
            pg0 = pg_cpu_seconds(pg)
            t0 = time.perf_counter()
            mpps_pause = 0.15  # the modalities' pairs spread over the whole soak

            async def timed(work: Any) -> float:
                await work
                return time.perf_counter() - t0

            async def all_of(*works: Any) -> float:
                await asyncio.gather(*works)
                return time.perf_counter() - t0

            orm_elapsed, mpps_elapsed, elapsed = await asyncio.gather(
                all_of(*(ris_sender(soak, range(SOAK_FIRST + k * per_sender,
                                                SOAK_FIRST + (k + 1) * per_sender))
                         for k in range(senders))),
                all_of(*(modality(soak, f"CT{k + 1:02d}",
                                  range(MPPS_FIRST + k * pairs, MPPS_FIRST + (k + 1) * pairs),
                                  mpps_pause) for k in range(modalities))),
                timed(chaos(soak, pg_restart)))
            elapsed = max(elapsed, orm_elapsed, mpps_elapsed)
            broker_cpu = soak.killed_cpu + sum(
                cpu_seconds(x.proc.pid if x.proc else None) for x in (a, b)) - sum(cpu0.values())
            pg_cpu = pg_cpu_seconds(pg) - pg0  # (a PostgreSQL restart resets this counter)
            results["seconds"] = round(elapsed, 2)
            results["orm_seconds"] = round(orm_elapsed, 2)
            results["orm_per_s"] = round(total / orm_elapsed, 1)
            results["mpps_pairs"] = len(soak.mpps)
            results["mpps_seconds"] = round(mpps_elapsed, 2)
            results["mpps_pairs_per_s"] = round(len(soak.mpps) / mpps_elapsed, 1)
            results["mpps_pause_between_pairs_s"] = mpps_pause
            results["broker_cpu_s"] = round(broker_cpu, 2)
            results["broker_cpu_ms_per_orm_incl_mpps_load"] = round(broker_cpu / total * 1000, 3)
            # a PostgreSQL restart resets the postmaster's counters: no figure then
            results["postgres_cpu_s"] = None if pg_restart else round(pg_cpu, 2)
            results["events"] = soak.events
            results["resent_messages"] = sum(1 for c in soak.attempts.values() if c > 1)
            results["non_aa_answers"] = {
                "count": len(soak.non_aa), "examples": soak.non_aa[:3],
                "by_code": dict(Counter(x.split("MSA ")[1][:2] for x in soak.non_aa))}
            results["mpps_retry_statuses"] = dict(soak.mpps_retry_statuses)
            results["mpps_errors"] = {"count": len(soak.mpps_errors),
                                      "examples": soak.mpps_errors[:5]}

            # outbox: wait until nothing is pending
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and db.query(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]:
                await asyncio.sleep(0.5)
            results["outbox_states"] = dict(db.query(
                "SELECT state, COUNT(*) FROM outbox GROUP BY state"))
            cm = Counter(segment(m, "ZDS")[1].split("^")[0] for m in ris.received
                         if segment(m, "ORC")[5] == "CM")
            completed_studies = set(soak.mpps.values())
            results["ris_received"] = {
                "messages": len(ris.received),
                "completed_studies_with_cm": len(completed_studies & set(cm)),
                "completed_studies": len(completed_studies),
                "cm_repeats": sum(c - 1 for s, c in cm.items() if s in completed_studies)}
            results["outbox_repeated_control_ids"] = sum(
                c - 1 for c in Counter(m.split("\r")[0].split("|")[9]
                                       for m in ris.received).values())

            results["outbox_order"] = outbox_order(db, ris)
            results["checks"] = checks(db, soak, [a, b])
            results["cfind"] = await cfind_checks(a, b)
    finally:
        await ris.stop()
    return results


def outbox_order(db: Db, ris: Ris) -> dict[str, Any]:
    """Per order key, the RIS's first arrivals of the outbox's control IDs are in outbox
    order (delivery in order per order)."""
    first_seen: dict[str, int] = {}
    for i, message in enumerate(ris.received):
        first_seen.setdefault(message.split("\r")[0].split("|")[9], i)
    lanes: dict[str, list[str]] = {}
    for key, control in db.query("SELECT order_key, control_id FROM outbox ORDER BY id"):
        lanes.setdefault(key, []).append(control)
    missing = [c for controls in lanes.values() for c in controls if c not in first_seen]
    out_of_order = [key for key, controls in lanes.items()
                    if [c for c in sorted(controls, key=lambda c: first_seen.get(c, -1))]
                    != controls]
    return {"order_keys": len(lanes), "not_received": len(missing),
            "out_of_order_keys": len(out_of_order), "examples": out_of_order[:3]}


def checks(db: Db, soak: Soak, brokers: list[BrokerUnderTest]) -> dict[str, Any]:
    rows = db.query("SELECT control_id, ack FROM message_log WHERE outcome = 'AA' AND "
                    "duplicate_of IS NULL AND control_id LIKE 'MSG05%'")
    originals = Counter(cid for cid, _ in rows)
    stored_ack = {cid: ack for cid, ack in rows}
    not_once = sorted(c for c in soak.acks if originals[c] != 1)
    extra = sorted(c for c in originals if c not in soak.acks)

    def norm(text: str) -> str:
        return text.replace("\n", "\r").strip("\r")

    ack_differs = sorted(c for c in soak.acks if c in stored_ack
                         and norm(stored_ack[c]) != norm(soak.acks[c]))
    procedures = db.query("SELECT COUNT(*) FROM procedures WHERE accession LIKE 'A5%'")[0][0]
    mpps_rows = db.query("SELECT sop_instance_uid, status FROM mpps")
    mpps_count = Counter(uid for uid, _ in mpps_rows)
    mpps_status = dict(mpps_rows)
    mpps_not_once = [u for u in soak.mpps if mpps_count[u] != 1]
    mpps_not_completed = [u for u in soak.mpps if mpps_status.get(u) != "COMPLETED"]
    integrity = db.integrity()
    out = {
        "acked_messages": len(soak.acks),
        "originals_not_exactly_once": {"count": len(not_once), "examples": not_once[:5]},
        "originals_never_acked": {"count": len(extra), "examples": extra[:5]},
        "stored_ack_differs_from_received": {
            "count": len(ack_differs),
            "examples": [{"control_id": c, "received": soak.acks[c],
                          "stored": stored_ack[c]} for c in ack_differs[:2]]},
        "soak_procedures": procedures,
        "mpps_sent": len(soak.mpps), "mpps_not_stored_once": len(mpps_not_once),
        "mpps_not_completed": len(mpps_not_completed),
        "amcheck_problems": integrity[:5],
        "broker_error_lines": {b.folder.name: [line[:300] for line in b.log_text().splitlines()
                                               if "level=ERROR" in line
                                               or "Traceback" in line][:4] for b in brokers},
    }
    out["ok"] = (not not_once and not extra and not ack_differs and procedures == soak.total
                 and not mpps_not_once and not mpps_not_completed and not integrity
                 and not soak.mpps_errors)
    return out


async def cfind_checks(a: BrokerUnderTest, b: BrokerUnderTest) -> dict[str, Any]:
    identifiers = {
        "accession": query_keys(["AccessionNumber=A5000007"]),
        "patient_prefix": query_keys(["PatientName=PATIENT^NUMBER500012*"]),
        "patient_prefix_1000": query_keys(["PatientName=PATIENT^NUMBER5007*"]),
        "patient_id": query_keys(["PatientID=P5001234"]),
    }
    out: dict[str, Any] = {}
    for name, keys in identifiers.items():
        first = await asyncio.to_thread(find, a.dicom_port, keys)
        second = await asyncio.to_thread(find, b.dicom_port, keys)
        out[name] = {"status": [hex(first[0]), hex(second[0])], "matches": len(first[1]),
                     "identical": first == second}
    out["all_identical"] = all(v["identical"] for v in out.values())
    return out


async def ingest_only(per_sender: int, options: tuple[str, ...]) -> int:
    """The ingest figures alone (SQLite, PostgreSQL with 1 and 2 instances), printed;
    ``options`` (``key=value``) for the PostgreSQL brokers."""
    with tempfile.TemporaryDirectory() as tmp_name, \
            PostgresCluster(PG_BENCH_SETTINGS, durable=True) as pg:
        figures = await ingest_figures(Path(tmp_name), pg, per_sender, options)
    print(json.dumps({"ingest": figures, "others": others()}))
    return 0


async def main(quick: bool, pg_restart: bool) -> int:
    pynetdicom_patches.apply(fast_path=True)
    ingest_per_sender = 250 if quick else 2500
    senders, per_sender = 8, (1000 if quick else 2500)
    modalities, pairs = (4, 100) if quick else (8, 250)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "command": command,
                               "pg_restart": pg_restart, "others_before": others()}
    with tempfile.TemporaryDirectory() as tmp_name, \
            PostgresCluster(PG_BENCH_SETTINGS, durable=True) as pg:
        tmp = Path(tmp_name)
        version = pg.psql("SHOW server_version")[0][0]
        results["postgres"] = {"version": version, "fsync": pg.psql("SHOW fsync")[0][0],
                               "synchronous_commit": pg.psql("SHOW synchronous_commit")[0][0],
                               "folder": str(pg.folder)}
        results["ingest"] = await ingest_figures(tmp, pg, ingest_per_sender)
        results["others_mid"] = others()
        results["soak"] = await soak_run(tmp, pg, senders, per_sender, modalities, pairs,
                                         pg_restart)
    results["others_after"] = others()
    ing, soak, chk = results["ingest"], results["soak"], results["soak"]["checks"]

    def row(name: str) -> tuple[str, ...]:
        f = ing[name]
        return (f"ingest 8 senders, {name}", f"{f['per_s']} msg/s",
                f"p50 {f['p50_ms']} / p99 {f['p99_ms']} ms" if "p50_ms" in f else
                "wall time incl. start-up",
                f"broker {f['broker_cpu_ms_per_msg']} ms CPU/msg"
                + (f", PostgreSQL {f['postgres_cpu_ms_per_msg']}" if "postgres_cpu_ms_per_msg"
                   in f else "") + (f", client {f['client_cpu_ms_per_msg']}" if
                                    "client_cpu_ms_per_msg" in f else ""),
                f"{f['messages']} msgs, {f['failures']} non-AA")

    table = [
        ("figure", "measured", "latency", "CPU", "notes"),
        row("sqlite_1"), row("postgres_1"), row("postgres_2_haproxy"),
        row("sqlite_1_mllp_send"), row("postgres_1_mllp_send"),
        row("postgres_2_haproxy_mllp_send"),
        ("soak ORMs (8 senders, 3 SIGKILLs" + (", PG restart" if pg_restart else "") + ")",
         f"{soak['orm_per_s']} ORM/s", f"{soak['orm_seconds']} s",
         f"broker {soak['broker_cpu_ms_per_orm_incl_mpps_load']} ms CPU/ORM (incl. MPPS)",
         f"{soak['orms']} ORMs, {soak['resent_messages']} resent, "
         f"{soak['non_aa_answers']['count']} non-AA answers"),
        ("soak MPPS pairs", f"{soak['mpps_pairs']} ({soak['mpps_pairs_per_s']}/s, paced)",
         f"{soak['mpps_seconds']} s", "",
         f"{soak['mpps_errors']['count']} errors, retries {soak['mpps_retry_statuses']}"),
        ("AA'd stored once / ACK differs", f"{chk['acked_messages']} acked",
         "", "", f"not once {chk['originals_not_exactly_once']['count']}, "
         f"ack differs {chk['stored_ack_differs_from_received']['count']}"),
        ("MPPS once & COMPLETED", f"{chk['mpps_sent']} sent", "", "",
         f"not once {chk['mpps_not_stored_once']}, not COMPLETED {chk['mpps_not_completed']}"),
        ("outbox", f"{soak['outbox_states']}", "", "",
         f"RIS: {soak['ris_received']}; order: {soak['outbox_order']}"),
        ("C-FIND identical a/b", f"{soak['cfind']['all_identical']}", "", "", ""),
        ("amcheck", "clean" if not chk["amcheck_problems"] else str(chk["amcheck_problems"]),
         "", "", ""),
        ("checks ok", f"{chk['ok']}", "", "", ""),
    ]
    name = ("ha_soak_quick" if quick else "ha_soak") + (
        "_pg_restart" if pg_restart and quick else "")
    write_results(name, results, table)
    md = Path(__file__).resolve().parent / "results" / f"{name}.md"
    md.write_text(md.read_text() + f"\nCommand: `{command}`\n\nSoak events: "
                  f"{json.dumps(soak['events'])}\n\nOther load (before / mid / after): "
                  f"{results['others_before']['loadavg']} / {results['others_mid']['loadavg']}"
                  f" / {results['others_after']['loadavg']}\n\n```\n"
                  + "\n".join(results["others_mid"]["top_processes"]) + "\n```\n")
    order_ok = not soak["outbox_order"]["not_received"] and \
        not soak["outbox_order"]["out_of_order_keys"] and \
        set(soak["outbox_states"]) <= {"delivered"}
    return 0 if chk["ok"] and soak["cfind"]["all_identical"] and order_ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short bounded run")
    parser.add_argument("--pg-restart", action="store_true",
                        help="restart PostgreSQL (immediate) mid-soak in a quick run too "
                             "(the full run always does; results: ha_soak_quick_pg_restart)")
    parser.add_argument("--ingest-only", type=int, metavar="PER_SENDER",
                        help="only the ingest figures, PER_SENDER ORMs from each of 8 senders, "
                             "printed (no results file)")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        help="key=value setting of the PostgreSQL brokers (with --ingest-only)")
    args = parser.parse_args()
    if args.ingest_only:
        sys.exit(asyncio.run(ingest_only(args.ingest_only, tuple(args.options))))
    sys.exit(asyncio.run(main(args.quick, args.pg_restart or not args.quick)))
