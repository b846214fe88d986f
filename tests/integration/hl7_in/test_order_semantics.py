"""Order and patient semantics over real MLLP into a real SQLite file."""

from __future__ import annotations

from broker.app import Broker
from tests.support.db import Db
from tests.support.mllp import err, msa, send
from tests.support.samples import order

UID = "1.2.826.0.1.3680043.8.498.2"


async def post(broker: Broker, *payloads: bytes) -> list[str]:
    acks = await send(broker.mllp.bound_port, *payloads)
    return [msa(a)[1] for a in acks]


async def test_new_order_then_replacement_of_its_step_set(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1, sps_ids=["S1", "S2"]).encode()) == ["AA"]
    assert {k: v["_status"] for k, v in db.steps(UID).items()} == {
        "S1": "SCHEDULED", "S2": "SCHEDULED"}
    update = order(1, control_id="U1", order_control="XO", sps_ids=["S2", "S3"],
                   modality="MR")
    assert await post(broker, update.encode()) == ["AA"]
    steps = db.steps(UID)
    assert {k: v["_status"] for k, v in steps.items()} == {
        "S1": "CANCELED", "S2": "SCHEDULED", "S3": "SCHEDULED"}
    assert steps["S2"]["_modality"] == "MR"
    assert db.counts()["procedures"] == 1


async def test_cancel_and_discontinue(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1).encode(), order(2).encode()) == ["AA", "AA"]
    cancel = order(1, control_id="C1", order_control="CA", order_status="CA")
    discontinue = order(2, control_id="D1", order_control="DC", order_status="CA")
    assert await post(broker, cancel.encode(), discontinue.encode()) == ["AA", "AA"]
    assert [s["_status"] for s in db.steps(UID).values()] == ["CANCELED"]
    assert [s["_status"] for s in db.steps("1.2.826.0.1.3680043.8.498.3").values()] == [
        "DISCONTINUED"]


async def test_cancel_found_by_placer_order_when_the_cancel_has_no_zds(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1).encode()) == ["AA"]
    cancel = order(1, control_id="C1", order_control="CA", order_status="CA", study_uid=None)
    assert await post(broker, cancel.encode()) == ["AA"]
    assert [s["_status"] for s in db.steps(UID).values()] == ["CANCELED"]


async def test_missing_study_uid_is_generated_deterministically(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    first = order(7, study_uid=None)
    assert await post(broker, first.encode()) == ["AA"]
    uid = db.query("SELECT study_uid FROM procedures")[0][0]
    assert uid.startswith("2.25.") and len(uid) <= 64
    resend = order(7, study_uid=None, control_id="RESEND-7")  # new control ID, same order
    assert await post(broker, resend.encode()) == ["AA"]
    assert db.query("SELECT study_uid FROM procedures") == [(uid,)]
    assert db.counts()["steps"] == 1


async def test_demographics_update_is_visible_on_every_open_step(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    orders = [order(n, patient_id="PX", issuer="HOSP") for n in (1, 2)]
    assert await post(broker, *(o.encode() for o in orders)) == ["AA", "AA"]
    a08 = ("MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A08|A08-1|P|2.5.1\r"
           "PID|||PX^^^HOSP||NEWNAME^ANNA||19800202|F\r")
    assert await post(broker, a08.encode()) == ["AA"]
    names = db.query(
        "SELECT pt.name FROM steps s JOIN procedures p ON p.id = s.procedure_fk "
        "JOIN patients pt ON pt.id = p.patient_fk")
    assert names == [("NEWNAME^ANNA",), ("NEWNAME^ANNA",)]


async def test_merge_moves_orders_to_the_surviving_patient(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1, patient_id="OLD", issuer="HOSP").encode()) == ["AA"]
    a40 = ("MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A40^ADT_A39|A40-1|P|2.5.1\r"
           "PID|||NEW^^^HOSP||SMITH^ANN\rMRG|OLD^^^HOSP\r")
    assert await post(broker, a40.encode()) == ["AA"]
    assert db.procedure(UID)["_patient_id"] == "NEW"
    assert db.patient("OLD", "HOSP")["_merged_into"] == db.patient("NEW", "HOSP")["_id"]
    # a later order for the merged ID lands on the surviving patient
    assert await post(broker, order(2, patient_id="OLD", issuer="HOSP").encode()) == ["AA"]
    assert db.procedure("1.2.826.0.1.3680043.8.498.3")["_patient_id"] == "NEW"


async def test_change_of_patient_id_everywhere_and_conflict(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1, patient_id="P-OLD", issuer="HOSP").encode()) == ["AA"]
    a47 = ("MSH|^~\\&|RIS|HOSP|MWLBROKER|RAD|20261122100000||ADT^A47^ADT_A30|{cid}|P|2.5.1\r"
           "PID|||{new}^^^HOSP||SMITH^ANN\rMRG|{old}^^^HOSP\r")
    ok = a47.format(cid="A47-1", new="P-NEW", old="P-OLD").encode()
    assert await post(broker, ok) == ["AA"]
    assert db.procedure(UID)["_patient_id"] == "P-NEW"
    assert not db.query("SELECT 1 FROM patients WHERE patient_id = 'P-OLD'")
    assert await post(broker, order(2, patient_id="P-OTHER", issuer="HOSP").encode()) == ["AA"]
    clash = a47.format(cid="A47-2", new="P-OTHER", old="P-NEW").encode()
    before = db.domain_snapshot()
    ack = (await send(broker.mllp.bound_port, clash))[0]
    assert msa(ack)[1] == "AE"
    assert err(ack)[3].startswith("205^")
    assert "A40" in ack
    assert db.domain_snapshot() == before


async def test_duplicate_control_id_is_answered_from_the_log_not_applied(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    first = await send(broker.mllp.bound_port, order(1).encode())
    # a resend: same sender, MSH-10 and content; only MSH-7 (time stamp) and line ends differ
    resend = order(1).text().replace("20261122093000", "20261122093105", 1)
    again = await send(broker.mllp.bound_port, resend.replace("\r", "\r\n").encode())
    assert again == first
    assert [(r[1], r[2] is not None) for r in db.log()] == [("AA", False), ("AA", True)]


async def test_reused_control_id_with_other_content_is_refused(broker: Broker) -> None:
    """Answering the stored ACK here would acknowledge a message that is never applied."""
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1).encode()) == ["AA"]
    before = db.domain_snapshot()
    changed = order(1, modality="MR")  # same sender and MSH-10, different content
    ack = (await send(broker.mllp.bound_port, changed.encode()))[0]
    assert msa(ack)[1] == "AE"
    assert err(ack)[2] == "MSH^1^10" and err(ack)[3].startswith("205^")
    assert "different message" in ack
    assert db.domain_snapshot() == before


async def test_same_control_id_from_another_sender_is_a_new_message(broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1).encode()) == ["AA"]
    other = order(2, control_id="MSG00000001", sending_application="OTHER_RIS")
    assert await post(broker, other.encode()) == ["AA"]
    assert db.counts()["procedures"] == 2


async def test_rejected_message_with_same_control_id_can_be_resent_corrected(
        broker: Broker) -> None:
    db = Db(broker.settings.database.path)
    assert await post(broker, order(1, birth_date="19xx").encode()) == ["AE"]
    assert await post(broker, order(1).encode()) == ["AA"]
    assert db.counts()["steps"] == 1
