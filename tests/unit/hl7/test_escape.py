"""HL7 escape sequences: broker.hl7.escape.unescape / escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.hl7.escape import DEFAULT_DELIMITERS, LINE_BREAK, Delimiters, escape, unescape

CUSTOM = Delimiters(field="#", component="@", repetition="*", escape="!", subcomponent="$")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A\\F\\B", "A|B"),
        ("A\\S\\B", "A^B"),
        ("A\\T\\B", "A&B"),
        ("A\\R\\B", "A~B"),
        ("A\\E\\B", "A\\B"),
        ("\\X41\\", "A"),
        ("\\X414243\\", "ABC"),
        ("x\\X0D0A\\y", "x\r\ny"),
        ("line1\\.br\\line2", "line1\r\nline2"),
        ("\\H\\bold\\N\\ normal", "bold normal"),
        ("\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"),
        ("\\E\\F\\E\\", "\\F\\"),
    ],
)
def test_unescape_standard_sequences(raw: str, expected: str) -> None:
    assert unescape(raw) == expected


def test_line_break_constant_is_crlf() -> None:
    assert LINE_BREAK == "\r\n"
    assert unescape("\\.br\\") == "\r\n"


def test_text_without_escape_character_is_returned_unchanged() -> None:
    text = "Smith^John|no escapes & here"
    assert unescape(text) == text


@pytest.mark.parametrize(
    "raw",
    [
        "\\Q\\",  # unknown single letter
        "\\ZLOCAL\\",  # locally defined escape, not understood
        "\\X\\",  # \X with no hex digits
        "\\X4\\",  # odd number of hex digits
        "\\XZZ\\",  # not hex
        "\\.sp\\",  # formatting command the broker does not render
    ],
)
def test_unknown_sequences_are_kept_as_is(raw: str) -> None:
    assert unescape(f"a{raw}b") == f"a{raw}b"


@pytest.mark.parametrize("raw", ["abc\\F", "abc\\", "\\X41", "ends with \\.br"])
def test_unterminated_sequence_is_kept(raw: str) -> None:
    assert unescape(raw) == raw


def test_unterminated_after_a_valid_sequence() -> None:
    assert unescape("a\\F\\b\\S") == "a|b\\S"


def test_character_set_switches_are_dropped() -> None:
    assert unescape("A\\C2842\\B") == "AB"
    assert unescape("A\\M2442D4\\B") == "AB"


def test_hex_sequence_uses_codec() -> None:
    assert unescape("\\XE9\\", codec="latin-1") == "é"
    assert unescape("\\XC3A9\\", codec="utf-8") == "é"
    assert unescape("\\XC3A9\\", codec="latin-1") == "Ã©"


def test_hex_sequence_invalid_for_codec_is_replaced_not_raised() -> None:
    assert unescape("\\XFF\\", codec="utf-8") == "\ufffd"


def test_hex_sequences_from_the_siu_sample() -> None:
    # AIS-3 of SIU^S12-NewAppointmentBooking.hl7, a Latin-1 message: OPERAÇÃO
    raw = "SEPTOPLASTIA (OPERA\\XC7\\\\XC3\\O ISOLADA)"
    assert unescape(raw, codec="latin-1") == "SEPTOPLASTIA (OPERAÇÃO ISOLADA)"


def test_custom_delimiters_unescape() -> None:
    assert unescape("A!F!B!S!C!T!D!R!E!E!", CUSTOM) == "A#B@C$D*E!"
    assert unescape("x!.br!y", CUSTOM) == "x\r\ny"
    # with custom delimiters a backslash is ordinary text
    assert unescape("A\\F\\B", CUSTOM) == "A\\F\\B"


def test_escape_default_delimiters() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


@pytest.mark.parametrize("text", ["a\r\nb", "a\rb", "a\nb"])
def test_escape_line_breaks_become_br(text: str) -> None:
    assert escape(text) == "a\\.br\\b"


def test_escape_custom_delimiters() -> None:
    assert escape("a#b@c$d*e!f", CUSTOM) == "a!F!b!S!c!T!d!R!e!E!f"
    assert escape("back\\slash", CUSTOM) == "back\\slash"


def test_escape_is_identity_on_plain_text() -> None:
    assert escape("Plain text, 123.") == "Plain text, 123."


def test_escaped_text_contains_no_bare_delimiters() -> None:
    out = escape("|^~&")
    for ch in "|^~&":
        assert ch not in out


@settings(max_examples=200, deadline=None)
@given(st.text().filter(lambda s: "\r" not in s and "\n" not in s))
def test_round_trip_default_delimiters(text: str) -> None:
    escaped = escape(text)
    assert unescape(escaped) == text
    assert "|" not in escaped and "^" not in escaped and "~" not in escaped
    assert "&" not in escaped


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab#@*!$\\|^~& é中")))
def test_round_trip_custom_delimiters(text: str) -> None:
    assert unescape(escape(text, CUSTOM), CUSTOM) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text().filter(lambda s: "\r" not in s and "\n" not in s), min_size=1,
                max_size=5))
def test_escaped_components_survive_splitting(parts: list[str]) -> None:
    d = DEFAULT_DELIMITERS
    joined = d.component.join(escape(p) for p in parts)
    assert [unescape(p) for p in joined.split(d.component)] == parts
