"""An A40 merge on one broker and an order for the merged-away patient on another, sent at the
same moment (issue 13): the jobs meet on the prior patient's lock, so whichever commits first,
no order is left on a merged-away patient."""

from __future__ import annotations

import asyncio
from collections import Counter

from broker.hl7.mllp import MllpClient
from tests.integration.cluster.conftest import Cluster
from tests.support.mllp import msa
from tests.support.samples import order

RACES = 200
CONCURRENT = 8
ISSUER = "HOSP"


def old_id(i: int) -> str:
    return f"OLD{i:05d}"


def new_id(i: int) -> str:
    return f"NEW{i:05d}"


def a40(i: int) -> bytes:
    """ADT^A40: merge OLD<i> into NEW<i> (as tests/integration/hl7_in does, and as
    mappings/adt.yaml maps it: PID-3 the surviving patient, MRG-1 the prior one)."""
    return (f"MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A40^ADT_A39|A40-{i:05d}|P|"
            f"2.5.1\rEVN||20261122100000\rPID|||{new_id(i)}^^^{ISSUER}||MERGED^PATIENT{i}\r"
            f"MRG|{old_id(i)}^^^{ISSUER}\r").encode()


def first_order(i: int) -> bytes:
    """The order the prior patient has before the race (the merge moves it)."""
    return order(10_000 + i, patient_id=old_id(i), issuer=ISSUER).encode()


def survivor_order(i: int) -> bytes:
    """An order the surviving patient has before the race, for every other race."""
    return order(20_000 + i, patient_id=new_id(i), issuer=ISSUER).encode()


def racing_order(i: int) -> bytes:
    """The order for the prior patient sent at the same moment as the merge."""
    return order(30_000 + i, patient_id=old_id(i), issuer=ISSUER).encode()


def racing_uid(i: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{30_000 + i + 1}"


async def test_merges_and_orders_for_the_merged_patient_race(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    ports = (a.port, b.port)

    async def setup_worker(items: list[bytes], port: int) -> list[str]:
        async with MllpClient("127.0.0.1", port, timeout=30) as client:
            return [msa((await client.send(raw)).decode())[1] for raw in items]

    setup = [first_order(i) for i in range(RACES)] + [
        survivor_order(i) for i in range(0, RACES, 2)]
    chunks = [setup[k::CONCURRENT] for k in range(CONCURRENT)]
    codes = await asyncio.gather(*(setup_worker(chunk, ports[k % 2])
                                   for k, chunk in enumerate(chunks)))
    assert Counter(c for chunk in codes for c in chunk) == {"AA": len(setup)}

    # the races: the merge to one broker, the order to the other (which one alternates)
    acks: dict[int, tuple[str, str]] = {}
    races = iter(range(RACES))

    async def race_worker() -> None:
        async with MllpClient("127.0.0.1", ports[0], timeout=30) as first, \
                MllpClient("127.0.0.1", ports[1], timeout=30) as second:
            for i in races:
                merge_to, order_to = (first, second) if i % 2 == 0 else (second, first)
                merged, ordered = await asyncio.gather(merge_to.send(a40(i)),
                                                       order_to.send(racing_order(i)))
                acks[i] = (msa(merged.decode())[1], msa(ordered.decode())[1])

    await asyncio.gather(*(race_worker() for _ in range(CONCURRENT)))
    assert len(acks) == RACES
    refused = {i: pair for i, pair in acks.items() if pair != ("AA", "AA")}
    assert not refused, f"{len(refused)} races not acknowledged AA/AA: {list(refused.items())[:5]}"

    # no procedure belongs to a merged-away patient
    on_merged = cluster.query(
        "SELECT p.study_uid, pt.patient_id FROM procedures p "
        "JOIN patients pt ON pt.id = p.patient_fk WHERE pt.merged_into IS NOT NULL")
    assert on_merged == [], f"{len(on_merged)} procedures on merged patients: {on_merged[:5]}"
    # every prior patient merged into its survivor, which is not merged itself
    merges = cluster.query(
        "SELECT o.patient_id, n.patient_id, n.merged_into FROM patients o "
        "LEFT JOIN patients n ON n.id = o.merged_into WHERE o.patient_id LIKE 'OLD%'")
    assert sorted(merges) == [(old_id(i), new_id(i), None) for i in range(RACES)]
    # every order the brokers acknowledged exists, on the surviving patient
    placed = dict(cluster.query(
        "SELECT p.study_uid, pt.patient_id FROM procedures p "
        "JOIN patients pt ON pt.id = p.patient_fk"))
    assert {i: placed.get(racing_uid(i)) for i in range(RACES)} == {
        i: new_id(i) for i in range(RACES)}
    assert len(placed) == len(setup) + RACES
    # the survivor holds the prior patient's first order, its own and the racing one
    per_survivor = Counter(placed.values())
    assert per_survivor == {new_id(i): 3 if i % 2 == 0 else 2 for i in range(RACES)}

    # the races went both ways: some orders were stored before their merge, some after
    logged = dict(cluster.query("SELECT control_id, id FROM message_log"))
    order_first = sum(1 for i in range(RACES)
                      if logged[f"MSG{30_000 + i:08d}"] < logged[f"A40-{i:05d}"])
    print(f"orders stored before their merge: {order_first} of {RACES}; "
          f"deadlocks: {cluster.deadlocks()}")
    assert 0 < order_first < RACES, "the merges and orders did not race"
    cluster.assert_no_errors()


async def test_two_orders_for_one_new_patient_at_two_instances(cluster: Cluster) -> None:
    """Two orders for a patient nobody knows yet, one at each broker at the same moment:
    one patient row, both orders on it."""
    a, b = cluster.start(2)
    acks: dict[int, tuple[str, str]] = {}
    races = iter(range(RACES))

    async def worker() -> None:
        async with MllpClient("127.0.0.1", a.port, timeout=30) as first, \
                MllpClient("127.0.0.1", b.port, timeout=30) as second:
            for i in races:
                patient = f"NP{i:05d}"
                one, two = await asyncio.gather(
                    first.send(order(40_000 + i, patient_id=patient, issuer=ISSUER).encode()),
                    second.send(order(50_000 + i, patient_id=patient, issuer=ISSUER).encode()))
                acks[i] = (msa(one.decode())[1], msa(two.decode())[1])

    await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
    assert Counter(acks.values()) == {("AA", "AA"): RACES}
    assert cluster.query("SELECT count(*), count(DISTINCT patient_id) FROM patients") == [
        (RACES, RACES)]
    per_patient = Counter(pid for (pid,) in cluster.query(
        "SELECT pt.patient_id FROM procedures p JOIN patients pt ON pt.id = p.patient_fk"))
    assert per_patient == {f"NP{i:05d}": 2 for i in range(RACES)}
    cluster.assert_no_errors()
