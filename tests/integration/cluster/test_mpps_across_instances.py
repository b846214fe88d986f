"""MPPS across brokers on one database (issue 13): N-CREATE on one instance and N-SET on the
other; two COMPLETED N-SETs of one MPPS on both instances at once give one success and one
0110 "may no longer be updated" (the answer to an N-SET that changes a final MPPS,
workflow/mpps.update), and what a completion causes is queued once."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from broker.hl7.mllp import MllpClient
from tests.integration.cluster.conftest import Cluster
from tests.support.broker import BrokerProcess, free_port
from tests.support.mllp import msa
from tests.support.mpps import completion, mpps
from tests.support.samples import order

REPEATS = 50
SUCCESS, PROCESSING_FAILURE, MAY_NO_LONGER_BE_UPDATED = 0x0000, 0x0110, 0xA710


def settings() -> tuple[str, ...]:
    """A RIS and an archive that are never there: the status messages and the storage
    commitment requests stay queued in the outbox to be counted (retried rarely)."""
    return (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {free_port()}}}]",
            "storage_commitment.ae_title=ARCHIVE", f"storage_commitment.port={free_port()}",
            "outbound.backoff_base=30")


def study_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{n + 1}"  # order(n)'s


def performed(n: int) -> Dataset:
    """The N-CREATE (IN PROGRESS) of a modality performing order(n)'s step."""
    return mpps(study_uid=study_uid(n), sps_id=f"SPS{n:07d}", accession=f"A{n:07d}",
                PatientID=f"P{n:07d}", PatientName=f"PATIENT^NUMBER{n}")


def completed(end_time: str = "103000") -> Dataset:
    ds = completion()
    ds.PerformedProcedureStepEndTime = end_time
    return ds


async def place_orders(broker: BrokerProcess, count: int) -> None:
    async with MllpClient("127.0.0.1", broker.port, timeout=30) as client:
        for n in range(1, count + 1):
            assert msa((await client.send(order(n).encode())).decode())[1] == "AA"


def associate(broker: BrokerProcess) -> Association:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", broker.dicom_port, ae_title="MWLBROKER")
    assert assoc.is_established
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


@pytest.fixture
def modalities(cluster: Cluster) -> Iterator[tuple[Association, Association]]:
    """Two brokers holding orders 1..REPEATS, and a modality's association with each."""
    a, b = cluster.start(2, *settings())
    asyncio.run(place_orders(a, REPEATS))
    first = associate(a)
    try:
        second = associate(b)
        try:
            yield first, second
        finally:
            second.release()
    finally:
        first.release()


def step_statuses(cluster: Cluster) -> Counter[str]:
    return Counter(row[0] for row in cluster.query("SELECT status FROM steps"))


def order_status(message: str) -> str:
    """ORC-5 of a status message (IP, CM …)."""
    orc = next(seg for seg in message.split("\r") if seg.startswith("ORC|"))
    return (orc.split("|") + [""] * 6)[5]


def assert_queued_once(cluster: Cluster) -> None:
    """Per MPPS: one storage commitment (its transaction and its N-ACTION request); per
    procedure: one IN PROGRESS and one COMPLETED status message to the RIS."""
    assert cluster.query("SELECT count(*), count(DISTINCT mpps_fk) FROM commitments") == [
        (REPEATS, REPEATS)]
    assert cluster.query(
        "SELECT count(*), count(DISTINCT order_key) FROM outbox WHERE destination = 'archive'"
    ) == [(REPEATS, REPEATS)]
    statuses = Counter((key, order_status(payload)) for key, payload in cluster.query(
        "SELECT order_key, payload FROM outbox WHERE destination = 'ris'"))
    assert statuses == {(study_uid(n), status): 1 for n in range(1, REPEATS + 1)
                        for status in ("IP", "CM")}


def test_created_on_one_instance_completed_on_the_other(
        cluster: Cluster, modalities: tuple[Association, Association]) -> None:
    for n in range(1, REPEATS + 1):
        # which instance takes the N-CREATE alternates
        creator, setter = modalities if n % 2 else modalities[::-1]
        uid = generate_uid()
        status, _ = creator.send_n_create(performed(n), ModalityPerformedProcedureStep, uid)
        assert status.Status == SUCCESS, status
        status, _ = setter.send_n_set(completed(), ModalityPerformedProcedureStep, uid)
        assert status.Status == SUCCESS, status
    assert step_statuses(cluster) == {"COMPLETED": REPEATS}
    assert cluster.query("SELECT status, count(*) FROM mpps GROUP BY status") == [
        ("COMPLETED", REPEATS)]
    assert_queued_once(cluster)
    cluster.assert_no_errors(ignore="logger=pynetdicom")  # the archive that is not there


def test_two_completed_n_sets_at_once_on_two_instances(
        cluster: Cluster, modalities: tuple[Association, Association]) -> None:
    barrier = threading.Barrier(2, timeout=30)

    def n_set(assoc: Association, uid: str, end_time: str) -> tuple[int, int, str]:
        barrier.wait()
        status, _ = assoc.send_n_set(completed(end_time), ModalityPerformedProcedureStep, uid)
        return (int(status.Status), int(status.get("ErrorID", 0)),
                str(status.get("ErrorComment", "")))

    outcomes: list[tuple[tuple[int, int, str], tuple[int, int, str]]] = []
    winners: dict[str, str] = {}
    with ThreadPoolExecutor(2) as pool:
        for n in range(1, REPEATS + 1):
            uid = generate_uid()
            creator = modalities[n % 2]
            status, _ = creator.send_n_create(performed(n), ModalityPerformedProcedureStep,
                                              uid)
            assert status.Status == SUCCESS, status
            # different end times: the later N-SET changes a final MPPS (the same N-SET
            # twice would be a resend, answered as done)
            on_a = pool.submit(n_set, modalities[0], uid, "103000")
            on_b = pool.submit(n_set, modalities[1], uid, "103100")
            pair = (on_a.result(60), on_b.result(60))
            outcomes.append(pair)
            if pair[0][0] == SUCCESS:
                winners[uid] = "103000"
            elif pair[1][0] == SUCCESS:
                winners[uid] = "103100"

    statuses = Counter(tuple(sorted(s for s, _, _ in pair)) for pair in outcomes)
    assert statuses == {(SUCCESS, PROCESSING_FAILURE): REPEATS}, outcomes
    refusals = {(error_id, comment) for pair in outcomes for status, error_id, comment in pair
                if status == PROCESSING_FAILURE}
    assert refusals == {(MAY_NO_LONGER_BE_UPDATED,
                         "the MPPS is COMPLETED and may no longer be updated")}
    print("N-SETs won by instance a:",
          sum(1 for pair in outcomes if pair[0][0] == SUCCESS), "of", REPEATS)

    # the winner's N-SET is the one stored; the steps completed once
    stored = {uid: json.loads(dataset)["00400251"]["Value"][0]  # End Time
              for uid, dataset in cluster.query("SELECT sop_instance_uid, dataset FROM mpps "
                                                "WHERE status = 'COMPLETED'")}
    assert stored == winners
    assert step_statuses(cluster) == {"COMPLETED": REPEATS}
    assert_queued_once(cluster)
    cluster.assert_no_errors(ignore="logger=pynetdicom")


DUPLICATE_INSTANCE = 0x0111


def test_one_n_create_at_two_instances_at_once(
        cluster: Cluster, modalities: tuple[Association, Association]) -> None:
    """The same N-CREATE at both brokers at once (a modality's resend reaching the other
    instance) is stored once and answered 0000 by both; another N-CREATE under the same SOP
    Instance UID at the same moment is a duplicate (0111) whichever broker is first."""
    barrier = threading.Barrier(2, timeout=30)

    def n_create(assoc: Association, uid: str, ds: Dataset) -> int:
        barrier.wait()
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        return int(status.Status)

    answers: dict[int, tuple[int, int]] = {}
    uids: dict[str, int] = {}
    with ThreadPoolExecutor(2) as pool:
        for n in range(1, REPEATS + 1):
            uid = generate_uid()
            uids[uid] = n
            ours = performed(n)
            theirs = performed(n)
            if n % 2 == 0:  # every other one: another performed step under the same UID
                theirs.PerformedProcedureStepID = "PPS-OTHER"
            on_a = pool.submit(n_create, modalities[0], uid, ours)
            on_b = pool.submit(n_create, modalities[1], uid, theirs)
            answers[n] = (on_a.result(60), on_b.result(60))

    same = Counter(answers[n] for n in range(1, REPEATS + 1, 2))
    other = Counter(tuple(sorted(answers[n])) for n in range(2, REPEATS + 1, 2))
    assert same == {(SUCCESS, SUCCESS): REPEATS // 2}, answers
    assert other == {(SUCCESS, DUPLICATE_INSTANCE): REPEATS // 2}, answers
    # one MPPS per UID (the accepted one's content), each step started once
    stored = {uid: json.loads(dataset)["00400253"]["Value"][0]  # Performed Procedure Step ID
              for uid, dataset in cluster.query("SELECT sop_instance_uid, dataset FROM mpps")}
    assert set(stored) == set(uids)
    for uid, n in uids.items():
        winner = "PPS1" if n % 2 or answers[n][0] == SUCCESS else "PPS-OTHER"
        assert stored[uid] == winner, (n, answers[n])
    assert step_statuses(cluster) == {"STARTED": REPEATS}
    statuses = Counter((key, order_status(payload)) for key, payload in cluster.query(
        "SELECT order_key, payload FROM outbox WHERE destination = 'ris'"))
    assert statuses == {(study_uid(n), "IP"): 1 for n in range(1, REPEATS + 1)}
    cluster.assert_no_errors(ignore="logger=pynetdicom")
