"""Value transforms named in mapping files: broker.mapping.transforms."""

from __future__ import annotations

import pytest

from broker.hl7.message import parse
from broker.mapping import transforms as t
from broker.mapping.transforms import TRANSFORMS, VR_TRANSFORM, TransformContext, TransformError

MSG = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ORM^O01|1|P|2.3.1\rPID|||1")
CUSTOM_MSG = parse("MSH#@*!$#RIS#HOSP#PACS#RAD#20240101##ORM@O01#1#P#2.3.1\rPID###1")
TABLES = {
    "priority": {"S": "STAT", "R": "ROUTINE"},
    "sex": {"M": "M", "F": "F", "*": "O"},
}
CTX = TransformContext(MSG, TABLES)
CUSTOM_CTX = TransformContext(CUSTOM_MSG, TABLES)


# -- date / time / datetime -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20141014", "20141014"),
        ("201410", "20141001"),
        ("2014", "20140101"),
        ("20141014123045", "20141014"),
        ("20141014123045.1234+0100", "20141014"),
        (" 20141014 ", "20141014"),
        ("", ""),
    ],
)
def test_date(text: str, expected: str) -> None:
    assert t.to_date([text], CTX, None) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200008161510", "1510"),
        ("20000816151045", "151045"),
        ("20000816151045.12", "151045.12"),
        ("2000081615", "15"),
        ("20000816151045-0500", "151045"),
        ("20000816", ""),  # a date alone has no time
        ("", ""),
    ],
)
def test_time(text: str, expected: str) -> None:
    assert t.to_time([text], CTX, None) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200008161510", "200008161510"),
        ("20000816151045.1+0100", "20000816151045.1+0100"),
        ("2000", "2000"),
        ("", ""),
    ],
)
def test_datetime(text: str, expected: str) -> None:
    assert t.to_datetime([text], CTX, None) == [expected]


def test_dates_keep_list_order_and_empties() -> None:
    assert t.to_date(["20200101", "", "199912"], CTX, None) == ["20200101", "", "19991201"]


@pytest.mark.parametrize(
    "text",
    ["abc", "2014-10-14", "14/10/2014", "2014101", "201410141", "20141014T1200", "2O141014",
     "20141014+01"],
)
@pytest.mark.parametrize("fn", [t.to_date, t.to_time, t.to_datetime])
def test_non_numeric_or_malformed_raises(fn: t.Fn, text: str) -> None:
    with pytest.raises(TransformError, match="not an HL7 date/time"):
        fn([text], CTX, None)


@pytest.mark.parametrize(
    ("text", "what"),
    [("20141314", "month 13"), ("20140014", "month 00"), ("20141000", "day 00"),
     ("20141032", "day 32"), ("201410142400", "time of day"), ("201410141260", "time of day")],
)
def test_impossible_values_raise(text: str, what: str) -> None:
    with pytest.raises(TransformError, match=what):
        t.to_date([text], CTX, None)


@pytest.mark.parametrize("text", ["20230230", "20230431", "20230229"])
def test_day_that_does_not_exist_in_its_month_raises(text: str) -> None:
    with pytest.raises(TransformError):
        t.to_date([text], CTX, None)


def test_leap_day_is_accepted() -> None:
    assert t.to_date(["20240229"], CTX, None) == ["20240229"]


# -- person_name ------------------------------------------------------------------------------


def pn(*raws: str, ctx: TransformContext = CTX) -> str:
    (out,) = t.person_name(list(raws), ctx, None)
    return str(out)


def test_person_name_simple() -> None:
    assert pn("Smith^Lucy^Mark") == "Smith^Lucy^Mark"
    assert pn("DOE^J1") == "DOE^J1"
    assert pn("Doe") == "Doe"


def test_person_name_reorders_prefix_and_suffix() -> None:
    # XPN: family^given^middle^suffix^prefix^degree → PN family^given^middle^prefix^suffix
    assert pn("Smith^John^Q^Jr^Dr^PhD") == "Smith^John^Q^Dr^Jr PhD"
    assert pn("Smith^John^^^Dr") == "Smith^John^^Dr"
    assert pn("Smith^John^^III") == "Smith^John^^^III"


def test_person_name_alphabetic_and_ideographic_groups() -> None:
    assert pn("Yamada^Tarou^^^^^^A", "山田^太郎^^^^^^I") == "Yamada^Tarou=山田^太郎"
    # order of repetitions does not matter, the representation code does
    assert pn("山田^太郎^^^^^^I", "Yamada^Tarou^^^^^^A") == "Yamada^Tarou=山田^太郎"


def test_person_name_three_groups() -> None:
    assert pn("Yamada^Tarou^^^^^^A", "山田^太郎^^^^^^I", "やまだ^たろう^^^^^^P") == (
        "Yamada^Tarou=山田^太郎=やまだ^たろう")


def test_person_name_ideographic_only_keeps_leading_empty_group() -> None:
    assert pn("王^小明^^^^^^I") == "=王^小明"


def test_person_name_chinese_without_representation_code_is_alphabetic_group() -> None:
    # a lone name without XPN-8 stays in the first group, whatever the policy
    assert pn("王^小明") == "王^小明"
    (by_position,) = t.person_name(["王^小明"], TransformContext(MSG, TABLES),
                                   {"groups": "position"})
    assert by_position == "王^小明"


def test_person_name_first_of_each_group_wins_and_empty_repetitions_skipped() -> None:
    assert pn("", "First^One", "Second^Two") == "First^One"
    assert pn("^^^^^^^A", "Only^Name^^^^^^A") == "Only^Name"


def test_person_name_unknown_representation_counts_as_alphabetic() -> None:
    assert pn("Doe^John^^^^^^X") == "Doe^John"
    assert pn("Doe^John^^^^^^i") == "=Doe^John"


def test_person_name_empty() -> None:
    assert pn("") == ""
    assert t.person_name([], CTX, None) == [""]


def test_person_name_unescapes_and_drops_subcomponents() -> None:
    assert pn("O\\T\\Brien^Pat") == "O&Brien^Pat"
    assert pn("Van&Dyke^Dick") == "Van^Dick"


def test_person_name_custom_delimiters() -> None:
    assert pn("Smith@John@@@Dr", "Sumisu@Jon@@@@@@P", ctx=CUSTOM_CTX) == (
        "Smith^John^^Dr==Sumisu^Jon")


# -- physician_name / staff_name --------------------------------------------------------------


def test_physician_name_xcn() -> None:
    assert t.physician_name(["5101^NELL^FREDERICK^P^^DR"], CTX, None) == ["NELL^FREDERICK^P^DR"]
    assert t.physician_name(["^FN^GN^MN^^DR^Md"], CTX, None) == ["FN^GN^MN^DR^Md"]
    assert t.physician_name(["1^Family^Given^^Jr^^MD"], CTX, None) == ["Family^Given^^^Jr MD"]


def test_physician_name_one_per_repetition() -> None:
    out = t.physician_name(["1^A^B", "2^C^D", ""], CTX, None)
    assert out == ["A^B", "C^D", ""]


def test_staff_name_xcn_with_id() -> None:
    assert t.staff_name(["7101^ESTRADA^JAIME^P^^DR"], CTX, None) == ["ESTRADA^JAIME^P^DR"]


def test_staff_name_xcn_with_empty_id() -> None:
    assert t.staff_name(["^Smith^John"], CTX, None) == ["Smith^John"]


def test_staff_name_xpn_like_without_id() -> None:
    assert t.staff_name(["Smith^John^Q^^Dr"], CTX, None) == ["Smith^John^Q^Dr"]


def test_staff_name_cnn_subcomponents() -> None:
    assert t.staff_name(["123&Smith&John&Q&Jr&Dr&MD"], CTX, None) == ["Smith^John^Q^Dr^Jr MD"]
    # an escaped '^' inside the family name stays in it (replaced: PN would split there)
    assert t.staff_name(["123&O\\S\\Neil&Sean^ignored"], CTX, None) == ["O/Neil^Sean"]


def test_staff_name_alphanumeric_id_is_read_as_id() -> None:
    assert t.staff_name(["T42X^Tech^Tina"], CTX, None) == ["Tech^Tina"]


# -- code -------------------------------------------------------------------------------------

OBR4 = "P1^Procedure 1^ERL_MESA^X1_A1^SP Action Item X1_A1^DSS_MESA"


def test_code_first_triplet_by_default() -> None:
    assert t.code([OBR4], CTX, None) == [
        {"CodeValue": "P1", "CodeMeaning": "Procedure 1", "CodingSchemeDesignator": "ERL_MESA"}]


def test_code_second_triplet_first() -> None:
    assert t.code([OBR4], CTX, {"triplets": [2, 1]}) == [
        {"CodeValue": "X1_A1", "CodeMeaning": "SP Action Item X1_A1",
         "CodingSchemeDesignator": "DSS_MESA"}]


def test_code_falls_back_to_first_triplet() -> None:
    assert t.code(["10637-7^Microscopic Observation^LN"], CTX, {"triplets": [2, 1]}) == [
        {"CodeValue": "10637-7", "CodeMeaning": "Microscopic Observation",
         "CodingSchemeDesignator": "LN"}]


def test_code_without_any_value_gives_nothing() -> None:
    assert t.code(["^Meaning only^LN^^alt"], CTX, {"triplets": [1, 2]}) == []
    assert t.code([""], CTX, None) == []


def test_code_defaults_scheme_and_omits_empty_meaning() -> None:
    assert t.code(["C1"], CTX, None) == [{"CodeValue": "C1", "CodingSchemeDesignator": "L"}]


def test_code_meaning_truncated_to_64() -> None:
    (item,) = t.code(["C1^" + "m" * 100 + "^99X"], CTX, None)
    assert item["CodeMeaning"] == "m" * 64


def test_code_unescapes_components() -> None:
    (item,) = t.code(["C1^Head \\T\\ Neck^L"], CTX, None)
    assert item["CodeMeaning"] == "Head & Neck"


def test_code_one_item_per_repetition() -> None:
    out = t.code(["A^a^L", "B^b^L"], CTX, {"triplets": [1]})
    assert [i["CodeValue"] for i in out] == ["A", "B"]


def test_code_non_dict_parameter_uses_first_triplet() -> None:
    assert t.code([OBR4], CTX, "whatever")[0]["CodeValue"] == "P1"


# -- lookup -----------------------------------------------------------------------------------


def test_lookup_known_codes() -> None:
    assert t.lookup(["S", "R"], CTX, "priority") == ["STAT", "ROUTINE"]


def test_lookup_unknown_without_default_is_empty() -> None:
    assert t.lookup(["Q", ""], CTX, "priority") == ["", ""]


def test_lookup_star_default_applies_to_non_empty_unknown_codes_only() -> None:
    assert t.lookup(["M", "X", ""], CTX, "sex") == ["M", "O", ""]


def test_lookup_is_case_sensitive() -> None:
    assert t.lookup(["s"], CTX, "priority") == [""]


def test_lookup_missing_table_raises_key_error() -> None:
    with pytest.raises(KeyError):
        t.lookup(["S"], CTX, "nope")


# -- uid / number -----------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["1.2.3", "0.0", "1.2.840.10008.5.1.4.31", "2.25." + "9" * 39,
                                 "1." + "2" * 62, ""])
def test_uid_valid(uid: str) -> None:
    assert t.uid([uid], CTX, None) == [uid]


@pytest.mark.parametrize("uid", ["1.02.3", "1..2", ".1.2", "1.2.", "1.2.a", "1.2 3", "abc",
                                 "1." + "2" * 63, "01.2"])
def test_uid_invalid(uid: str) -> None:
    with pytest.raises(TransformError, match="not a valid UID"):
        t.uid([uid], CTX, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("65", "65"), ("1.650", "1.65"), (" 72 ", "72"), ("100", "100"), ("1e3", "1000"),
     ("0.0010", "0.001"), ("-2.50", "-2.5"), ("", "")],
)
def test_number(text: str, expected: str) -> None:
    assert t.number([text], CTX, None) == [expected]


@pytest.mark.parametrize("text", ["abc", "1,5", "12kg", "--1"])
def test_number_invalid(text: str) -> None:
    with pytest.raises(TransformError, match="not a number"):
        t.number([text], CTX, None)


def test_number_is_at_most_16_characters() -> None:
    (out,) = t.number(["1.23456789012345678"], CTX, None)
    assert len(out) <= 16
    assert out == "1.23456789012346"  # rounded, not cut


@pytest.mark.parametrize("text", ["sNaN", "NaN", "Infinity"])
def test_number_rejects_nan_and_infinity(text: str) -> None:
    with pytest.raises(TransformError):
        t.number([text], CTX, None)


def test_number_never_changes_the_magnitude() -> None:
    (out,) = t.number(["12345678901234567"], CTX, None)
    assert float(out) == pytest.approx(12345678901234567, rel=1e-9)


# -- join_lines / address / simple text transforms --------------------------------------------


def test_join_lines() -> None:
    out = t.join_lines(["first", "", "second \\T\\ more", "a\\.br\\b"], CTX, None)
    assert out == ["first\r\nsecond & more\r\na\r\nb"]


def test_join_lines_of_nothing() -> None:
    assert t.join_lines([], CTX, None) == [""]


def test_address() -> None:
    assert t.address(["1 Main St^^Springfield^IL^62701^^"], CTX, None) == [
        "1 Main St^^Springfield^IL^62701"]


def test_text_transforms() -> None:
    assert t.upper(["ab"], CTX, None) == ["AB"]
    assert t.lower(["AB"], CTX, None) == ["ab"]
    assert t.strip(["  x "], CTX, None) == ["x"]
    assert t.truncate(["abcdef"], CTX, 3) == ["abc"]


# -- registry ---------------------------------------------------------------------------------


def test_registry_structural_flags() -> None:
    structural = {name for name, (_fn, is_structural, _kind) in TRANSFORMS.items()
                  if is_structural}
    assert structural == {"person_name", "physician_name", "staff_name", "code", "address",
                          "join_lines"}
    assert TRANSFORMS["lookup"][2] == "table"
    assert TRANSFORMS["truncate"][2] == "int"
    assert TRANSFORMS["code"][2] == "dict"


def test_vr_transforms() -> None:
    assert VR_TRANSFORM == {"DA": "date", "TM": "time", "DT": "datetime", "SQ": "code"}
