"""The HL7 v2 parser: broker.hl7.message.parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.hl7 import charset
from broker.hl7.escape import Delimiters
from broker.hl7.message import Message, ParseError, parse

HL7_DIR = Path(__file__).resolve().parents[3] / "testdata" / "hl7"

MSH = "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101120000||ORM^O01^ORM_O01|CTRL42|P|2.3.1"
BODY = ["PID|||123^^^HOSP||Doe^John", "PV1||O", "ORC|NW|P1|F1", "OBR|1|P1|F1|CT1^Head CT"]


def load(name: str) -> Message:
    decoded = charset.decode((HL7_DIR / name).read_bytes())
    return parse(decoded.text, decoded.codec)


SAMPLES = {
    "ADT^A31-UpdatePersonInfo.hl7": ("ADT^A31", "100212", "2.5.1", ["MSH", "PID", "NTE"]),
    "ADT^A40-PatientMerge.hl7": ("ADT^A40", "1002122", "2.5.1", ["MSH", "PID", "NTE", "MRG"]),
    "ADT^A47-ChangePatientID.hl7": ("ADT^A47", "1002123", "2.5.1",
                                    ["MSH", "PID", "NTE", "MRG"]),
    "OMI^O23-ImagingOrder.hl7": ("OMI^O23", "1001125", "2.5.1",
                                 ["MSH", "PID", "NTE", "PV1", "ORC", "TQ1", "OBR", "OBX", "OBX",
                                  "NTE", "IPC"]),
    "ORM^O01-GeneralOrder.hl7": ("OMI^O23", "1001126", "2.5.1",
                                 ["MSH", "PID", "NTE", "PV1", "ORC", "TQ1", "OBR", "OBX", "OBX",
                                  "NTE", "ZDS"]),
    "ORM^O01.hl7": ("ORM^O01", "103106", "2.3.1", ["MSH", "PID", "PV1", "ORC", "OBR", "ZDS"]),
    "SIU^S12-NewAppointmentBooking.hl7": ("SIU^S12", "1001127", "2.5.1",
                                          ["MSH", "PID", "NTE", "NTE", "NTE", "NTE", "PV1",
                                           "AIS", "AIL", "AIP"]),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_parses(name: str) -> None:
    message_type, control_id, version, segments = SAMPLES[name]
    m = load(name)
    assert m.message_type == message_type
    assert m.control_id == control_id
    assert m.version == version
    assert m.processing_id == "P"
    assert m.sending_application == "MESA_OF"
    assert m.sending_facility == "XYZ_RADIOLOGY"
    assert [s.name for s in m.segments] == segments
    assert m.delimiters == Delimiters()


def test_sample_field_values() -> None:
    m = load("ORM^O01.hl7")
    pid = m.first("PID")
    assert pid is not None
    assert pid.get(3) == "583295^^^ADT1"
    assert pid.get(5) == "DOE^J1"
    assert pid.get(8) == "M"
    obr = m.first("OBR")
    assert obr is not None
    assert obr.get(4) == "P1^Procedure 1^ERL_MESA^X1_A1^SP Action Item X1_A1^DSS_MESA"
    assert obr.get(18) == "MOF5026"
    assert obr.get(24) == "MR"
    zds = m.first("ZDS")
    assert zds is not None and zds.get(1).startswith("1.113654.3.13.1026^")


def test_siu_keeps_escapes_until_text_is_asked_for() -> None:
    m = load("SIU^S12-NewAppointmentBooking.hl7")
    ais = m.first("AIS")
    assert ais is not None
    raw = m.component(ais.get(3), 2)
    assert raw == "SEPTOPLASTIA (OPERA\\XC7\\\\XC3\\O ISOLADA)"
    assert m.text(raw) == "SEPTOPLASTIA (OPERAÇÃO ISOLADA)"


def test_sample_msh18_of_ascii_file() -> None:
    m = load("ORM^O01.hl7")
    assert m.codec == "ascii"
    assert m.msh.get(18) == " "
    assert m.msh.get(7) == ""


# -- segment separators -----------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(sep: str) -> None:
    m = parse(sep.join([MSH, *BODY]) + sep)
    assert [s.name for s in m.segments] == ["MSH", "PID", "PV1", "ORC", "OBR"]
    obr = m.first("OBR")
    assert obr is not None and obr.get(4) == "CT1^Head CT"


def test_mixed_separators_and_blank_lines() -> None:
    text = MSH + "\r\n" + BODY[0] + "\r\r" + BODY[1] + "\n\n" + BODY[2] + "\r\n\r\n"
    m = parse(text)
    assert [s.name for s in m.segments] == ["MSH", "PID", "PV1", "ORC"]


def test_mllp_and_padding_characters_are_stripped() -> None:
    m = parse("\x0b\r\n" + MSH + "\r" + BODY[0] + "\r\x1c\r\x00")
    assert [s.name for s in m.segments] == ["MSH", "PID"]


# -- MSH numbering ----------------------------------------------------------------------------


def test_msh_field_numbering() -> None:
    m = parse(MSH + "\r" + BODY[0])
    msh = m.msh
    assert msh.name == "MSH"
    assert msh.get(1) == "|"
    assert msh.get(2) == "^~\\&"
    assert msh.get(3) == "RIS"
    assert msh.get(4) == "HOSP"
    assert msh.get(5) == "PACS"
    assert msh.get(6) == "RAD"
    assert msh.get(7) == "20240101120000"
    assert msh.get(9) == "ORM^O01^ORM_O01"
    assert msh.get(10) == "CTRL42"
    assert msh.get(11) == "P"
    assert msh.get(12) == "2.3.1"
    assert msh.get(13) == ""
    assert msh.get(0) == ""  # field 0 is not a field


def test_msh_accessors() -> None:
    m = parse(MSH + "\r" + BODY[0])
    assert m.message_code == "ORM"
    assert m.trigger_event == "O01"
    assert m.message_type == "ORM^O01"
    assert m.msh_value(9, 3) == "ORM_O01"
    assert m.control_id == "CTRL42"
    assert m.processing_id == "P"
    assert m.version == "2.3.1"


def test_non_msh_segment_numbering() -> None:
    m = parse(MSH + "\r" + BODY[0])
    pid = m.first("PID")
    assert pid is not None
    assert pid.fields[0] == "PID"
    assert pid.get(1) == "" and pid.get(2) == ""
    assert pid.get(3) == "123^^^HOSP"
    assert pid.get(5) == "Doe^John"
    assert pid.get(99) == ""


def test_custom_delimiters() -> None:
    text = "MSH#@*!$#RIS#HOSP#PACS#RAD#20240101##ADT@A08#C1#P#2.5\rPID###9@@@X*8@@@Y##A!S!B@C"
    m = parse(text)
    assert m.delimiters == Delimiters(field="#", component="@", repetition="*", escape="!",
                                      subcomponent="$")
    assert m.message_type == "ADT^A08"
    assert m.msh.get(1) == "#"
    pid = m.first("PID")
    assert pid is not None
    assert pid.get(3) == "9@@@X*8@@@Y"
    # \S\ stands for the message's own component separator
    assert m.text(m.component(pid.get(5), 1)) == "A@B"
    assert m.component(pid.get(5), 2) == "C"


def test_truncation_character_of_v27_is_accepted() -> None:
    m = parse("MSH|^~\\&#|A|B|C|D|||ADT^A01|1|P|2.7\rPID|||1")
    assert m.delimiters.subcomponent == "&"
    assert m.msh.get(2) == "^~\\&#"


def test_first_all_and_component() -> None:
    m = parse("\r".join([MSH, "NTE|1||one", "NTE|2||two", "PID|||1"]))
    assert [s.get(3) for s in m.all("NTE")] == ["one", "two"]
    first = m.first("NTE")
    assert first is not None and first.get(3) == "one"
    assert m.first("ZZZ") is None
    assert list(m.all("ZZZ")) == []
    assert m.component("a^b^c", 2) == "b"
    assert m.component("a^b^c", 4) == ""


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\r\n", "\x0b\x1c\r", "   "])
def test_empty_text(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.location == "MSH"
    assert "empty" in info.value.reason


@pytest.mark.parametrize("text", ["PID|||1\rMSH|^~\\&|A", "HELLO WORLD", "msh|^~\\&|A|B"])
def test_no_msh(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.location == "MSH"
    assert info.value.code == 100
    assert "MSH" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "MSH|^~|",
        "MSH|^~|A|B|C|D|||ADT^A01|1|P|2.5",
        "MSH|^^\\&|A|B|C|D|||ADT^A01|1|P|2.5",  # repeated delimiter
        "MSH|^~\\||A|B|C|D|||ADT^A01|1|P|2.5",  # a delimiter equal to the field separator
        "MSH|^~A&|A|B|C|D|||ADT^A01|1|P|2.5",  # alphanumeric delimiter
        "MSH|^~\\&#$|A|B|C|D|||ADT^A01|1|P|2.5",  # six characters
    ],
)
def test_bad_encoding_characters(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.location == "MSH-2"
    assert info.value.code == 102


@pytest.mark.parametrize("fs", ["A", "1", " "])
def test_bad_field_separator(fs: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(f"MSH{fs}^~\\&{fs}A{fs}B{fs}C{fs}D{fs}{fs}{fs}ADT^A01{fs}1{fs}P{fs}2.5")
    assert info.value.location in ("MSH-1", "MSH")
    assert info.value.code in (100, 102)


@pytest.mark.parametrize(
    ("segment", "location"),
    [("pid|||1", "pid"), ("PI|||1", "PI"), ("PIDX|||1", "PID"), ("1PD|||1", "1PD"),
     ("P-D|||1", "P-D")],
)
def test_invalid_segment_name(segment: str, location: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(MSH + "\r" + BODY[0] + "\r" + segment)
    assert info.value.location == location
    assert info.value.code == 100
    assert "segment 3" in info.value.reason


def test_invalid_segment_name_with_empty_name() -> None:
    with pytest.raises(ParseError) as info:
        parse(MSH + "\r|||1")
    assert info.value.location == "?"


@pytest.mark.parametrize(
    ("n", "label"),
    [(9, "message type"), (10, "message control ID"), (11, "processing ID"), (12, "version ID")],
)
def test_empty_required_msh_fields(n: int, label: str) -> None:
    fields = MSH.split("|")
    fields[n - 1] = "" if n != 9 else "  "
    with pytest.raises(ParseError) as info:
        parse("|".join(fields) + "\r" + BODY[0])
    assert info.value.location == f"MSH-{n}"
    assert info.value.code == 101
    assert label in info.value.reason


def test_msh_missing_trailing_fields_reports_msh9() -> None:
    with pytest.raises(ParseError) as info:
        parse("MSH|^~\\&|A|B")
    assert info.value.location == "MSH-9"


def test_parse_error_defaults() -> None:
    err = ParseError("why")
    assert (err.reason, err.location, err.code) == ("why", "MSH", 100)
    assert str(err) == "why"
    assert isinstance(err, ValueError)
