"""MSH-18 character sets: broker.hl7.charset."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.hl7 import charset
from broker.hl7.charset import (
    CharsetError,
    codec_for,
    declared_charset,
    decode,
    msh_value,
    normalise_name,
    peek_msh,
)

HL7_DIR = Path(__file__).resolve().parents[3] / "testdata" / "hl7"


def sample(name: str) -> bytes:
    return (HL7_DIR / name).read_bytes()


def msh(charset_field: str, *, sep: str = "|") -> str:
    """An MSH segment whose MSH-18 is ``charset_field``."""
    fields = ["MSH", "^~\\&", "RIS", "HOSP", "PACS", "RAD", "20240101120000", "",
              "ADT^A08", "CTRL1", "P", "2.5.1", "", "", "", "", "", charset_field]
    return sep.join(fields)


# -- MSH-18 names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("", "ascii"),
        ("ASCII", "ascii"),
        *[(f"8859/{n}", f"iso8859_{n}") for n in range(1, 10)],
        ("8859/15", "iso8859_15"),
        ("UNICODE UTF-8", "utf_8"),
        ("UNICODE", "utf_8"),
        ("UTF-8", "utf_8"),
        ("UTF8", "utf_8"),
        ("GB 18030-2000", "gb18030"),
        ("GB18030", "gb18030"),
        ("GBK", "gb18030"),
        ("ISO IR87", "iso2022_jp"),
        ("ISO IR14", "shift_jis"),
        ("KS X 1001", "euc_kr"),
        ("BIG-5", "big5"),
    ],
)
def test_standard_names_map_to_codecs(declared: str, codec: str) -> None:
    assert codec_for(declared) == codec


@pytest.mark.parametrize(
    "declared", ["unicode utf-8", "  UNICODE   UTF-8 ", "utf-8", "gb 18030-2000"]
)
def test_names_are_matched_case_and_blank_insensitively(declared: str) -> None:
    assert codec_for(declared) in ("utf_8", "gb18030")


def test_normalise_name() -> None:
    assert normalise_name("  unicode \t utf-8  ") == "UNICODE UTF-8"


@pytest.mark.parametrize("declared", ["KLINGON", "8859/99", "UTF-16X"])
def test_unknown_names_have_no_codec(declared: str) -> None:
    assert codec_for(declared) is None


def test_aliases_take_precedence_and_are_normalised() -> None:
    aliases = {"latin 1": "latin-1", "8859/1": "cp1252"}
    assert codec_for("LATIN  1", aliases) == "iso8859_1"
    assert codec_for("8859/1", aliases) == "cp1252"
    assert codec_for("8859/2", aliases) == "iso8859_2"


def test_alias_to_unknown_codec_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        codec_for("X", {"X": "no-such-codec"})


# -- reading MSH from raw bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "declared"),
    [
        ("ADT^A31-UpdatePersonInfo.hl7", "8859/1"),
        ("ADT^A40-PatientMerge.hl7", "8859/1"),
        ("ADT^A47-ChangePatientID.hl7", "8859/1"),
        ("OMI^O23-ImagingOrder.hl7", "8859/1"),
        ("ORM^O01-GeneralOrder.hl7", "8859/1"),
        ("ORM^O01.hl7", ""),  # MSH-18 is a single blank
        ("SIU^S12-NewAppointmentBooking.hl7", "8859/1"),
    ],
)
def test_declared_charset_of_samples(name: str, declared: str) -> None:
    assert declared_charset(sample(name)) == declared


def test_peek_msh_on_sample_numbers_fields_from_msh2() -> None:
    fields = peek_msh(sample("ORM^O01.hl7"))
    assert fields[0] == "MSH"
    assert fields[1] == "^~\\&"
    assert msh_value(fields, 3) == "MESA_OF"
    assert msh_value(fields, 4) == "XYZ_RADIOLOGY"
    assert msh_value(fields, 5) == "MESA_IM"
    assert msh_value(fields, 9) == "ORM"
    assert msh_value(fields, 10) == "103106"
    assert msh_value(fields, 12) == "2.3.1"
    # only the first line is read
    assert not any("PID" in f for f in fields)


def test_peek_msh_reads_only_up_to_the_first_segment_separator() -> None:
    raw = b"MSH|^~\\&|A|B\nPID|||X"
    assert peek_msh(raw) == ["MSH", "^~\\&", "A", "B"]


@pytest.mark.parametrize(
    ("name", "control_id"),
    [
        ("ADT^A31-UpdatePersonInfo.hl7", "100212"),
        ("OMI^O23-ImagingOrder.hl7", "1001125"),
        ("SIU^S12-NewAppointmentBooking.hl7", "1001127"),
    ],
)
def test_msh_value_control_id_of_samples(name: str, control_id: str) -> None:
    assert msh_value(peek_msh(sample(name)), 10) == control_id


def test_msh_value_takes_first_repetition_first_component() -> None:
    fields = peek_msh(msh("8859/1~UNICODE UTF-8").encode())
    assert msh_value(fields, 9) == "ADT"
    assert msh_value(fields, 18) == "8859/1"
    assert declared_charset(msh("8859/1~UNICODE UTF-8").encode()) == "8859/1"


def test_msh_value_out_of_range() -> None:
    fields = peek_msh(b"MSH|^~\\&|APP")
    assert msh_value(fields, 3) == "APP"
    assert msh_value(fields, 4) == ""
    assert msh_value(fields, 1) == ""
    assert msh_value(fields, 40) == ""


def test_peek_msh_with_mllp_start_byte_and_custom_separator() -> None:
    raw = b"\x0b" + msh("UNICODE UTF-8", sep="#").encode()
    fields = peek_msh(raw)
    assert fields[0] == "MSH" and msh_value(fields, 3) == "RIS"
    assert declared_charset(raw) == "UNICODE UTF-8"


@pytest.mark.parametrize("raw", [b"", b"PID|||1", b"x" * 40 + b"MSH|^~\\&|A", b"MSH"])
def test_peek_msh_without_usable_msh(raw: bytes) -> None:
    assert peek_msh(raw) == []
    assert declared_charset(raw) == ""


def test_declared_charset_absent_when_msh_is_short() -> None:
    assert declared_charset(b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\r") == ""


# -- decoding ---------------------------------------------------------------------------------


def test_omi_sample_declared_latin1_is_sniffed_as_utf8() -> None:
    raw = sample("OMI^O23-ImagingOrder.hl7")
    assert b"\xe2\x80\x93" in raw  # UTF-8 en dash
    result = decode(raw)
    assert result.declared == "8859/1"
    assert result.codec == "utf_8"
    assert "–" in result.text
    assert "12 –35" in result.text
    assert "UTF-8" in result.note


def test_sniffing_can_be_disabled() -> None:
    raw = sample("OMI^O23-ImagingOrder.hl7")
    result = decode(raw, sniff_utf8=False)
    assert result.codec == "iso8859_1"
    assert "–" not in result.text
    assert "â\x80\x93" in result.text
    assert result.note == ""


def test_ascii_sample_decodes_without_note() -> None:
    result = decode(sample("ORM^O01.hl7"))
    assert result.codec == "ascii"
    assert result.declared == ""
    assert result.note == ""
    assert result.text.startswith("MSH|^~\\&|MESA_OF")


def test_latin1_bytes_declared_latin1_stay_latin1() -> None:
    raw = (msh("8859/1") + "\rPID|||1||Müller^Jürgen\r").encode("latin-1")
    result = decode(raw)
    assert result.codec == "iso8859_1"
    assert "Müller^Jürgen" in result.text
    assert result.note == ""


def test_utf8_declared_utf8() -> None:
    raw = (msh("UNICODE UTF-8") + "\rPID|||1||王^小明\r").encode("utf-8")
    result = decode(raw)
    assert result.codec == "utf_8"
    assert "王^小明" in result.text


def test_gb18030_declared_gb18030() -> None:
    raw = (msh("GB 18030-2000") + "\rPID|||1||王^小明\r").encode("gb18030")
    result = decode(raw)
    assert result.codec == "gb18030"
    assert "王^小明" in result.text


def gb18030_lying_as_utf8() -> tuple[bytes, int]:
    head = (msh("UNICODE UTF-8") + "\rPID|||1||").encode("ascii")
    return head + "王^小明".encode("gb18030") + b"\r", len(head)


def test_gb18030_bytes_declared_utf8_raise_with_byte_offset() -> None:
    raw, offset = gb18030_lying_as_utf8()
    with pytest.raises(CharsetError) as info:
        decode(raw)
    message = str(info.value)
    assert f"offset {offset}" in message
    assert f"0x{raw[offset]:02X}" in message
    assert "UNICODE UTF-8" in message


def test_gb18030_bytes_declared_utf8_accepted_with_override() -> None:
    raw, _ = gb18030_lying_as_utf8()
    result = decode(raw, override="gb18030")
    assert result.codec == "gb18030"
    assert result.declared == "UNICODE UTF-8"
    assert "王^小明" in result.text
    assert "override" in result.note


def test_override_that_cannot_read_the_bytes_raises() -> None:
    raw = (msh("8859/1") + "\rPID|||1||Müller\r").encode("latin-1")
    with pytest.raises(CharsetError, match=r"offset \d+"):
        decode(raw, override="ascii")


def test_fallback_used_when_declared_charset_fails() -> None:
    raw = (msh("") + "\rPID|||1||Müller\r").encode("latin-1")
    with pytest.raises(CharsetError):
        decode(raw)
    result = decode(raw, fallbacks=("latin-1",))
    assert result.codec == "iso8859_1"
    assert "Müller" in result.text
    assert "fallback" in result.note


def test_fallbacks_are_tried_in_order_and_unknown_ones_skipped() -> None:
    raw, _ = gb18030_lying_as_utf8()
    result = decode(raw, fallbacks=("no-such-codec", "ascii", "gb18030", "latin-1"))
    assert result.codec == "gb18030"
    assert "王^小明" in result.text


def test_all_fallbacks_failing_raises_charset_error() -> None:
    raw, offset = gb18030_lying_as_utf8()
    with pytest.raises(CharsetError, match=f"offset {offset}"):
        decode(raw, fallbacks=("ascii",))


@pytest.mark.parametrize("declared", ["KLINGON", "8859/99"])
def test_unknown_declared_charset_raises(declared: str) -> None:
    raw = (msh(declared) + "\rPID|||1\r").encode("ascii")
    with pytest.raises(CharsetError, match=re.escape(repr(declared))):
        decode(raw)


def test_unknown_declared_charset_accepted_through_alias() -> None:
    raw = (msh("KLINGON") + "\rPID|||1||Müller\r").encode("latin-1")
    result = decode(raw, aliases={"klingon": "latin-1"})
    assert result.codec == "iso8859_1"
    assert "Müller" in result.text


def test_sniffing_does_not_apply_to_multibyte_declared_sets() -> None:
    text = msh("GB18030") + "\rPID|||1||Ü\r"
    raw = text.encode("utf-8")  # valid UTF-8 and valid GB18030 (as different characters)
    result = decode(raw)
    assert result.codec == "gb18030"


def test_charset_error_is_a_value_error() -> None:
    assert issubclass(charset.CharsetError, ValueError)
