"""Fuzz properties of the worklist C-FIND path: any identifier dataset is either refused with
a DimseFailure (A900/C000) or becomes SQL that runs against a real SQLite store, and every
matching step encodes as a response in every answer character set and transfer syntax."""

from __future__ import annotations

import sqlite3
import struct
import tempfile
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from broker.config.checks import DICOM_CHARSETS
from broker.dicom.encoder import encode
from broker.dicom.mwl import SPS_SEQUENCE, parse_identifier, response_nodes, to_pydicom
from broker.dicom.status import DimseFailure
from broker.dicom.worklist_matching import latin1_name
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.store.orders import OrderRepo
from broker.store.sqlite.connection import connect, migrate
from broker.store.sqlite.readers import open_reader, search
from broker.store.worklist_query import COLUMNS
from broker.workflow.orders import apply
from tests.support.samples import order

ROOT = Path(__file__).resolve().parents[3]
SPS_INNER = ["Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
             "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
             "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
             "ScheduledProcedureStepStatus", "ScheduledStationName",
             "ScheduledProcedureStepLocation", "ScheduledProtocolCodeSequence",
             "PreMedication", "ScheduledProcedureStepEndDate", "CodeValue"]
TOP = [
    *sorted(set(COLUMNS) - set(SPS_INNER)), "PatientWeight", "PatientAge", "PatientBirthTime",
    "RequestedProcedurePriority",
    "ReferencedStudySequence", "OtherPatientIDsSequence", "StudyDate", "AcquisitionDateTime",
    "RequestedProcedureDescription", "CurrentPatientLocation", "SpecificCharacterSet",
    "ScheduledStationAETitle", "Modality"]
TEXT = st.text(alphabet=st.one_of(st.sampled_from(list("*?\\-^=. 0123456789AZaz")),
                                  st.characters(codec="utf-8")), max_size=24)
DIGITS = st.text(alphabet=st.sampled_from(list("0123456789-.+ *?\\")), max_size=20)
UIDS = st.text(alphabet=st.sampled_from(list("0123456789.\\* ")), max_size=40)
VALUES = {"DA": DIGITS, "TM": DIGITS, "DT": DIGITS, "UI": UIDS, "DS": DIGITS, "AS": TEXT}


def element(keyword: str, draw: st.DrawFn, depth: int) -> bytes:
    """One element as it arrives on the wire (implicit VR little endian)."""
    tag = keyword_dict[keyword]
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if dictionary_VR(tag) == "SQ":
        count = draw(st.integers(0, 2 if depth == 0 else 1))
        items = b"".join(ITEM + draw(dataset(SPS_INNER, depth + 1)) + ITEM_END
                         for _ in range(count))
        return head + UNDEFINED + items + SEQUENCE_END
    value = draw(VALUES.get(dictionary_VR(tag), TEXT)).encode("utf-8")
    if len(value) % 2:
        value += b"\0" if dictionary_VR(tag) == "UI" else b" "
    return head + struct.pack("<I", len(value)) + value


ITEM, ITEM_END = b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQUENCE_END, UNDEFINED = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xff\xff\xff"


@st.composite
def dataset(draw: st.DrawFn, pool: list[str], depth: int = 0) -> bytes:
    keywords = draw(st.lists(st.sampled_from(pool), max_size=8, unique=True))
    return b"".join(element(k, draw, depth) for k in sorted(keywords, key=keyword_dict.get))


@st.composite
def identifiers(draw: st.DrawFn) -> Dataset:
    """An identifier decoded by pydicom from wire bytes, as the SCP receives it."""
    keywords = draw(st.lists(st.sampled_from(TOP), max_size=8, unique=True))
    if draw(st.integers(0, 5)):  # mostly with the SPS sequence: one item, sometimes none or two
        keywords.append(SPS_SEQUENCE)
    parts = []
    for keyword in sorted(keywords, key=keyword_dict.get):
        if keyword == SPS_SEQUENCE:
            count = draw(st.sampled_from([0, 1, 1, 1, 2]))
            items = b"".join(ITEM + draw(dataset(SPS_INNER, 1)) + ITEM_END for _ in range(count))
            parts.append(struct.pack("<HH", 0x0040, 0x0100) + UNDEFINED + items + SEQUENCE_END)
        else:
            parts.append(element(keyword, draw, 0))
    try:
        return read_dataset(BytesIO(b"".join(parts)), is_implicit_VR=True,
                            is_little_endian=True)
    except ValueError:  # pydicom cannot even read it (e.g. a NUL in Specific Character Set)
        reject()


def readable(ds: Dataset) -> bool:
    """Whether pydicom can convert every value (the SCP answers A900 when it cannot)."""
    try:
        for elem in ds.iterall():
            _ = elem.value
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def reader() -> Iterator[sqlite3.Connection]:
    """A real store with orders mapped from HL7, a Japanese name and two stations among them."""
    mappings = load_mappings(ROOT / "mappings")
    samples = [order(n, station="CT01") for n in range(8)]
    samples += [order(8, patient_name="Yamada^Tarou~山田^太郎~やまだ^たろう",
                      charset="UNICODE UTF-8"),
                order(9, start="20261122", patient_name="MÜLLER^Jörg", charset="UNICODE UTF-8"),
                order(7, order_control="SC", order_status="CM", control_id="X7")]
    with tempfile.TemporaryDirectory(prefix="fuzz-cfind-") as tmp:
        path = Path(tmp) / "broker.sqlite"
        writer = connect(path, synchronous="OFF")
        migrate(writer)
        repo = OrderRepo(writer, 0.0)
        for sample in samples:
            for ev in map_message(parse(sample.text(), "utf_8"), mappings):
                apply(repo, ev)
        conn = open_reader(path)
        try:
            yield conn
        finally:
            conn.close()
            writer.close()


def test_the_store_is_not_empty(reader: sqlite3.Connection) -> None:
    parsed = parse_identifier(Dataset())
    parsed.query.include_hidden = True
    assert len(list(search(reader, parsed.query))) == 10  # the completed one included


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(identifier=identifiers(), station_key=st.sampled_from(["", "CT01", "*"]))
def test_any_identifier_is_refused_or_answered(identifier: Dataset, station_key: str,
                                               reader: sqlite3.Connection) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about values invalid for their VR
        if not readable(identifier):
            return
        try:
            parsed = parse_identifier(identifier, station_key)
        except DimseFailure as exc:
            assert exc.status in (0xA900, 0xC000) and exc.comment
            return
        for row in search(reader, parsed.query):
            for charset in DICOM_CHARSETS:
                names = latin1_name if charset == "ISO_IR 100" else None
                nodes = response_nodes(row, parsed.keys, names)
                for implicit in (True, False):
                    assert encode(nodes, charset, implicit)
                assert to_pydicom(nodes, charset).SpecificCharacterSet == charset


def test_uid_list_of_empty_values_is_universal(reader: sqlite3.Connection) -> None:
    """Found by the property above: a Study Instance UID of only backslashes raised
    IndexError (answered A900 'cannot be read'); it is an empty key: universal matching."""
    ds = Dataset()
    ds.StudyInstanceUID = "\\"
    ds.ScheduledProcedureStepSequence = [Dataset()]
    parsed = parse_identifier(ds)
    assert parsed.query.matches == []
    assert [k.keyword for k in parsed.keys] == ["StudyInstanceUID", SPS_SEQUENCE]
    assert len(list(search(reader, parsed.query))) == 9  # every step not yet performed
