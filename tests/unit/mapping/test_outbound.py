"""Every shipped outbound template, rendered for every status it can carry through the code
the outbox uses (StatusNotifier over a real SQLite store), is valid HL7 for its declared
version and structure (hl7apy, strict), declares the character set its bytes are sent in, and
carries each status in the field whose HL7 table it belongs to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from broker.config import ConfigError, DestinationSettings, Hl7Settings, MllpSettings, Settings
from broker.config.checks import check
from broker.dicom.mpps import summary
from broker.flows.hl7_in import Ingestor
from broker.mapping.outbound import Template
from broker.mapping.schema import MappingLoadError, load_mappings
from broker.mapping.specs import MappingSet
from broker.model.instances import Facts
from broker.outbound.encoding import EncodingError, declared, encode, with_charset
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.workflow.notify import COMPLETION, EVENT, StatusNotifier
from tests.support.db import Db
from tests.support.hl7_strict import problems, structure
from tests.support.samples import order

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
SHIPPED = load_mappings(MAPPINGS)
#: HL7 tables, as the standard lists them (v2.3.1 … v2.8)
TABLE_0038 = {"A", "CA", "CM", "DC", "ER", "HD", "IP", "RP", "SC"}
TABLE_0123 = {"O", "I", "S", "A", "P", "C", "R", "F", "X", "Y", "Z"}
TABLE_0119_STATUS = {"SC", "RE"}  # status changed / observations to follow
#: MSH-18 (table 0211) → the bytes a receiver reads it as
CODECS = {"UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "8859/1": "latin-1"}
#: a patient whose name needs more than ASCII
NAME = "MÜLLER^JOSÉ"


def completion_template(template: Template) -> bool:
    """A template written for completion notices (it reads {completion.X})."""
    return any("{completion." in text for _, fields in template.segments for _, text in fields)


STATUS_CASES = [(name, status) for name, t in SHIPPED.templates.items()
                if not completion_template(t)
                for status in SHIPPED.outbound[EVENT].order_status]
COMPLETION_CASES = [(name, state) for name, t in SHIPPED.templates.items()
                    if completion_template(t)
                    for state in SHIPPED.outbound[COMPLETION].result_status]


def test_every_shipped_template_is_covered() -> None:
    covered = {name for name, _ in STATUS_CASES + COMPLETION_CASES}
    assert covered == set(SHIPPED.templates)
    assert {s for _, s in STATUS_CASES} == {"IN PROGRESS", "COMPLETED", "DISCONTINUED"}
    assert {s for _, s in COMPLETION_CASES} == {"complete", "partial", "commitment_failed"}


@contextlib.contextmanager
def store_holding(folder: Path, modality: str = "CT") -> Iterator[Writer]:
    """A real store holding one ``modality`` order for a patient whose name is not ASCII."""
    writer = Writer(folder / "broker.sqlite", synchronous="NORMAL")
    writer.start()
    ingestor = Ingestor(writer, lambda: SHIPPED, Hl7Settings(), MllpSettings())
    raw = order(1, patient_name=NAME, charset="UNICODE UTF-8",
                modality=modality).text().encode("utf-8")
    try:
        outcome = asyncio.run(ingestor.handle(raw, "127.0.0.1"))
        assert outcome.code == "AA", outcome.ack
        yield writer
    finally:
        writer.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Writer]:
    """A real store holding one CT order for a patient whose name is not ASCII."""
    with store_holding(tmp_path) as writer:
        yield writer


def performed(status: str) -> dict[str, Any]:
    """The MPPS summary status messages are rendered from (as the MPPS SCP makes it)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261122", "101500"
    if status != "IN PROGRESS":
        ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261122", "103000"
    ds.PerformedStationAETitle = "CT01"
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = generate_uid()
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = [image]
    ds.PerformedSeriesSequence = [series]
    return summary(ds.to_json_dict(), generate_uid())


def using(event: str, template: str) -> MappingSet:
    """The shipped mappings with ``event`` sent from ``template``."""
    rule = dataclasses.replace(SHIPPED.outbound[event], template=template)
    return dataclasses.replace(SHIPPED, outbound={**SHIPPED.outbound, event: rule})


def queued(writer: Writer) -> list[tuple[str, str]]:
    """(destination, payload) of each message in the outbox."""
    return [(r[0], r[1]) for r in Db(writer.path).query(
        "SELECT destination, payload FROM outbox ORDER BY id")]


def send_status(writer: Writer, mappings: MappingSet, status: str,
                charsets: dict[str, str] | None = None) -> list[tuple[str, str]]:
    notifier = StatusNotifier(lambda: mappings, ["ris"], charsets or {})
    steps = [r[0] for r in Db(writer.path).query("SELECT id FROM steps")]
    writer.run_sync(lambda uow: notifier(uow, steps, status, performed(status)))
    return queued(writer)


def send_completion(writer: Writer, mappings: MappingSet, state: str) -> list[tuple[str, str]]:
    notifier = StatusNotifier(lambda: mappings, ["ris"])
    steps = [r[0] for r in Db(writer.path).query("SELECT id FROM steps")]
    facts = Facts(instances=1, series=1, committed=0 if state == "commitment_failed" else 1,
                  failed=1 if state == "commitment_failed" else 0,
                  available=0 if state == "partial" else 1,
                  commitment_state="failed" if state == "commitment_failed" else "committed",
                  transaction_uid=generate_uid(), retrieve_aes=("ARCHIVE",))
    reason = {"complete": "", "partial": "1 of 1 instance(s) not reported available",
              "commitment_failed": "archive: 0x0110 processing failure"}[state]
    writer.run_sync(lambda uow: notifier.completion(uow, steps, performed("COMPLETED"),
                                                    facts, state, reason))
    return queued(writer)


def fields(message: str, name: str) -> list[str]:
    """The fields of the first ``name`` segment, index n being field n ("" when absent)."""
    line = next(s for s in message.split("\r") if s.startswith(name + "|"))
    values = line.split("|")
    values = ["MSH", "|", *values[1:]] if name == "MSH" else values
    return values + [""] * 40


def declared_structure(message: str) -> str:
    """MSH-9.3, or MSH-9.1_MSH-9.2 where the version has no MSH-9.3 (v2.3.1)."""
    parts = fields(message, "MSH")[9].split("^")
    return parts[2] if len(parts) > 2 else f"{parts[0]}_{parts[1]}"


def check_charset(message: str) -> None:
    """MSH-18 is declared, and the bytes the sender writes are that character set."""
    charset = declared(message)
    assert charset in CODECS, f"MSH-18 {charset!r}"
    sent = encode(message)
    assert sent.decode(CODECS[charset]) == message
    assert not sent.isascii()  # the name needed the declared set
    assert "MÜLLER^JOSÉ" in sent.decode(CODECS[charset])


@pytest.mark.parametrize(("template", "mpps_status"), STATUS_CASES)
def test_status_message_is_strictly_valid(store: Writer, template: str,
                                          mpps_status: str) -> None:
    [(_, message)] = send_status(store, using(EVENT, template), mpps_status)
    assert structure(message) == declared_structure(message)
    assert problems(message) == []
    orc = fields(message, "ORC")
    assert orc[1] in TABLE_0119_STATUS
    assert orc[5] == SHIPPED.outbound[EVENT].order_status[mpps_status]
    assert orc[5] in TABLE_0038
    assert fields(message, "OBR")[25] == ""  # a status update is not a result
    check_charset(message)


#: DICOM modalities of the CID 29 list a worklist schedules; only CT is also an HL7 table 0074 code
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT"]


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("template", sorted(SHIPPED.templates))
def test_every_template_is_strictly_valid_for_every_modality(tmp_path: Path, template: str,
                                                             modality: str) -> None:
    with store_holding(tmp_path, modality) as writer:
        if completion_template(SHIPPED.templates[template]):
            [(_, message)] = send_completion(writer, using(COMPLETION, template), "complete")
        else:
            [(_, message)] = send_status(writer, using(EVENT, template), "COMPLETED")
    assert problems(message) == []
    assert fields(message, "OBR")[24] in ("", "RAD")  # table 0074, never the DICOM Modality


@pytest.mark.parametrize(("template", "state"), COMPLETION_CASES)
def test_completion_notice_is_strictly_valid(store: Writer, template: str, state: str) -> None:
    [(_, message)] = send_completion(store, using(COMPLETION, template), state)
    assert problems(message) == []
    assert structure(message) == declared_structure(message)
    assert fields(message, "ORC")[5] == "CM"
    result = fields(message, "OBR")[25]
    assert result == SHIPPED.outbound[COMPLETION].result_status[state]
    assert result in TABLE_0123
    check_charset(message)


def test_the_old_status_template_fails_the_checks(store: Writer, tmp_path: Path) -> None:
    """The v2.3.1 ORM as shipped before: order status in OBR-25, UTF-8 bytes, no MSH-18."""
    folder = tmp_path / "old"
    shutil.copytree(MAPPINGS, folder)
    path = folder / "outbound.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace('12: "2.3.1", 18: UNICODE}]', '12: "2.3.1"}]')
    text = text.replace('24: RAD}]\n    - [OBX, {1: "1", 2: ST, 3: "Perf',
                        '24: RAD, 25: "{order_status}"}]\n'
                        '    - [OBX, {1: "1", 2: ST, 3: "Perf', 1)
    path.write_text(text, encoding="utf-8")
    [(_, message)] = send_status(store, load_mappings(folder), "IN PROGRESS")
    assert "Warning: Value IP not in table HL70123 in element OBR.OBR_25" in problems(message)
    assert declared(message) == ""
    with pytest.raises(EncodingError, match=r"U\+00DC .* 'ASCII'"):
        encode(message)


def test_a_destination_charset_replaces_msh18_and_the_bytes_follow(store: Writer) -> None:
    [(_, message)] = send_status(store, using(EVENT, "OMI_O23_status"), "COMPLETED",
                                 {"ris": "8859/1"})
    assert declared(message) == "8859/1"
    assert problems(message) == []
    assert encode(message) == message.encode("latin-1")
    check_charset(message)


def test_a_status_the_rule_does_not_list_is_not_reported(store: Writer) -> None:
    rule = dataclasses.replace(SHIPPED.outbound[EVENT], order_status={"COMPLETED": "CM"})
    mappings = dataclasses.replace(SHIPPED, outbound={**SHIPPED.outbound, EVENT: rule})
    assert send_status(store, mappings, "IN PROGRESS") == []
    [(_, message)] = send_status(store, mappings, "COMPLETED")
    assert fields(message, "ORC")[5] == "CM"


def test_text_the_declared_charset_cannot_hold_is_an_error() -> None:
    message = "MSH|^~\\&|A|B|||20261122||ORM^O01|1|P|2.3.1||||||8859/1\rPID|||1||王^小明\r"
    with pytest.raises(EncodingError, match=r"U\+738B at offset .* '8859/1'"):
        encode(message)
    with pytest.raises(EncodingError, match="'KLINGON' is not a character set"):
        encode(message.replace("8859/1", "KLINGON"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def load_error(folder: Path, old: str, new: str, *fragments: str) -> None:
    """Loading with ``old`` replaced by ``new`` in outbound.yaml fails, naming file:line."""
    path = folder / "outbound.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(MappingLoadError) as info:
        load_mappings(folder)
    assert any(e.startswith(f"{path}:") and all(f in e for f in fragments)
               for e in info.value.errors), "\n".join(info.value.errors)


def test_an_order_status_outside_table_0038_is_refused(folder: Path) -> None:
    load_error(folder, "COMPLETED: CM,", "COMPLETED: F,", "order_status 'F'", "table 0038")


def test_an_unknown_mpps_status_in_order_status_is_refused(folder: Path) -> None:
    load_error(folder, "DISCONTINUED: DC}", "DISCONTINUED: DC, STOPPED: DC}",
               "order_status 'STOPPED' is not an MPPS status")


def test_a_result_status_outside_table_0123_is_refused(folder: Path) -> None:
    load_error(folder, "complete: F,", "complete: CM,", "result_status 'CM'", "table 0123")


def test_a_template_charset_the_sender_cannot_encode_is_refused(folder: Path) -> None:
    load_error(folder, '12: "2.3.1", 18: UNICODE}]', '12: "2.3.1", 18: UTF8}]',
               "MSH-18 'UTF8'", "table 0211")


def test_a_destination_charset_must_be_an_hl7_name() -> None:
    settings = Settings()
    settings.outbound.destinations = [DestinationSettings(charset="latin-1")]
    with pytest.raises(ConfigError, match=r"outbound.destinations\[0\].charset 'latin-1'"):
        check(settings)
    settings.outbound.destinations[0].charset = "8859/1"
    check(settings)


ORM_WITH_OBX = ("MSH|^~\\&|MWLBROKER|RADIOLOGY|||20261122||ORM^O01|1|P|2.3.1||||||UNICODE\r"
                "PID|||P1^^^HOSP||DOE^JANE\rORC|SC|PL1|FI1||CM\rOBR||PL1|FI1|SPS1^CT\r"
                "OBX|1|NM|NumberOfSeries||1||||||F\rOBX|2|NM|{second}||2||||||F\r"
                "ZDS|1.2.3^100^Application^DICOM\r")


def test_the_judge_excuses_obx4_only_where_hl7_does_not_need_it() -> None:
    assert problems(ORM_WITH_OBX.format(second="NumberOfInstances")) == []
    assert "Error: Missing required child OBX.OBX_4" in problems(
        ORM_WITH_OBX.format(second="NumberOfSeries"))  # two OBX-3 alike need sub-IDs


def test_the_judge_checks_z_segments_itself() -> None:
    good = ORM_WITH_OBX.format(second="NumberOfInstances")
    assert problems(good.replace("ZDS|1.2.3^100", "ZDS|1.2.03^100")) == [
        "ZDS-1.1 '1.2.03' is not a DICOM UID"]
    assert problems(good.replace("ZDS|1.2.3^100^Application^DICOM", "ZXX|1")) == [
        "ZXX: not a Z segment the broker defines"]


def test_with_charset_adds_msh18_to_a_short_header() -> None:
    message = "MSH|^~\\&|A|B|||20261122||ORM^O01|1|P|2.3.1\rPID|||1\r"
    changed = with_charset(message, "8859/1")
    assert declared(changed) == "8859/1"
    assert changed.split("\r")[0].split("|")[:12] == message.split("\r")[0].split("|")
    assert changed.split("\r", 1)[1] == "PID|||1\r"
    assert with_charset(changed, "UNICODE") == changed.replace("8859/1", "UNICODE")
    assert with_charset(message, "") == message
