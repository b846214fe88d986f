"""Regression tests for defects found in review: each fed through the real listener."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from broker.app import Broker
from tests.support.broker import BIN
from tests.support.db import Db
from tests.support.mllp import err, msa, send
from tests.support.samples import OrderSample, order, segment

UID = "1.2.826.0.1.3680043.8.498.77"


def two_groups(first: dict[int, str], second: dict[int, str]) -> bytes:
    """An ORM whose two ORC/OBR groups carry the same ZDS Study Instance UID."""
    head = OrderSample(control_id="TWO", study_uid=None).segments()[:3]
    body = []
    for obr in (first, second):
        body.append(segment("ORC", {1: "NW", 2: "PLC77", 5: "SC"}))
        body.append(segment("OBR", {1: "1", 2: "PLC77", 4: "P1^Chest CT", 24: "CT",
                                    27: "^^^202611221000", **obr}))
        body.append(segment("ZDS", {1: f"{UID}^100^Application^DICOM"}))
    return ("\r".join(head + body) + "\r").encode()


async def test_groups_without_sps_ids_are_numbered_per_procedure(broker: Broker) -> None:
    acks = await send(broker.mllp.bound_port, two_groups({18: "ACC77"}, {18: "ACC77"}))
    assert msa(acks[0])[1] == "AA", acks[0]
    assert sorted(Db(broker.settings.database.path).steps(UID)) == ["1", "2"]


async def test_duplicate_sps_ids_in_one_procedure_are_refused(broker: Broker) -> None:
    ack = (await send(broker.mllp.bound_port,
                      two_groups({18: "A", 20: "S1"}, {18: "A", 20: "S1"})))[0]
    assert msa(ack)[1] == "AE" and err(ack)[3].startswith("205^")
    assert "SPS ID 'S1'" in ack and err(ack)[2] == "OBR^1^20"
    assert Db(broker.settings.database.path).counts()["steps"] == 0


async def test_groups_of_one_study_that_disagree_are_refused(broker: Broker) -> None:
    ack = (await send(broker.mllp.bound_port,
                      two_groups({18: "ACC1", 20: "S1"}, {18: "ACC2", 20: "S2"})))[0]
    assert msa(ack)[1] == "AE" and "AccessionNumber" in ack and "'ACC1' / 'ACC2'" in ack
    assert err(ack)[2] == "OBR^1^18"


async def test_unparsable_message_ack_still_names_its_control_id(broker: Broker) -> None:
    payload = order(1).encode().replace(b"\rPV1", b"\rpv1")
    ack = (await send(broker.mllp.bound_port, payload))[0]
    assert msa(ack)[1] == "AR" and msa(ack)[2] == "MSG00000001"
    assert ack.split("\r")[0].split("|")[4:6] == ["RIS", "HOSP"]


async def test_unexpected_error_while_storing_is_an_ae_and_is_logged(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: applying one message raises. It gets AE 207 with the reason, is
    logged, changes nothing, and the same connection goes on with the next message."""
    import broker.flows.hl7_in as ingest

    real_apply, real_apply_new = ingest.apply, ingest.apply_new_order

    def fail_on_first(event: object) -> None:
        if getattr(event, "procedure", None) and event.procedure.attrs.get(  # type: ignore[attr-defined]
                "AccessionNumber") == "A0000001":
            raise RuntimeError("disk on fire")

    def failing_apply(repo: object, event: object, **options: object) -> None:
        fail_on_first(event)
        real_apply(repo, event, **options)  # type: ignore[arg-type]

    def failing_apply_new(repo: object, event: object, unless_accepted: object) -> object:
        fail_on_first(event)  # PostgreSQL: a new order with its duplicate check
        return real_apply_new(repo, event, unless_accepted)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "apply", failing_apply)
    monkeypatch.setattr(ingest, "apply_new_order", failing_apply_new)
    acks = await send(broker.mllp.bound_port, order(1).encode(), order(2).encode())
    assert [msa(a)[1] for a in acks] == ["AE", "AA"]
    assert err(acks[0])[3].startswith("207^") and "disk on fire" in acks[0]
    db = Db(broker.settings.database.path)
    assert db.counts()["steps"] == 1
    assert [(r[0], r[1]) for r in db.log()] == [("MSG00000001", "AE"), ("MSG00000002", "AA")]


def _wl(folder: Path, name: str, sps: str) -> None:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID = "P1", "DOE^JANE", "1.2.3.4"
    ds.AccessionNumber = "A1"
    step = Dataset()
    step.ScheduledProcedureStepID, step.Modality, step.ScheduledStationAETitle = sps, "CT", "CT1"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{sps[-1]}"
    ds.save_as(folder / name, enforce_file_format=True)


def test_import_keeps_every_step_of_a_procedure_split_over_files(tmp_path: Path) -> None:
    folder = tmp_path / "wl"
    folder.mkdir()
    _wl(folder, "a.wl", "S1")
    _wl(folder, "b.wl", "S2")
    (folder / "broken.wl").write_bytes(b"not dicom at all")
    db = tmp_path / "db.sqlite"
    out = subprocess.run([str(BIN / "mwl-broker"), "import-worklist", str(folder), "-o",
                          f"database.path={db}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 worklist item(s) imported" in out.stdout and "1 skipped" in out.stdout
    assert {k: v["_status"] for k, v in Db(db).steps("1.2.3.4").items()} == {
        "S1": "SCHEDULED", "S2": "SCHEDULED"}
