"""Original-mode acknowledgements: broker.hl7.ack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.hl7 import charset
from broker.hl7.ack import (
    ERROR_CODES,
    Hl7Error,
    Hl7Reject,
    ack_code_of,
    build_ack,
    new_control_id,
)
from broker.hl7.escape import unescape
from broker.hl7.message import Message, parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from tests.support import hl7_strict

ROOT = Path(__file__).resolve().parents[3]
HL7_DIR = ROOT / "testdata" / "hl7"


def load(name: str) -> Message:
    decoded = charset.decode((HL7_DIR / name).read_bytes())
    return parse(decoded.text, decoded.codec)


def ack_segments(text: str) -> dict[str, list[list[str]]]:
    assert text.endswith("\r")
    out: dict[str, list[list[str]]] = {}
    for line in text.split("\r")[:-1]:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        out.setdefault(fields[0], []).append(fields)
    return out


def build(code: str, inbound: Message | None, *errors: Hl7Error, **kw: str) -> str:
    return build_ack(code, inbound, errors=errors, control_id="ACK1", timestamp="20240102030405",
                     **kw)


# -- MSH and MSA ------------------------------------------------------------------------------


def test_aa_for_v231_order() -> None:
    inbound = load("ORM^O01.hl7")
    text = build("AA", inbound)
    seg = ack_segments(text)
    assert list(seg) == ["MSH", "MSA"]
    (msh,) = seg["MSH"]
    assert msh[2] == "^~\\&"
    assert (msh[3], msh[4]) == ("MESA_IM", "XYZ_IMAGE_MANAGER")  # from inbound MSH-5/6
    assert (msh[5], msh[6]) == ("MESA_OF", "XYZ_RADIOLOGY")  # from inbound MSH-3/4
    assert msh[7] == "20240102030405"
    assert msh[9] == "ACK^O01"
    assert msh[10] == "ACK1"
    assert msh[11] == "P"
    assert msh[12] == "2.3.1"
    assert len(msh) == 13  # MSH-18 of the inbound message is blank: not echoed
    (msa,) = seg["MSA"]
    assert msa == ["MSA", "AA", "103106", ""]
    # the ACK parses as a message
    parsed = parse(text)
    assert parsed.message_type == "ACK^O01"
    assert parsed.control_id == "ACK1"


def test_aa_for_v251_order_echoes_charset() -> None:
    inbound = load("OMI^O23-ImagingOrder.hl7")
    (msh,) = ack_segments(build("AA", inbound))["MSH"]
    assert msh[9] == "ACK^O23^ACK"
    assert msh[12] == "2.5.1"
    assert msh[18] == "8859/1"
    assert len(msh) == 19
    assert ack_code_of(build("AA", inbound)) == ("AA", "1001125")


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.3", "ACK^A08"), ("2.3.1", "ACK^A08"), ("2.4", "ACK^A08^ACK"), ("2.5", "ACK^A08^ACK"),
     ("2.8", "ACK^A08^ACK")],
)
def test_ack_message_type_by_version(version: str, expected: str) -> None:
    inbound = parse(f"MSH|^~\\&|A|B|C|D|||ADT^A08|9|P|{version}\rPID|||1")
    assert ack_segments(build("AA", inbound))["MSH"][0][9] == expected


def test_msh18_echoes_inbound_charset() -> None:
    inbound = parse("MSH|^~\\&|A|B|C|D|||ADT^A08|9|P|2.5||||||UNICODE UTF-8\rPID|||1")
    (msh,) = ack_segments(build("AA", inbound))["MSH"]
    assert msh[18] == "UNICODE UTF-8"


def test_empty_receiving_application_falls_back_to_ours() -> None:
    inbound = parse("MSH|^~\\&|RIS|HOSP|||||ADT^A08|9|P|2.5\rPID|||1")
    (msh,) = ack_segments(build("AA", inbound, application="MWL", facility="RAD"))["MSH"]
    assert (msh[3], msh[4], msh[5], msh[6]) == ("MWL", "RAD", "RIS", "HOSP")


def test_ack_without_inbound_message() -> None:
    text = build("AR", None, Hl7Error(100, "garbled"))
    seg = ack_segments(text)
    (msh,) = seg["MSH"]
    assert (msh[3], msh[5]) == ("MWLBROKER", "")
    assert msh[9] == "ACK"
    assert msh[12] == "2.5.1"
    assert seg["MSA"][0][:3] == ["MSA", "AR", ""]
    assert ack_code_of(text) == ("AR", "")


def test_ack_uses_inbound_delimiters() -> None:
    inbound = parse("MSH#@*!$#RIS#HOSP#PACS#RAD#20240101##ADT@A08#C1#P#2.5\rPID###1")
    text = build("AE", inbound, Hl7Error(101, "x # y @ z", "PID-3.1"))
    lines = text.split("\r")
    assert lines[0].startswith("MSH#@*!$#PACS#RAD#RIS#HOSP#")
    assert "ACK@A08@ACK" in lines[0]
    assert lines[1].startswith("MSA#AE#C1#")
    err = lines[2].split("#")
    assert err[0] == "ERR"
    assert err[2] == "PID@1@3@@1"
    assert err[3] == "101@Required field missing@HL70357"
    assert "!F!" in err[8] and "!S!" in err[8]
    assert ack_code_of(text) == ("AE", "C1")


def test_generated_control_ids_are_unique() -> None:
    ids = {new_control_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) <= 199 and i.startswith("B") for i in ids)
    text = build_ack("AA", None)
    assert re.match(r"^B[0-9A-Z]+$", ack_segments(text)["MSH"][0][10])


# -- ERR --------------------------------------------------------------------------------------


def test_err_segment_fields() -> None:
    inbound = load("ORM^O01.hl7")
    text = build("AE", inbound, Hl7Error(103, "order control 'ZZ' unknown", "ORC-1"))
    seg = ack_segments(text)
    (err,) = seg["ERR"]
    assert err[1] == "ORC^1^1^103&Table value not found&HL70357"  # ERR-1 ELD
    assert err[2] == "ORC^1^1"  # ERR-2 ERL
    assert err[3] == "103^Table value not found^HL70357"  # ERR-3
    assert err[4] == "E"  # ERR-4 severity
    assert unescape(err[8]) == "Table value not found at ORC-1: order control 'ZZ' unknown"
    (msa,) = seg["MSA"]
    assert msa[1:3] == ["AE", "103106"]
    assert unescape(msa[3]).startswith("Table value not found at ORC-1")


STRICT_CASES = {
    "AA": ("AA", ()),
    "AE": ("AE", (Hl7Error(103, "order control 'ZZ' unknown", "ORC-1"),
                  Hl7Error(101, "PID-3 is empty", "PID-3.1"), Hl7Error(207, "no location"))),
    "AR": ("AR", (Hl7Error(203, "version '9.9' is not supported", "MSH-12"),)),
    "AA with W": ("AA", (Hl7Error(102, "a backslash replaced by '/'", "PID-5.1", "W"),)),
}


@pytest.mark.parametrize("case", list(STRICT_CASES))
def test_v251_acks_are_valid_for_hl7apy_strict(case: str) -> None:
    code, errors = STRICT_CASES[case]
    text = build(code, load("OMI^O23-ImagingOrder.hl7"), *errors)
    assert hl7_strict.problems(text) == []
    assert hl7_strict.structure(text) == "ACK"
    assert [e[3:5] for e in ack_segments(text).get("ERR", [])] == [
        [f"{e.code}^{ERROR_CODES[e.code]}^HL70357", e.severity] for e in errors]


def test_v231_aa_is_valid_for_hl7apy_strict() -> None:
    text = build("AA", load("ORM^O01.hl7"))
    assert hl7_strict.problems(text) == []
    assert hl7_strict.structure(text) == "ACK"


def test_err_location_with_component() -> None:
    (err,) = ack_segments(build("AE", None, Hl7Error(101, "missing", "PID-3.1")))["ERR"]
    assert err[1] == "PID^1^3^101&Required field missing&HL70357"
    assert err[2] == "PID^1^3^^1"


def test_err_location_with_repetition_and_occurrence_marks() -> None:
    (err,) = ack_segments(build("AE", None, Hl7Error(102, "bad", "OBR[2]-4[*].4")))["ERR"]
    erl = err[2].split("^")
    assert (erl[0], erl[2], erl[4]) == ("OBR", "4", "4")


def test_err_without_location() -> None:
    (err,) = ack_segments(build("AE", None, Hl7Error(207, "internal error")))["ERR"]
    assert err[1] == "" and err[2] == ""
    assert err[3] == "207^Application internal error^HL70357"
    assert err[4] == "E"


def test_one_err_per_error() -> None:
    seg = ack_segments(build("AE", None, Hl7Error(101, "a", "PID-3"), Hl7Error(102, "b", "PID-7")))
    assert [e[2] for e in seg["ERR"]] == ["PID^1^3", "PID^1^7"]
    assert "; " in unescape(seg["MSA"][0][3])


def test_error_text_with_delimiters_is_escaped() -> None:
    inbound = load("ORM^O01.hl7")
    text = build("AE", inbound, Hl7Error(102, "value 'a|b^c&d~e\\f' is bad", "PID-7"))
    lines = text.split("\r")
    msa = lines[1].split("|")
    err = lines[2].split("|")
    assert len(msa) == 4
    assert len(err) == 9
    assert unescape(err[8]) == "Data type error at PID-7: value 'a|b^c&d~e\\f' is bad"
    assert "\\F\\" in msa[3] and "\\S\\" in msa[3]
    assert unescape(msa[3]) == "Data type error at PID-7: value 'a|b^c&d~e\\f' is bad"
    assert "^" not in err[8] and "~" not in err[8] and "&" not in err[8]


def test_msa3_is_truncated_before_escaping() -> None:
    text = build("AE", None, Hl7Error(102, "x" * 200, "PID-7"))
    msa = ack_segments(text)["MSA"][0]
    assert len(unescape(msa[3])) == 80


def test_unknown_error_code_is_described_generically() -> None:
    (err,) = ack_segments(build("AE", None, Hl7Error(999, "odd", "PID-1")))["ERR"]
    assert err[3] == "999^Error^HL70357"


def test_err_for_conditional_path_location() -> None:
    location = "OBX{3.1=29463-7|3.2=Body Weight}-5"
    text = build("AE", None, Hl7Error(102, "'heavy' is not a number", location))
    err = text.split("\r")[2].split("|")
    assert len(err) == 9
    assert err[1] == "OBX^1^5^102&Data type error&HL70357"
    assert err[2] == "OBX^1^5"


def test_err_for_engine_rejection_of_obx_weight() -> None:
    decoded = charset.decode((HL7_DIR / "OMI^O23-ImagingOrder.hl7").read_bytes())
    inbound = parse(decoded.text.replace("|65|kg|", "|heavy|kg|"), decoded.codec)
    with pytest.raises(Hl7Reject) as info:
        map_message(inbound, load_mappings(ROOT / "mappings"))
    text = build("AE", inbound, *info.value.errors)
    err = text.split("\r")[2].split("|")
    assert len(err) == 9
    assert err[2] == "OBX^1^5"


# -- describe / reject / ack_code_of ----------------------------------------------------------


def test_hl7_error_describe() -> None:
    assert Hl7Error(101, "PID-3 is empty", "PID-3.1").describe() == (
        "Required field missing at PID-3.1: PID-3 is empty")
    assert Hl7Error(207, "boom").describe() == "Application internal error: boom"


def test_hl7_reject_message_joins_errors() -> None:
    err = Hl7Reject("AE", Hl7Error(101, "a", "PID-3"), Hl7Error(102, "b"))
    assert err.ack_code == "AE"
    assert len(err.errors) == 2
    assert str(err) == "Required field missing at PID-3: a; Data type error: b"


def test_error_codes_table_0357() -> None:
    assert ERROR_CODES[0] == "Message accepted"
    assert ERROR_CODES[200] == "Unsupported message type"
    assert ERROR_CODES[207] == "Application internal error"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MSH|^~\\&|A|B|C|D|||ACK|1|P|2.5\rMSA|AA|123\r", ("AA", "123")),
        ("MSH|^~\\&|A|B|C|D|||ACK|1|P|2.5\nMSA|AE|9|text\n", ("AE", "9")),
        ("MSH#^~\\&#A\rMSA#AR#77\r", ("AR", "77")),
        ("MSH|^~\\&|A|B|C|D|||ACK|1|P|2.5\rMSA|CA\r", ("CA", "")),
        ("MSH|^~\\&|A|B|C|D|||ACK|1|P|2.5\r", ("", "")),
        ("", ("", "")),
        ("MSA|\r", ("", "")),
    ],
)
def test_ack_code_of(text: str, expected: tuple[str, str]) -> None:
    assert ack_code_of(text) == expected


def test_ack_code_of_round_trip_with_build_ack() -> None:
    inbound = load("ADT^A31-UpdatePersonInfo.hl7")
    for code in ("AA", "AE", "AR"):
        assert ack_code_of(build(code, inbound)) == (code, "100212")


def test_brokers_sharing_a_database_send_distinct_control_ids() -> None:
    from broker.hl7 import ack

    saved = ack._prefix
    try:
        ack.use_node("mwl-a:2575")
        first = {new_control_id()[13:18] for _ in range(3)}
        ack.use_node("mwl-b:2575")
        second = {new_control_id()[13:18] for _ in range(3)}
    finally:
        ack._prefix = saved
    assert len(first) == len(second) == 1 and first != second
