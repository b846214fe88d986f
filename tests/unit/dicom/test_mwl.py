"""C-FIND identifiers → WorklistQuery (parse_identifier) and stored steps → responses
(build_response): broker.dicom.mwl."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from broker.dicom.mwl import (
    SPS_SEQUENCE,
    ParsedQuery,
    QueryLimitError,
    QueryLimits,
    ReturnKey,
    build_response,
    parse_identifier,
)
from broker.dicom.status import DimseFailure
from broker.dicom.worklist_matching import latin1_name
from broker.model.worklist import Match
from broker.store.worklist_query import START_DATE, START_TIME, STATION, WorklistRow

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def identifier(top: dict[str, Any] | None = None, sps: dict[str, Any] | None = None,
               *, with_sps: bool = True) -> Dataset:
    """A worklist identifier: top-level keys and one SPS item (values by keyword)."""
    ds = Dataset()
    for keyword, value in (top or {}).items():
        setattr(ds, keyword, value)
    if with_sps:
        item = Dataset()
        for keyword, value in (sps or {}).items():
            setattr(item, keyword, value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def matches(parsed: ParsedQuery) -> dict[str, Match]:
    return {m.keyword: m for m in parsed.query.matches}


def keywords(keys: list[ReturnKey]) -> list[str]:
    return [k.keyword for k in keys]


# -- return keys --------------------------------------------------------------------------------


def test_return_keys_in_order_with_nested_sequences() -> None:
    ref = Dataset()
    ref.ReferencedSOPClassUID = ""
    ref.ReferencedSOPInstanceUID = ""
    protocol = Dataset()
    protocol.CodeValue = ""
    protocol.CodeMeaning = ""
    ds = identifier(
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "", "PatientID": "",
         "AccessionNumber": "", "StudyInstanceUID": "", "ReferencedStudySequence": [ref],
         "RequestedProcedureDescription": ""},
        {"Modality": "", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "",
         "ScheduledProcedureStepStartTime": "", "ScheduledProtocolCodeSequence": [protocol],
         "ScheduledProcedureStepID": ""})
    parsed = parse_identifier(ds)
    # Specific Character Set is not a return key; the rest in the identifier's (tag) order
    expected = [e.keyword for e in ds if e.keyword != "SpecificCharacterSet"]
    assert keywords(parsed.keys) == expected
    assert [k.tag for k in parsed.keys] == [e.tag for e in ds if e.tag != Tag(0x0008, 0x0005)]
    by_keyword = {k.keyword: k for k in parsed.keys}
    assert by_keyword["PatientName"].vr == "PN"
    assert by_keyword["PatientName"].items is None
    assert keywords(by_keyword["ReferencedStudySequence"].items or []) == [
        "ReferencedSOPClassUID", "ReferencedSOPInstanceUID"]
    sps = by_keyword[SPS_SEQUENCE]
    assert sps.vr == "SQ"
    assert keywords(sps.items or []) == [e.keyword for e in ds.ScheduledProcedureStepSequence[0]]
    protocol_key = next(k for k in sps.items or [] if k.vr == "SQ")
    assert keywords(protocol_key.items or []) == ["CodeValue", "CodeMeaning"]
    # nothing has a value: no matching keys, nothing unsupported
    assert parsed.query.matches == []
    assert parsed.unsupported == []
    assert parsed.query.include_hidden is False


def test_empty_sequence_and_empty_item_are_universal_return_keys() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = []
    ds.ReferencedStudySequence = [Dataset()]
    parsed = parse_identifier(ds)
    by_keyword = {k.keyword: k for k in parsed.keys}
    assert by_keyword[SPS_SEQUENCE].items == []
    assert by_keyword["ReferencedStudySequence"].items == []
    assert parsed.query.matches == [] and parsed.unsupported == []


def test_group_length_and_charset_are_not_return_keys() -> None:
    ds = identifier({"PatientID": "", "SpecificCharacterSet": "ISO_IR 100"})
    ds.add(DataElement(Tag(0x0010, 0x0000), "UL", 8))
    assert keywords(parse_identifier(ds).keys) == ["PatientID", SPS_SEQUENCE]


def test_group_length_inside_the_sps_item_is_ignored() -> None:
    ds = identifier(sps={"Modality": "CT"})
    ds.ScheduledProcedureStepSequence[0].add(DataElement(Tag(0x0040, 0x0000), "UL", 20))
    parsed = parse_identifier(ds)
    assert parsed.unsupported == []
    assert keywords(parsed.keys[-1].items or []) == ["Modality"]


# -- matching keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(("top", "sps", "expected"), [
    ({"PatientID": "P1"}, {}, Match("PatientID", "single", "P1")),
    ({"PatientID": "P*"}, {}, Match("PatientID", "wildcard", "P*")),
    ({"PatientID": "P?1"}, {}, Match("PatientID", "wildcard", "P?1")),
    ({"PatientName": "DOE^JOHN"}, {}, Match("PatientName", "single", "DOE^JOHN")),
    ({"PatientName": "doe^j*"}, {}, Match("PatientName", "wildcard", "doe^j*")),
    ({"PatientName": "Yamada=山田"}, {}, Match("PatientName", "single", "Yamada=山田")),
    ({"AccessionNumber": "A1 "}, {}, Match("AccessionNumber", "single", "A1")),
    ({"PatientBirthDate": "19700101"}, {}, Match("PatientBirthDate", "single", "19700101")),
    ({"PatientBirthDate": "19700101-19801231"}, {},
     Match("PatientBirthDate", "range", low="19700101", high="19801231")),
    ({"StudyInstanceUID": "1.2.3"}, {}, Match("StudyInstanceUID", "single", "1.2.3")),
    ({"StudyInstanceUID": ["1.2.3", "1.2.4"]}, {},
     Match("StudyInstanceUID", "list", values=("1.2.3", "1.2.4"))),
    ({"StudyInstanceUID": "1.2.3\\1.2.4\\1.2.5"}, {},
     Match("StudyInstanceUID", "list", values=("1.2.3", "1.2.4", "1.2.5"))),
    ({}, {"Modality": "MR"}, Match("Modality", "single", "MR")),
    ({}, {"Modality": "M?"}, Match("Modality", "wildcard", "M?")),
    ({}, {"ScheduledStationAETitle": "CT1"}, Match(STATION, "single", "CT1")),
    ({}, {"ScheduledStationAETitle": "CT*"}, Match(STATION, "wildcard", "CT*")),
    ({}, {"ScheduledProcedureStepStartDate": "20261122"},
     Match(START_DATE, "single", "20261122")),
    ({}, {"ScheduledProcedureStepStartDate": "20261122-20261123"},
     Match(START_DATE, "range", low="20261122", high="20261123")),
    ({}, {"ScheduledProcedureStepStartDate": "20261122-"},
     Match(START_DATE, "range", low="20261122")),
    ({}, {"ScheduledProcedureStepStartDate": "-20261123"},
     Match(START_DATE, "range", high="20261123")),
    ({}, {"ScheduledProcedureStepStartTime": "1200"}, Match(START_TIME, "single", "1200")),
    ({}, {"ScheduledProcedureStepStartTime": "120000-"},
     Match(START_TIME, "range", low="120000")),
    ({}, {"ScheduledProcedureStepStartTime": "0800-173000.5"},
     Match(START_TIME, "range", low="0800", high="173000.5")),
    ({}, {"ScheduledPerformingPhysicianName": "SMITH*"},
     Match("ScheduledPerformingPhysicianName", "wildcard", "SMITH*")),
    ({}, {"ScheduledProcedureStepLocation": "ROOM 1"},
     Match("ScheduledProcedureStepLocation", "single", "ROOM 1")),
])
def test_match_kinds(top: dict[str, Any], sps: dict[str, Any], expected: Match) -> None:
    parsed = parse_identifier(identifier(top, sps))
    assert parsed.query.matches == [expected]
    assert parsed.unsupported == []


@pytest.mark.parametrize("value", ["", "*", " * ", "  "])
@pytest.mark.parametrize(("level", "keyword"), [
    ("top", "PatientName"), ("top", "PatientID"), ("top", "AccessionNumber"),
    ("top", "ReferringPhysicianName"), ("sps", "Modality"),
    ("sps", "ScheduledStationAETitle"), ("sps", "ScheduledProcedureStepStatus"),
    ("sps", "ScheduledPerformingPhysicianName"),
])
def test_empty_and_star_are_universal(level: str, keyword: str, value: str) -> None:
    values = {keyword: value}
    parsed = parse_identifier(identifier(values if level == "top" else None,
                                         values if level == "sps" else None))
    assert parsed.query.matches == []
    assert parsed.unsupported == []
    assert parsed.query.include_hidden is False
    assert keyword in keywords(parsed.keys) + keywords(parsed.keys[-1].items or [])


@pytest.mark.parametrize(("keyword", "vr"), [
    ("PatientBirthDate", "DA"), ("StudyInstanceUID", "UI"),
])
def test_empty_non_wildcard_vr_is_universal(keyword: str, vr: str) -> None:
    ds = identifier()
    ds.add(DataElement(Tag(keyword), vr, ""))
    assert parse_identifier(ds).query.matches == []


def test_several_keys_at_both_levels() -> None:
    parsed = parse_identifier(identifier(
        {"PatientID": "P1", "PatientName": "", "AccessionNumber": "A*"},
        {"Modality": "CT", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate":
         "20261122", "ScheduledProcedureStepStartTime": "0800-1200"}))
    assert matches(parsed) == {
        "PatientID": Match("PatientID", "single", "P1"),
        "AccessionNumber": Match("AccessionNumber", "wildcard", "A*"),
        "Modality": Match("Modality", "single", "CT"),
        START_DATE: Match(START_DATE, "single", "20261122"),
        START_TIME: Match(START_TIME, "range", low="0800", high="1200"),
    }


@pytest.mark.parametrize(("top", "sps", "expected"), [
    ({"MedicalAlerts": "X"}, {}, ["MedicalAlerts"]),
    ({"PatientWeight": "70"}, {}, ["PatientWeight"]),
    ({"RequestedProcedureDescription": "CT*"}, {}, ["RequestedProcedureDescription"]),
    ({}, {"ScheduledProcedureStepDescription": "HEAD"}, ["ScheduledProcedureStepDescription"]),
    ({"MedicalAlerts": "X", "Allergies": "Y"}, {"PatientID": "P1"},
     ["MedicalAlerts", "Allergies"]),
])
def test_unsupported_keys_with_values(top: dict[str, Any], sps: dict[str, Any],
                                      expected: list[str]) -> None:
    parsed = parse_identifier(identifier(top, sps))
    assert sorted(parsed.unsupported) == sorted(expected)
    assert not set(expected) & parsed.query.keywords()
    assert set(expected) <= set(keywords(parsed.keys)) | set(keywords(parsed.keys[-1].items
                                                                       or []))


def test_unsupported_key_without_value_is_a_plain_return_key() -> None:
    parsed = parse_identifier(identifier({"MedicalAlerts": "", "PatientWeight": None}))
    assert parsed.unsupported == []
    assert {"MedicalAlerts", "PatientWeight"} <= set(keywords(parsed.keys))


def test_sequence_matching_is_unsupported() -> None:
    code = Dataset()
    code.CodeValue = "X1"
    code.CodeMeaning = ""
    parsed = parse_identifier(identifier(sps={"ScheduledProtocolCodeSequence": [code]}))
    assert parsed.unsupported == ["ScheduledProtocolCodeSequence"]
    empty = Dataset()
    empty.CodeValue = ""
    parsed = parse_identifier(identifier(sps={"ScheduledProtocolCodeSequence": [empty]}))
    assert parsed.unsupported == []


@pytest.mark.parametrize("status", ["SCHEDULED", "COMPLETED", "S*"])
def test_sps_status_value_includes_hidden(status: str) -> None:
    parsed = parse_identifier(identifier(sps={"ScheduledProcedureStepStatus": status}))
    assert parsed.query.include_hidden is True
    assert [m.keyword for m in parsed.query.matches] == ["ScheduledProcedureStepStatus"]


def test_no_sps_status_hides() -> None:
    assert parse_identifier(identifier(sps={"Modality": "CT"})).query.include_hidden is False
    assert parse_identifier(identifier()).query.include_hidden is False


def test_two_sps_items_are_refused() -> None:
    ds = identifier()
    ds.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(DimseFailure) as info:
        parse_identifier(ds)
    assert info.value.status == 0xA900
    assert len(info.value.comment) <= 64


def test_two_items_in_another_sequence_are_refused() -> None:
    ds = identifier()
    ds.ReferencedStudySequence = [Dataset(), Dataset()]
    with pytest.raises(DimseFailure) as info:
        parse_identifier(ds)
    assert info.value.status == 0xA900


@pytest.mark.parametrize(("sps", "top"), [
    ({"ScheduledProcedureStepStartDate": "2026-11-22"}, {}),
    ({"ScheduledProcedureStepStartDate": "20261122-2026-11-23"}, {}),
    ({"ScheduledProcedureStepStartDate": "-"}, {}),
    ({"ScheduledProcedureStepStartDate": "2026112"}, {}),
    ({"ScheduledProcedureStepStartDate": "2026112*"}, {}),
    ({"ScheduledProcedureStepStartDate": "20261122-2026112X"}, {}),
    ({"ScheduledProcedureStepStartTime": "12:00-13:00"}, {}),
    ({"ScheduledProcedureStepStartTime": "1"}, {}),
    ({"ScheduledProcedureStepStartTime": "25*"}, {}),
    ({}, {"PatientBirthDate": "1970-01-01"}),
])
def test_invalid_range_values_are_refused(sps: dict[str, Any], top: dict[str, Any]) -> None:
    with pytest.raises(DimseFailure) as info:
        parse_identifier(identifier(top, sps))
    assert info.value.status == 0xC000


def test_query_error_comment_is_truncated() -> None:
    err = DimseFailure(0xC000, "x" * 200)
    assert err.status == 0xC000 and len(err.dataset().ErrorComment) == 64
    assert str(err) == "x" * 200


# -- station from the calling AE ----------------------------------------------------------------


@pytest.mark.parametrize(("station", "expected"), [
    (None, Match(STATION, "single", "CALLER")),  # no key at all
    ("", Match(STATION, "single", "CALLER")),  # return key, no value
    ("*", Match(STATION, "single", "CALLER")),  # universal: no value either
    ("CT1", Match(STATION, "single", "CT1")),
    ("CT*", Match(STATION, "wildcard", "CT*")),
])
def test_station_from_caller_only_without_station_value(station: str | None,
                                                        expected: Match) -> None:
    sps = {"Modality": "CT"} if station is None else {"ScheduledStationAETitle": station}
    parsed = parse_identifier(identifier(sps=sps), station_from_caller="CALLER")
    assert [m for m in parsed.query.matches if m.keyword == STATION] == [expected]


def test_no_station_from_caller_by_default() -> None:
    assert parse_identifier(identifier(sps={"Modality": "CT"})).query.matches == [
        Match("Modality", "single", "CT")]


# -- responses ------------------------------------------------------------------------------------

PATIENT = {"PatientID": "P1", "IssuerOfPatientID": "HOSP",
           "PatientName": "Müller^Jörg=ミュラー^ヨルク", "PatientBirthDate": "19700101",
           "PatientSex": "M", "MedicalAlerts": "LATEX"}
PROCEDURE = {"StudyInstanceUID": "1.2.3", "AccessionNumber": "A1",
             "RequestedProcedureID": "RP1", "RequestedProcedureDescription": "CT HEAD",
             "ReferringPhysicianName": "Smith^Anna=スミス^アンナ",
             "ReferencedStudySequence": [
                 {"ReferencedSOPClassUID": "1.2.840.10008.3.1.2.3.1",
                  "ReferencedSOPInstanceUID": "1.2.3.4"}]}
STEP = {"ScheduledProcedureStepID": "S1", "Modality": "CT",
        "ScheduledStationAETitle": ["CT1", "CT2"], "ScheduledProcedureStepStartDate": "20261122",
        "ScheduledProcedureStepStartTime": "0800", "ScheduledPerformingPhysicianName":
        "Wong^Li=王^力", "ScheduledProcedureStepDescription": "Head",
        "ScheduledProtocolCodeSequence": [
            {"CodeValue": "P1", "CodingSchemeDesignator": "LOCAL", "CodeMeaning": "Head"}],
        "ScheduledProcedureStepStatus": "SCHEDULED", "NotADicomKeyword": "x"}


def row() -> WorklistRow:
    return WorklistRow(dict(PATIENT), dict(PROCEDURE), dict(STEP))


def tags(ds: Dataset) -> set[Any]:
    return {e.tag for e in ds}


def test_response_has_exactly_the_requested_keys() -> None:
    ds = identifier(
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "", "PatientID": "P1",
         "AccessionNumber": "", "PatientWeight": "", "StudyInstanceUID": ""},
        {"Modality": "", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": ""})
    parsed = parse_identifier(ds)
    response = build_response(row(), parsed.keys, "ISO_IR 192")
    assert tags(response) == tags(ds)
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert response.PatientID == "P1"
    assert str(response.PatientName) == PATIENT["PatientName"]
    assert response.AccessionNumber == "A1"
    assert response.StudyInstanceUID == "1.2.3"
    item = response.ScheduledProcedureStepSequence[0]
    assert len(response.ScheduledProcedureStepSequence) == 1
    assert tags(item) == tags(ds.ScheduledProcedureStepSequence[0])
    assert item.Modality == "CT"
    assert list(item.ScheduledStationAETitle) == ["CT1", "CT2"]
    assert item.ScheduledProcedureStepStartDate == "20261122"


def test_specific_character_set_is_added_when_not_requested() -> None:
    parsed = parse_identifier(identifier({"PatientID": ""}, with_sps=False))
    response = build_response(row(), parsed.keys, "ISO_IR 100")
    assert tags(response) == {Tag(0x0008, 0x0005), Tag("PatientID")}
    assert response.SpecificCharacterSet == "ISO_IR 100"


def test_unknown_keys_come_back_empty_with_their_vr() -> None:
    parsed = parse_identifier(identifier(
        {"PatientWeight": "", "AdmissionID": "", "RequestingPhysician": "",
         "PatientBirthDate": ""},
        {"ScheduledStationName": "", "ScheduledProcedureStepLocation": "",
         "PreMedication": ""}))
    empty = WorklistRow({"PatientID": "P1"}, {"StudyInstanceUID": "1.2.3"},
                        {"ScheduledProcedureStepStatus": "SCHEDULED"})
    response = build_response(empty, parsed.keys, "ISO_IR 192")
    for keyword, vr in [("PatientWeight", "DS"), ("AdmissionID", "LO"),
                        ("RequestingPhysician", "PN"), ("PatientBirthDate", "DA")]:
        assert (response[keyword].VR, keyword) == (vr, keyword)
        assert response[keyword].is_empty, keyword
    item = response.ScheduledProcedureStepSequence[0]
    for keyword in ("ScheduledStationName", "ScheduledProcedureStepLocation", "PreMedication"):
        assert item[keyword].is_empty, keyword


def test_sequence_keys_return_only_requested_sub_keys() -> None:
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = ""
    protocol = Dataset()
    protocol.CodeValue = ""
    ds = identifier({"ReferencedStudySequence": [ref]},
                    {"ScheduledProtocolCodeSequence": [protocol]})
    response = build_response(row(), parse_identifier(ds).keys, "ISO_IR 192")
    refs = response.ReferencedStudySequence
    assert len(refs) == 1
    assert tags(refs[0]) == {Tag("ReferencedSOPInstanceUID")}
    assert refs[0].ReferencedSOPInstanceUID == "1.2.3.4"
    item = response.ScheduledProcedureStepSequence[0]
    assert tags(item) == {Tag("ScheduledProtocolCodeSequence")}
    codes = item.ScheduledProtocolCodeSequence
    assert len(codes) == 1 and tags(codes[0]) == {Tag("CodeValue")}
    assert codes[0].CodeValue == "P1"


def test_requested_sequence_without_stored_items_is_empty() -> None:
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = ""
    ds = identifier({"ReferencedStudySequence": [ref], "ReferencedPatientSequence": []})
    response = build_response(row(), parse_identifier(ds).keys, "ISO_IR 192")
    assert response.ReferencedPatientSequence == Sequence([])
    stored = WorklistRow(dict(PATIENT), {"StudyInstanceUID": "1.2.3"}, dict(STEP))
    response = build_response(stored, parse_identifier(ds).keys, "ISO_IR 192")
    assert len(response.ReferencedStudySequence) == 0


@pytest.mark.parametrize("empty_sps", ["no item", "empty item"])
def test_empty_requested_sps_returns_all_stored_step_attributes(empty_sps: str) -> None:
    ds = Dataset()
    ds.PatientID = ""
    ds.ScheduledProcedureStepSequence = [] if empty_sps == "no item" else [Dataset()]
    response = build_response(row(), parse_identifier(ds).keys, "ISO_IR 192")
    item = response.ScheduledProcedureStepSequence[0]
    expected = {k for k in STEP if k != "NotADicomKeyword"}
    assert {e.keyword for e in item} == expected
    assert item.ScheduledProcedureStepID == "S1"
    assert list(item.ScheduledStationAETitle) == ["CT1", "CT2"]
    assert item.ScheduledProcedureStepStatus == "SCHEDULED"
    assert item.ScheduledProtocolCodeSequence[0].CodeMeaning == "Head"
    assert str(item.ScheduledPerformingPhysicianName) == STEP["ScheduledPerformingPhysicianName"]
    # patient/procedure attributes never leak into the step item
    assert "PatientID" not in item and "AccessionNumber" not in item


def test_empty_requested_other_sequence_returns_all_stored_sub_attributes() -> None:
    ds = identifier({"ReferencedStudySequence": [Dataset()]})
    response = build_response(row(), parse_identifier(ds).keys, "ISO_IR 192")
    (ref,) = response.ReferencedStudySequence
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"
    assert ref.ReferencedSOPInstanceUID == "1.2.3.4"


def test_empty_station_list_is_left_out_of_an_all_attributes_item() -> None:
    step = {**STEP, "ScheduledStationAETitle": []}
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = []
    response = build_response(WorklistRow({}, {}, step), parse_identifier(ds).keys, "ISO_IR 192")
    assert "ScheduledStationAETitle" not in response.ScheduledProcedureStepSequence[0]


def test_latin1_names_keep_only_the_alphabetic_group() -> None:
    ds = identifier({"PatientName": "", "ReferringPhysicianName": ""},
                    {"ScheduledPerformingPhysicianName": ""})
    keys = parse_identifier(ds).keys
    response = build_response(row(), keys, "ISO_IR 100", latin1_name)
    assert response.SpecificCharacterSet == "ISO_IR 100"
    assert str(response.PatientName) == "Müller^Jörg"
    assert str(response.ReferringPhysicianName) == "Smith^Anna"
    item = response.ScheduledProcedureStepSequence[0]
    assert str(item.ScheduledPerformingPhysicianName) == "Wong^Li"
    # everything is encodable in ISO_IR 100 now
    response.PatientName.encode(["latin_1"])
    # and without an encode_name every group is kept
    full = build_response(row(), keys, "ISO_IR 192")
    assert str(full.PatientName) == PATIENT["PatientName"]


def test_latin1_name_replaces_what_latin1_cannot_hold() -> None:
    assert latin1_name("Łukasz^Jörg=ウカシュ") == "?ukasz^Jörg"
    assert latin1_name("") == ""
    assert latin1_name("=山田^太郎") == ""


def test_latin1_names_in_an_all_attributes_sps_item() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = [Dataset()]
    response = build_response(row(), parse_identifier(ds).keys, "ISO_IR 100", latin1_name)
    item = response.ScheduledProcedureStepSequence[0]
    assert str(item.ScheduledPerformingPhysicianName) == "Wong^Li"


def test_a_uid_list_over_the_cap_is_c000_naming_count_and_limit() -> None:
    uids = "\\".join(f"1.2.3.{n}" for n in range(4))
    with pytest.raises(QueryLimitError) as exc:
        parse_identifier(identifier({"StudyInstanceUID": uids}), limits=QueryLimits(max_uids=3))
    assert (exc.value.status, exc.value.comment) == (0xC000, "StudyInstanceUID: 4 UIDs (limit 3)")
    assert exc.value.setting == "dicom.max_query_uids"
    parsed = parse_identifier(identifier({"StudyInstanceUID": uids}),
                              limits=QueryLimits(max_uids=4))
    assert matches(parsed)["StudyInstanceUID"].values == tuple(uids.split("\\"))


def test_the_default_uid_cap_is_1000() -> None:
    uids = "\\".join(f"1.2.3.{n}" for n in range(1001))
    parse_identifier(identifier({"StudyInstanceUID": uids.rsplit("\\", 1)[0]}))
    with pytest.raises(QueryLimitError, match="1001 UIDs"):
        parse_identifier(identifier({"StudyInstanceUID": uids}))


@pytest.mark.parametrize(("top", "sps", "keyword"), [
    ({"PatientName": "DOE^JOHN\\SMITH^ANNA"}, {}, "PatientName"),
    ({"PatientName": "Doe*\\Martin*"}, {}, "PatientName"),
    ({"PatientID": "P1\\P2"}, {}, "PatientID"),
    ({"AccessionNumber": "A1\\A2"}, {}, "AccessionNumber"),
    ({}, {"Modality": "CT\\MR"}, "Modality"),
    ({}, {"ScheduledStationAETitle": "CT1\\CT2"}, "ScheduledStationAETitle"),
    ({}, {"ScheduledProcedureStepStartDate": "20240101\\20240102"},
     "ScheduledProcedureStepStartDate"),
])
def test_two_values_outside_a_uid_list_are_c000_naming_the_key(
        top: dict[str, Any], sps: dict[str, Any], keyword: str) -> None:
    with pytest.raises(DimseFailure) as exc:
        parse_identifier(identifier(top, sps))
    assert (exc.value.status, exc.value.comment) == (
        0xC000, f"{keyword}: 2 values (single value matching takes one value)")


def test_one_value_with_text_vrs_backslash_is_still_one_value() -> None:
    parsed = parse_identifier(identifier({"PatientName": "DOE^JOHN"}, {"Modality": "CT"}))
    assert matches(parsed)["PatientName"].value == "DOE^JOHN"
