"""Live fuzz campaign against the real broker, bounded in time: mutated and truncated MLLP
frames, random byte streams, slow one-byte-a-second clients, a stalled half frame, 100 MB
frames, random bytes, mutated A-ASSOCIATE-RQs, mutated P-DATA PDUs, random C-FIND
identifiers and an oversized DICOM PDU, while a well-behaved client keeps sending valid ORMs
and C-ECHOs. Every valid request must succeed, every complete HL7 frame must be answered, the
broker must stay up with bounded memory (RSS sampled from /proc) and exit 0 on SIGTERM.

    python benchmarks/fuzz_live.py                 # 90 s, writes benchmarks/results/fuzz_live.*
    python benchmarks/fuzz_live.py --seconds 15    # short (what the pytest test runs)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from benchmarks import dicom_wire
from benchmarks.common import BrokerUnderTest, machine, percentile, write_results
from broker.hl7.mllp import MllpClient, frame
from tests.support.samples import order

ROOT = Path(__file__).resolve().parent.parent
MWL_FIND = ModalityWorklistInformationFind
BIG_FRAME = 100 * 1024 * 1024
IDLE_TIMEOUT = 3.0
RSS_BOUND_MB = 160.0  # growth allowed over the whole campaign (caches, heap, 1 MiB buffers)
BIG_BOUND_MB = 32.0  # growth allowed while one 100 MB frame or PDU is being sent
NETWORK_ERRORS = (OSError, EOFError, TimeoutError, dicom_wire.WireError)
SLOW_MESSAGE = (b"MSH|^~\\&|SLOW|HOSP|MWLBROKER|RAD|20261122||ADT^A08|SLOW%d|P|2.3.1\r"
                b"PID|||S%d^^^HOSP||SLOW^ONE\r")
HL7_INSERTS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\r\n", b"\\X00\\", b"\\XFF\\",
               b"\\X\\", b'""', b"MSH|^~\\&|", b"\x00", b"\xff\xfe", "é".encode(),
               "山".encode("gb18030"), b"\\E\\", b"UNICODE UTF-8", b"8859/1", b"ISO IR87"]
MWL_TAGS = [(0x0008, 0x0005), (0x0008, 0x0050), (0x0008, 0x0060), (0x0010, 0x0010),
            (0x0010, 0x0020), (0x0010, 0x0030), (0x0020, 0x000D), (0x0032, 0x1060),
            (0x0040, 0x0001), (0x0040, 0x0002), (0x0040, 0x0003), (0x0040, 0x0009),
            (0x0040, 0x0020), (0x0040, 0x1001), (0x0040, 0x0100), (0x0008, 0x1110),
            (0x0010, 0x1030), (0x7FE0, 0x0010), (0x0009, 0x0010), (0xFFFE, 0xE000)]


@dataclass
class Tally:
    """What one kind of client did: outcomes by name, and failures that break the rules."""

    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def fail(self, text: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(text)
        self.outcomes["FAILED"] += 1


class Campaign:
    def __init__(self, broker: BrokerUnderTest, seconds: float, seed: int) -> None:
        self.broker, self.seconds = broker, seconds
        self.rng = random.Random(seed)
        self.deadline = time.monotonic() + seconds
        self.tallies: dict[str, Tally] = {}
        self.rss: list[float] = []
        self.big_growth: list[float] = []  # RSS growth (MB) while a 100 MB input was sent
        self.valid = [p.read_bytes() for p in sorted((ROOT / "testdata" / "hl7").glob("*.hl7"))]
        self.valid += [order(n).encode() for n in range(20)]

    def rss_mark(self) -> int:
        return len(self.rss)

    def note_growth(self, mark: int) -> None:
        """RSS growth since ``mark`` (the broker's memory while one big input arrived)."""
        before = self.rss[mark - 1] if mark else (self.rss[0] if self.rss else 0.0)
        during = self.rss[mark:] or [before]
        self.big_growth.append(max(during) - before)

    def tally(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())

    def running(self) -> bool:
        return time.monotonic() < self.deadline and self.broker_alive()

    def broker_alive(self) -> bool:
        return self.broker.proc is not None and self.broker.proc.poll() is None

    async def repeat(self, name: str, action: Callable[[random.Random, Tally], Awaitable[None]],
                     pause: float = 0.0) -> None:
        """Run ``action`` over and over until time is up (each run bounded by its timeouts)."""
        rng = random.Random(self.rng.random())
        tally = self.tally(name)
        while self.running():
            try:
                await asyncio.wait_for(action(rng, tally), 30)
            except TimeoutError:
                tally.outcomes["client timeout"] += 1
            await asyncio.sleep(pause)

    # -- the well-behaved clients ---------------------------------------------------------------

    async def good_orders(self) -> None:
        tally = self.tally("valid ORM (must all be AA)")
        n = 7_000_000
        client = MllpClient("127.0.0.1", self.broker.port, timeout=15)
        try:
            while self.running():
                n += 1
                started = time.perf_counter()
                try:
                    answer = await client.send(order(n).encode())
                except (OSError, TimeoutError) as exc:
                    tally.fail(f"MSG{n:08d}: {type(exc).__name__} {exc}")
                    await client.close()
                    continue
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                if b"\rMSA|AA|" in answer:
                    tally.outcomes["AA"] += 1
                else:
                    tally.fail(f"MSG{n:08d}: {answer[:200]!r}")
                await asyncio.sleep(0.02)
        finally:
            await client.close()

    async def good_echoes(self) -> None:
        tally = self.tally("valid C-ECHO, new association each (must all succeed)")
        while self.running():
            started = time.perf_counter()
            try:
                assoc = await asyncio.wait_for(dicom_wire.Association.open(
                    "127.0.0.1", self.broker.dicom_port, "GOODSCU", "MWLBROKER",
                    dicom_wire.VERIFICATION), 15)
                response = await asyncio.wait_for(assoc.request(dicom_wire.c_echo(1)), 15)
                await asyncio.wait_for(assoc.release(), 15)
            except NETWORK_ERRORS as exc:
                tally.fail(f"{type(exc).__name__}: {exc}")
                continue
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.status == 0:
                tally.outcomes["0x0000"] += 1
            else:
                tally.fail(f"status {response.status:#06x}")
            await asyncio.sleep(0.05)

    # -- MLLP fuzzing ---------------------------------------------------------------------------

    def mutate(self, rng: random.Random, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(b) + 1)
            op = rng.randrange(6)
            if op == 0 and b:
                b[pos % len(b)] = rng.randrange(256)
            elif op == 1:
                b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif op == 2:
                del b[pos:pos + rng.randint(1, 40)]
            elif op == 3:
                b[pos:pos] = b[pos:pos + rng.randint(1, 60)] * rng.randint(1, 30)
            elif op == 4:
                b[pos:pos] = rng.choice(HL7_INSERTS)
            else:
                del b[pos:]
        return bytes(b).replace(b"\x0b", b"").replace(b"\x1c", b"")

    async def mutated_frames(self, rng: random.Random, tally: Tally) -> None:
        """A few mutated messages on one connection: every frame must be answered."""
        async with MllpClient("127.0.0.1", self.broker.port, timeout=15) as client:
            for _ in range(rng.randint(1, 10)):
                payload = self.mutate(rng, rng.choice(self.valid))
                try:
                    answer = await client.send(payload)
                except (OSError, TimeoutError) as exc:
                    tally.fail(f"{type(exc).__name__} {exc} for {payload[:120]!r}")
                    return
                code = answer.split(b"\rMSA|")[1][:2] if b"\rMSA|" in answer else b"no MSA"
                tally.outcomes[code.decode("latin-1")] += 1
                if code == b"no MSA":
                    tally.fail(f"answer without MSA: {answer[:120]!r}")

    async def truncated_frames(self, rng: random.Random, tally: Tally) -> None:
        """Part of a frame, then the connection closes (or random bytes with frame marks)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.port)
        try:
            if rng.random() < 0.5:
                data = frame(rng.choice(self.valid))
                writer.write(data[:rng.randrange(1, len(data) - 1)])
                tally.outcomes["cut frame"] += 1
            else:
                writer.write(bytes(rng.choice([0x0B, 0x1C, 0x0D, rng.randrange(256)])
                                   for _ in range(rng.randint(1, 3000))))
                tally.outcomes["random bytes"] += 1
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(65536), rng.uniform(0, 0.3))
        except OSError:
            tally.outcomes["reset by broker"] += 1
        finally:
            writer.close()

    async def slow_client(self, index: int) -> None:
        """One byte a second: kept open (never idle for the timeout), answered once complete."""
        tally = self.tally("slow client, 1 byte/s")
        data = frame(SLOW_MESSAGE % (index, index))
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.port)
        try:
            for byte in data:
                if not self.running():
                    tally.outcomes["still open at the end"] += 1
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            answer = await asyncio.wait_for(reader.read(65536), 15)
            tally.outcomes["answered" if b"MSA|" in answer else "no answer"] += 1
        except (OSError, TimeoutError) as exc:
            tally.fail(f"slow client {index}: {type(exc).__name__} {exc}")
        finally:
            writer.close()

    async def stalled_client(self) -> None:
        """Half a frame, then silence: the broker closes it after its idle timeout."""
        tally = self.tally(f"stalled half frame (idle timeout {IDLE_TIMEOUT} s)")
        while self.running() and self.deadline - time.monotonic() > IDLE_TIMEOUT + 5:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.port)
            writer.write(frame(self.valid[0])[:40])
            started = time.monotonic()
            try:
                closed = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT + 5) == b""
                tally.outcomes["closed by the broker" if closed else "unexpected answer"] += 1
                if closed:
                    tally.latencies_ms.append((time.monotonic() - started) * 1000)
            except TimeoutError:
                tally.fail("a stalled connection outlived the idle timeout")
            except OSError:
                tally.outcomes["reset by the broker"] += 1
            finally:
                writer.close()

    async def big_frame(self, rng: random.Random, tally: Tally) -> None:
        """100 MB inside one frame: answered AR, closed, never buffered."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.port)
        header = b"\x0b" + self.valid[-1].split(b"\r")[0] + b"\rNTE|1||"
        sent = 0
        answer = b""

        async def pour() -> None:
            nonlocal sent
            writer.write(header)
            chunk = bytes(rng.randrange(0x20, 0x7F) for _ in range(4096)) * 256  # 1 MiB
            while sent < BIG_FRAME:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(b"\x1c\r")
            await writer.drain()

        mark = self.rss_mark()
        pouring = asyncio.create_task(pour())
        with contextlib.suppress(OSError, TimeoutError):
            answer = await asyncio.wait_for(reader.read(65536), 30)
        with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pouring, 30)
        writer.close()
        await asyncio.sleep(0.3)
        self.note_growth(mark)
        if b"MSA|AR|" in answer:
            tally.outcomes["AR, then closed"] += 1
            tally.latencies_ms.append(sent / 1024 / 1024)  # MiB sent before the close
        else:
            tally.fail(f"no AR for a {BIG_FRAME} byte frame: {answer[:120]!r}")
        await asyncio.sleep(rng.uniform(2, 5))

    # -- DICOM fuzzing --------------------------------------------------------------------------

    async def exchange(self, data: bytes, tally: Tally, wait: float = 1.0) -> None:
        """Send bytes to the DICOM port and note the first PDU type that comes back."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.dicom_port)
        try:
            writer.write(data)
            await writer.drain()
            head = await asyncio.wait_for(reader.read(1), wait)
            tally.outcomes[f"PDU {head[0]:#04x}" if head else "closed"] += 1
        except TimeoutError:
            tally.outcomes["no answer (waiting for more)"] += 1
        except OSError:
            tally.outcomes["reset"] += 1
        finally:
            writer.close()

    async def random_dicom_bytes(self, rng: random.Random, tally: Tally) -> None:
        prefix = bytes([rng.choice([1, 2, 3, 4, 5, 6, 7, rng.randrange(256)]), 0])
        await self.exchange(prefix + rng.randbytes(rng.randint(0, 2000)), tally)

    async def mutated_associate(self, rng: random.Random, tally: Tally) -> None:
        request = bytearray(dicom_wire.associate_rq("FUZZ", "MWLBROKER", MWL_FIND))
        for _ in range(rng.randint(1, 6)):
            request[rng.randrange(len(request))] = rng.randrange(256)
        if rng.random() < 0.3:
            del request[rng.randrange(len(request)):]
        await self.exchange(bytes(request), tally)

    async def association(self) -> dicom_wire.Association:
        return await asyncio.wait_for(dicom_wire.Association.open(
            "127.0.0.1", self.broker.dicom_port, "FUZZ", "MWLBROKER", MWL_FIND), 10)

    async def mutated_pdata(self, rng: random.Random, tally: Tally) -> None:
        """A valid association, then a C-FIND whose PDUs are mutated."""
        try:
            assoc = await self.association()
        except NETWORK_ERRORS as exc:
            tally.fail(f"association refused: {exc}")
            return
        request = bytearray(dicom_wire.c_find(1, MWL_FIND, random_identifier(rng)))
        for _ in range(rng.randint(1, 4)):
            request[rng.randrange(len(request))] = rng.randrange(256)
        assoc.writer.write(bytes(request))
        try:
            await assoc.writer.drain()
            kind, _ = await asyncio.wait_for(assoc._pdu(), 2)
            tally.outcomes[f"PDU {kind:#04x}"] += 1
        except TimeoutError:
            tally.outcomes["no answer (waiting for more)"] += 1
        except (OSError, EOFError):
            tally.outcomes["closed"] += 1
        finally:
            assoc.writer.close()

    async def random_queries(self, rng: random.Random, tally: Tally) -> None:
        """Random identifiers in well-formed C-FIND requests: each gets a final status."""
        try:
            assoc = await self.association()
        except NETWORK_ERRORS as exc:
            tally.fail(f"association refused: {exc}")
            return
        try:
            for message_id in range(1, rng.randint(2, 12)):
                request = dicom_wire.c_find(message_id, MWL_FIND, random_identifier(rng))
                _, final = await asyncio.wait_for(assoc.find(request), 15)
                tally.outcomes[f"{final.status:#06x}"] += 1
            await asyncio.wait_for(assoc.release(), 10)
        except (OSError, EOFError, TimeoutError, dicom_wire.WireError) as exc:
            tally.fail(f"C-FIND with a random identifier got no final status: "
                       f"{type(exc).__name__} {exc}")
            assoc.writer.close()

    async def big_pdu(self, rng: random.Random, tally: Tally) -> None:
        """A P-DATA-TF PDU that claims and carries 100 MB on an established association."""
        try:
            assoc = await self.association()
        except NETWORK_ERRORS as exc:
            tally.fail(f"association refused: {exc}")
            return
        writer = assoc.writer
        sent = 0
        mark = self.rss_mark()
        try:
            writer.write(struct.pack(">BxI", 0x04, BIG_FRAME))
            chunk = rng.randbytes(1 << 20)
            while sent < BIG_FRAME:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 20)
                sent += len(chunk)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(assoc.reader.read(1), 2)
            tally.outcomes["all sent"] += 1
        except (OSError, TimeoutError):
            tally.outcomes["closed by the broker"] += 1
        finally:
            tally.latencies_ms.append(sent / 1024 / 1024)
            writer.close()
        await asyncio.sleep(0.3)
        self.note_growth(mark)
        await asyncio.sleep(rng.uniform(2, 5))

    # -- memory ---------------------------------------------------------------------------------

    async def sample_rss(self) -> None:
        while self.running():
            assert self.broker.proc is not None
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.broker.proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append(int(line.split()[1]) / 1024)
            await asyncio.sleep(0.1)

    async def run(self) -> None:
        jobs: list[Awaitable[None]] = [
            self.good_orders(), self.good_echoes(), self.sample_rss(), self.stalled_client(),
            *(self.slow_client(k) for k in range(3)),
            self.repeat("mutated HL7 frames (each must be answered)", self.mutated_frames),
            self.repeat("mutated HL7 frames (each must be answered)", self.mutated_frames),
            self.repeat("truncated frames and random bytes (MLLP)", self.truncated_frames,
                        0.01),
            self.repeat("100 MB frame (AR, MiB sent before close)", self.big_frame),
            self.repeat("random bytes at the DICOM port", self.random_dicom_bytes, 0.01),
            self.repeat("mutated A-ASSOCIATE-RQ", self.mutated_associate, 0.01),
            self.repeat("mutated C-FIND PDUs", self.mutated_pdata, 0.01),
            self.repeat("random C-FIND identifiers (each must get a final status)",
                        self.random_queries),
            self.repeat("100 MB DICOM PDU (MiB sent before close)", self.big_pdu),
        ]
        await asyncio.gather(*jobs)


def random_identifier(rng: random.Random) -> bytes:
    """Implicit VR elements of worklist tags with random values, lengths and nesting."""
    out = bytearray()
    for group, element in sorted(rng.sample(MWL_TAGS, rng.randint(0, 8))):
        if (group, element) in ((0x0040, 0x0100), (0x0008, 0x1110)) or rng.random() < 0.05:
            items = b"".join(b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + random_identifier(rng)[:200]
                             + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
                             for _ in range(rng.choice([0, 1, 1, 2])))
            out += struct.pack("<HHI", group, element, 0xFFFFFFFF) + items
            out += b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
            continue
        value = rng.choice([b"", b"*", b"CT01", b"20261122-", b"-", b"\\", b"1.2.3\\1.2.4",
                            b"DOE^*", b"=\xe5\xb1\xb1", b"?", rng.randbytes(rng.randint(0, 40)),
                            str(rng.random()).encode()])
        length = len(value) if rng.random() < 0.9 else rng.choice([len(value) + 1, 0xFFFF])
        out += struct.pack("<HHI", group, element, length) + value
    if rng.random() < 0.1:
        out += rng.randbytes(rng.randint(1, 30))
    return bytes(out)


def summary(campaign: Campaign, exit_code: int, seconds: float) -> dict[str, Any]:
    rss = campaign.rss or [float("nan")]
    baseline = min(rss[:10])
    clients = {}
    for name, tally in campaign.tallies.items():
        entry: dict[str, Any] = {"outcomes": dict(tally.outcomes), "failures": tally.failures}
        if tally.latencies_ms:
            entry["p50"] = round(percentile(tally.latencies_ms, 50), 1)
            entry["p99"] = round(percentile(tally.latencies_ms, 99), 1)
            entry["max"] = round(max(tally.latencies_ms), 1)
        clients[name] = entry
    errors = [f"{name}: {f}" for name, t in campaign.tallies.items() for f in t.failures]
    good = campaign.tallies["valid ORM (must all be AA)"].outcomes["AA"]
    echoes = campaign.tallies["valid C-ECHO, new association each (must all succeed)"]
    if not good or not echoes.outcomes["0x0000"]:
        errors.append("the well-behaved clients got nothing through")
    peak = max(rss)
    big = max(campaign.big_growth, default=0.0)
    if not campaign.big_growth:
        errors.append("no 100 MB frame or PDU was sent")
    elif big > BIG_BOUND_MB:
        errors.append(f"broker RSS grew {big:.0f} MB while a 100 MB input arrived "
                      f"(bound {BIG_BOUND_MB} MB): it was buffered")
    if not peak - baseline <= RSS_BOUND_MB:
        errors.append(f"broker RSS grew {peak - baseline:.0f} MB over {baseline:.0f} MB "
                      f"(bound {RSS_BOUND_MB} MB)")
    alive = exit_code == 0
    if not alive:
        errors.append(f"broker exit code on SIGTERM: {exit_code} (or it died during the run)")
    return {"seconds": round(seconds, 1), "rss_mb": {"baseline": round(baseline, 1),
            "peak": round(peak, 1), "bound_over_baseline": RSS_BOUND_MB, "samples": len(rss),
            "largest_growth_during_a_100MB_input": round(big, 1),
            "bound_during_a_100MB_input": BIG_BOUND_MB,
            "each_tenth": [round(rss[min(len(rss) - 1, len(rss) * k // 10)], 1)
                           for k in range(1, 11)]},
            "sigterm_exit_code": exit_code, "clients": clients, "errors": errors}


async def campaign_run(folder: Path, seconds: float, seed: int) -> dict[str, Any]:
    broker = BrokerUnderTest(folder, f"mllp.idle_timeout={IDLE_TIMEOUT}",
                             "logging.level=WARNING")
    await asyncio.to_thread(broker.start)
    try:
        await asyncio.sleep(0.5)
        campaign = Campaign(broker, seconds, seed)
        started = time.perf_counter()
        await campaign.run()
        elapsed = time.perf_counter() - started
        died = not campaign.broker_alive()
        exit_code = await asyncio.to_thread(broker.stop)
        result = summary(campaign, -1 if died else exit_code, elapsed)
        log = broker.log_text()
        result["tracebacks_in_log"] = log.count("Traceback")
        result["seed"] = seed
        return result
    finally:
        await asyncio.to_thread(broker.kill)


def report(results: dict[str, Any], name: str) -> None:
    rows: list[tuple[str, ...]] = [("client", "outcomes", "failures", "p50 / p99 / max")]
    for client, entry in results["clients"].items():
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(entry["outcomes"].items()))
        figures = (f"{entry['p50']} / {entry['p99']} / {entry['max']}" if "p50" in entry
                   else "")
        rows.append((client, outcomes, str(len(entry["failures"])), figures))
    rss = results["rss_mb"]
    rows.append(("broker RSS MB: idle / peak (bound: idle + "
                 f"{rss['bound_over_baseline']:.0f})", f"{rss['baseline']} / {rss['peak']}",
                 "", ""))
    rows.append(("broker RSS MB: largest growth while one 100 MB frame or PDU arrived "
                 f"(bound {rss['bound_during_a_100MB_input']:.0f})",
                 f"{rss['largest_growth_during_a_100MB_input']}", "", ""))
    rows.append(("broker RSS MB at each tenth of the run",
                 " · ".join(str(v) for v in rss["each_tenth"]), "", ""))
    rows.append(("broker exit code on SIGTERM / tracebacks in its log",
                 f"{results['sigterm_exit_code']} / {results['tracebacks_in_log']}", "", ""))
    rows.append(("all checks pass", "yes" if not results["errors"] else "NO", "", ""))
    write_results(name, results, rows)


def main(seconds: float, seed: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(campaign_run(Path(tmp), seconds, seed))
    results["machine"] = machine()
    report(results, "fuzz_live" if seconds >= 60 else "fuzz_live_quick")
    for error in results["errors"]:
        print("FAILED:", error)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="campaign length (90)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.exit(main(args.seconds, args.seed))
