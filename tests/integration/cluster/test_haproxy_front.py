"""Two brokers on one PostgreSQL behind the real HAProxy (issue 13): MLLP and DICOM frontends,
each broker checked on its admin ``/readyz``. Orders are balanced across the brokers, a C-FIND
gets the same answer from either, and when one broker is SIGKILLed HAProxy takes it out, the
RIS's resends are acknowledged by the other, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from broker.dicom.client import WorklistClient, build_query, query_keys
from broker.hl7.mllp import MllpClient, MllpError
from tests.integration.cluster.conftest import Cluster
from tests.support.broker import BrokerProcess
from tests.support.haproxy import Backend, HAProxy, Server
from tests.support.mllp import msa
from tests.support.samples import order


def front(brokers: list[BrokerProcess]) -> HAProxy:
    """HAProxy with an ``mllp`` and a ``dicom`` frontend; servers named by node."""
    def backend(port_of: str) -> Backend:
        return Backend([Server("127.0.0.1", getattr(b, port_of), check_port=b.admin_port,
                               name=b.folder.name) for b in brokers], check_path="/readyz")

    return HAProxy({"mllp": None, "dicom": None},
                   {"mllp": backend("port"), "dicom": backend("dicom_port")})


@pytest.fixture
def proxied(cluster: Cluster) -> Iterator[HAProxy]:
    """Two brokers and HAProxy in front of them, every server UP."""
    brokers = cluster.start(2)
    with front(brokers) as haproxy:
        for name in ("mllp", "dicom"):
            for broker in brokers:
                haproxy.wait_status(name, broker.folder.name, "UP")
        yield haproxy


def served_queries(broker: BrokerProcess) -> int:
    return len(re.findall(r"event=mwl_query calling_ae=", broker.log_text()))


def answered(cluster: Cluster, broker: BrokerProcess) -> Counter[str]:
    """Per ACK code, the HL7 messages the broker answered (from its log)."""
    return Counter(code for _, code, _ in cluster.received(broker))


IDENTIFIERS = [query_keys(modality="CT"),
               query_keys(["PatientName=PATIENT^NUMBER1*"]),
               query_keys(["AccessionNumber=A0000007"]),
               query_keys(date="20261122", modality="MR")]


def find_through(haproxy: HAProxy, keys: dict[str, str]) -> tuple[int, list[str]]:
    """One C-FIND on a new association through HAProxy: its status and its matches (as
    sorted DICOM JSON)."""
    with WorklistClient("127.0.0.1", haproxy.port("dicom"), timeout=30) as client:
        result = client.find(build_query(keys))
    return result.status, sorted(json.dumps(m.to_json_dict(), sort_keys=True)
                                 for m in result.matches)


async def test_orders_are_balanced_and_c_find_answers_alike(cluster: Cluster,
                                                            proxied: HAProxy) -> None:
    a, b = cluster.brokers
    count = 40
    for n in range(1, count + 1):  # a new connection each: HAProxy balances connections
        async with MllpClient("127.0.0.1", proxied.port("mllp"), timeout=30) as client:
            ack = (await client.send(order(n).encode())).decode()
        assert msa(ack)[1:3] == ["AA", f"MSG{n:08d}"]
    deadline = time.monotonic() + 10  # the log is written by a thread of its own
    while True:
        per_broker = {b.folder.name: answered(cluster, b)["AA"] for b in (a, b)}
        if sum(per_broker.values()) == count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert sum(per_broker.values()) == count
    assert abs(per_broker["a"] - per_broker["b"]) <= count // 10, per_broker
    assert cluster.scalar("SELECT count(*) FROM procedures") == count

    # each identifier twice in a row: round robin sends the two to different brokers
    for keys in IDENTIFIERS:
        first, second = await asyncio.to_thread(find_through, proxied, keys), \
            await asyncio.to_thread(find_through, proxied, keys)
        assert first[0] == second[0] == 0x0000
        assert first == second, keys
    # the answers are not empty (the orders are there) …
    assert len((await asyncio.to_thread(find_through, proxied, IDENTIFIERS[0]))[1]) == count
    # … and both brokers gave them
    assert served_queries(a) > 0 and served_queries(b) > 0
    assert abs(served_queries(a) - served_queries(b)) <= 1
    cluster.assert_no_errors()


SENDERS = 8
PER_SENDER = 60
#: acknowledged messages before the kill
KILL_AFTER = 120
#: a message is sent at most this often (the first time, then resent after a cut)
ATTEMPTS = 30


@dataclass
class Sent:
    number: int
    code: str
    attempts: int
    after_kill: bool


async def test_a_broker_killed_behind_haproxy(cluster: Cluster, proxied: HAProxy) -> None:
    a, b = cluster.brokers
    killed = asyncio.Event()
    acked = 0
    acked_at_kill = 0
    sent: list[Sent] = []

    async def sender(k: int) -> None:
        """A RIS: one connection, each message resent (on a new connection) until it is
        answered, as MLLP senders do when a connection breaks."""
        nonlocal acked
        client: MllpClient | None = None
        try:
            for j in range(PER_SENDER):
                number = 1 + k * PER_SENDER + j
                raw = order(number).encode()
                tries = 0
                while True:
                    tries += 1
                    try:
                        if client is None:
                            client = MllpClient("127.0.0.1", proxied.port("mllp"), timeout=10)
                            await client.connect()
                        after_kill = killed.is_set()
                        ack = (await client.send(raw)).decode()
                        break
                    except (MllpError, OSError, TimeoutError):
                        if client is not None:
                            with contextlib.suppress(OSError):
                                await client.close()
                        client = None
                        assert tries < ATTEMPTS, f"message {number} unanswered after {tries}"
                        await asyncio.sleep(0.05)
                sent.append(Sent(number, msa(ack)[1], tries, after_kill))
                acked += 1
        finally:
            if client is not None:
                await client.close()

    async def killer() -> None:
        nonlocal acked_at_kill
        while acked < KILL_AFTER:
            await asyncio.sleep(0.005)
        assert a.proc is not None
        a.proc.kill()  # SIGKILL
        killed.set()
        acked_at_kill = acked
        at = time.monotonic()
        await asyncio.to_thread(a.proc.wait, 10)
        for name in ("mllp", "dicom"):
            await asyncio.to_thread(proxied.wait_status, name, "a", "DOWN", 15.0)
        print(f"HAProxy had a DOWN {time.monotonic() - at:.2f} s after the kill")

    await asyncio.gather(killer(), *(sender(k) for k in range(SENDERS)))

    total = SENDERS * PER_SENDER
    assert len(sent) == total
    assert Counter(s.code for s in sent) == {"AA": total}
    after = [s for s in sent if s.after_kill]
    resent = [s for s in sent if s.attempts > 1]
    print(f"acknowledged after the kill: {len(after)}; resent after a cut: {len(resent)}")
    # the senders went on: all but those answered or under way at the kill came after it
    assert len(after) >= total - acked_at_kill - SENDERS
    assert resent, "no sender lost its connection to the killed broker"
    assert proxied.server_status()["mllp", "a"] == "DOWN"

    # nothing acknowledged is lost: one accepted original per control ID, one order each
    originals = Counter(cid for (cid,) in cluster.query(
        "SELECT control_id FROM message_log WHERE outcome = 'AA' AND duplicate_of IS NULL"))
    assert originals == {f"MSG{s.number:08d}": 1 for s in sent}
    assert cluster.scalar("SELECT count(*) FROM procedures") == total
    # what b answered after a's end; a message a had stored but not answered came back to
    # b as a resend and was answered from the log
    duplicates = sum(1 for _, code, dup in cluster.received(b) if dup and code == "AA")
    print(f"a answered {answered(cluster, a)['AA']}, b {answered(cluster, b)['AA']} "
          f"({duplicates} duplicates)")
    assert answered(cluster, b)["AA"] >= len(after)

    # the worklist through HAProxy comes from b alone now, and holds every order
    queries_before = served_queries(b)
    status, matches = await asyncio.to_thread(find_through, proxied, IDENTIFIERS[0])
    assert (status, len(matches)) == (0x0000, total)
    assert served_queries(b) == queries_before + 1
    assert not cluster.error_lines()["b"], cluster.error_lines()["b"][:5]
