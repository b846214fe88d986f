"""HL7 → domain events: broker.mapping.engine.map_message with the shipped mapping files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from broker.hl7 import charset
from broker.hl7.ack import Hl7Reject
from broker.hl7.message import Message, parse
from broker.mapping.engine import generate_study_uid, map_message
from broker.mapping.schema import load_mappings
from broker.mapping.specs import MappingSet
from broker.model.orders import (
    OrderAction,
    OrderChange,
    PatientIdChange,
    PatientKey,
    PatientMerge,
    PatientUpdate,
    StepStatus,
)

ROOT = Path(__file__).resolve().parents[3]
HL7_DIR = ROOT / "testdata" / "hl7"
MAPPINGS = ROOT / "mappings"
UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(MAPPINGS)


def sample_text(name: str) -> str:
    return charset.decode((HL7_DIR / name).read_bytes()).text


def load(name: str) -> Message:
    decoded = charset.decode((HL7_DIR / name).read_bytes())
    return parse(decoded.text, decoded.codec)


def segments(text: str) -> list[str]:
    return [s for s in re.split(r"\r\n|\r|\n", text) if s]


def join(segs: list[str]) -> str:
    return "\r".join(segs) + "\r"


def set_field(text: str, segment: str, n: int, value: str, occurrence: int = 1) -> str:
    """Set field n of the occurrence-th ``segment`` (MSH counted with MSH-1 = separator)."""
    segs = segments(text)
    seen = 0
    for i, seg in enumerate(segs):
        if seg[:3] != segment:
            continue
        seen += 1
        if seen != occurrence:
            continue
        parts = seg.split("|")
        index = n - 1 if segment == "MSH" else n
        parts += [""] * (index + 1 - len(parts))
        parts[index] = value
        segs[i] = "|".join(parts)
        return join(segs)
    raise AssertionError(f"no {segment} #{occurrence}")


def drop(text: str, segment: str) -> str:
    return join([s for s in segments(text) if s[:3] != segment])


def run(text: str, mappings: MappingSet) -> list[Any]:
    return map_message(parse(text), mappings)


def only_order(events: list[Any]) -> OrderChange:
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, OrderChange)
    return event


def rejected(text: str, mappings: MappingSet) -> Hl7Reject:
    with pytest.raises(Hl7Reject) as info:
        run(text, mappings)
    return info.value


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")


# -- ORM^O01 v2.3.1 (ORM^O01.hl7) -------------------------------------------------------------


def test_orm_sample(mappings: MappingSet) -> None:
    event = only_order(map_message(load("ORM^O01.hl7"), mappings))
    assert event.action is OrderAction.UPSERT
    assert event.status is StepStatus.SCHEDULED
    assert event.control == "NW_SC"
    assert event.absent_steps == "cancel"

    assert event.patient is not None
    assert event.patient.key == PatientKey("583295", "ADT1")  # PID-3.1 / PID-3.4
    p = event.patient.attrs
    assert p["PatientName"] == "DOE^J1"  # PID-5
    assert "PatientBirthDate" not in p  # PID-7 empty
    assert p["PatientSex"] == "M"  # PID-8
    assert p["MedicalAlerts"] == ["xxx"]  # OBR-13
    assert "PatientState" not in p  # OBR-12 empty
    assert "PregnancyStatus" not in p
    assert "PatientWeight" not in p and "PatientSize" not in p

    proc = event.procedure
    a = proc.attrs
    assert a["PlacerOrderNumberImagingServiceRequest"] == "A103Z"  # ORC-2.1
    assert a["FillerOrderNumberImagingServiceRequest"] == "B103Z"  # ORC-3.1
    assert a["RequestedProcedurePriority"] == "STAT"  # ORC-7.6 = S
    assert a["ReferringPhysicianName"] == "NELL^FREDERICK^P^DR"  # PV1-8
    assert a["AdmissionID"] == "V103-1"  # PV1-19, not PID-18 (20983295)
    assert a["RequestingPhysician"] == "ESTRADA^JAIME^P^DR"  # OBR-16
    assert a["PatientTransportArrangements"] == "WALK"  # OBR-30
    assert "ReasonForTheRequestedProcedure" not in a  # OBR-31 empty
    assert "RequestedProcedureComments" not in a  # no NTE in the order group
    assert a["AccessionNumber"] == "MOF5026"  # OBR-18
    assert a["RequestedProcedureID"] == "RP1026"  # OBR-19
    assert a["StudyInstanceUID"] == "1.113654.3.13.1026"  # ZDS-1.1
    assert not proc.generated_uid
    assert a["RequestedProcedureDescription"] == "Procedure 1"  # OBR-44.2
    assert a["RequestedProcedureCodeSequence"] == [  # OBR-44
        {"CodeValue": "P1", "CodeMeaning": "Procedure 1", "CodingSchemeDesignator": "ERL_MESA"}]

    (step,) = proc.steps
    s = step.attrs
    assert s["ScheduledProcedureStepID"] == "SPS2032"  # OBR-20
    assert step.sps_id == "SPS2032"
    assert s["Modality"] == "MR"  # OBR-24
    assert s["ScheduledProcedureStepStartDate"] == "20000701"
    assert s["ScheduledProcedureStepStartTime"] == "0900"
    assert s["ScheduledProcedureStepDescription"] == "SP Action Item X1_A1"  # OBR-4.5
    assert s["ScheduledProtocolCodeSequence"] == [  # OBR-4.4-6
        {"CodeValue": "X1_A1", "CodeMeaning": "SP Action Item X1_A1",
         "CodingSchemeDesignator": "DSS_MESA"}]
    assert s["ScheduledPerformingPhysicianName"] == "ESTRADA^JAIME^P^DR"  # OBR-34
    assert "ScheduledStationAETitle" not in s

    assert event.origin["PatientID"] == "PID-3.1"
    assert event.origin["StudyInstanceUID"] == "ZDS-1.1"
    assert event.origin["RequestedProcedurePriority"] == "ORC-7.6"


def test_orm_start_prefers_orc_7_4_then_obr_27_4(mappings: MappingSet) -> None:
    text = sample_text("ORM^O01.hl7")
    with_obr = set_field(text, "OBR", 27, "1^once^^200101020304^^S")
    step = only_order(run(with_obr, mappings)).procedure.steps[0].attrs
    assert (step["ScheduledProcedureStepStartDate"], step["ScheduledProcedureStepStartTime"]) == (
        "20010102", "0304")
    with_orc = set_field(with_obr, "ORC", 7, "1^once^^200202031415^^S")
    step = only_order(run(with_orc, mappings)).procedure.steps[0].attrs
    assert (step["ScheduledProcedureStepStartDate"], step["ScheduledProcedureStepStartTime"]) == (
        "20020203", "1415")


def test_orm_sps_description_and_protocol_fall_back_to_first_triplet(
        mappings: MappingSet) -> None:
    text = set_field(sample_text("ORM^O01.hl7"), "OBR", 4, "P9^Procedure Nine^ERL_MESA")
    step = only_order(run(text, mappings)).procedure.steps[0].attrs
    assert step["ScheduledProcedureStepDescription"] == "Procedure Nine"
    assert step["ScheduledProtocolCodeSequence"] == [
        {"CodeValue": "P9", "CodeMeaning": "Procedure Nine", "CodingSchemeDesignator": "ERL_MESA"}]


def test_requested_procedure_falls_back_to_obr4_without_obr44(mappings: MappingSet) -> None:
    text = set_field(sample_text("ORM^O01.hl7"), "OBR", 44, "")
    a = only_order(run(text, mappings)).procedure.attrs
    assert a["RequestedProcedureDescription"] == "Procedure 1"
    assert a["RequestedProcedureCodeSequence"][0]["CodeValue"] == "P1"


def test_admission_id_falls_back_to_pid18(mappings: MappingSet) -> None:
    text = set_field(sample_text("ORM^O01.hl7"), "PV1", 19, "")
    assert only_order(run(text, mappings)).procedure.attrs["AdmissionID"] == "20983295"


def test_reason_for_requested_procedure_uses_text_then_code(mappings: MappingSet) -> None:
    text = set_field(sample_text("ORM^O01.hl7"), "OBR", 31, "R1")
    assert only_order(run(text, mappings)).procedure.attrs[
        "ReasonForTheRequestedProcedure"] == "R1"


# -- OMI^O23 v2.5.1 (OMI^O23-ImagingOrder.hl7) ------------------------------------------------


def test_omi_sample(mappings: MappingSet) -> None:
    event = only_order(map_message(load("OMI^O23-ImagingOrder.hl7"), mappings))
    assert event.action is OrderAction.UPSERT and event.status is StepStatus.SCHEDULED
    assert event.control == "NW_SC"

    assert event.patient is not None
    assert event.patient.key == PatientKey("PID_1", "ADT1")
    p = event.patient.attrs
    assert p["PatientName"] == "Smith^Lucy^Mark"
    assert p["PatientBirthDate"] == "20141014"
    assert p["PatientSex"] == "F"
    assert p["PregnancyStatus"] == "3"  # PV1-15 = B6
    assert p["PatientState"] == "PatientState"  # OBR-12
    assert p["MedicalAlerts"] == ["MedicalAlerts"]  # OBR-13
    assert p["PatientWeight"] == "65"  # OBX Body Weight, kg
    assert p["PatientSize"] == "1.65"  # OBX Body Height, m

    proc = event.procedure
    a = proc.attrs
    assert a["PlacerOrderNumberImagingServiceRequest"] == "PlacerOrderNumberImagingServiceRequest"
    assert a["FillerOrderNumberImagingServiceRequest"] == "FillerOrderNumberImagingServiceRequest"
    assert "RequestedProcedurePriority" not in a  # ORC-7.6 is not a table 0027 code
    assert a["ReferringPhysicianName"] == (
        "ReferringPhysicianFN^ReferringPhysicianGN^ReferringPhysicianMN^DR^Md")
    assert a["AdmissionID"] == "AdmissionIDFromVisitNo"  # PV1-19 wins over PID-18
    assert a["RequestingPhysician"] == (
        "RequestingPhysicianFN^RequestingPhysicianGN^RequestingPhysicianMN^DR^Md")
    assert a["PatientTransportArrangements"] == "PatientTransportArrangements"
    assert a["ReasonForTheRequestedProcedure"] == (
        "Rheumatoid, other arthritis with motor score from 12 –35.,comorbidity in tier 3")
    assert a["RequestedProcedureComments"] == "RequestedProcedureComments"  # group NTE only
    assert a["AccessionNumber"] == "AccessionNumber"  # IPC-1
    assert a["RequestedProcedureID"] == "RequestedProcID"  # IPC-2
    assert a["StudyInstanceUID"] == "1.2.392.200036.9125.0.198811291108.7"  # IPC-3
    assert not proc.generated_uid
    assert a["RequestedProcedureDescription"] == "Microscopic Observation"  # OBR-44.2
    assert a["RequestedProcedureCodeSequence"] == [
        {"CodeValue": "10637-7", "CodeMeaning": "Microscopic Observation",
         "CodingSchemeDesignator": "LN"}]

    (step,) = proc.steps
    s = step.attrs
    assert s["ScheduledProcedureStepID"] == "ScheduledProcStepID"  # IPC-4
    assert s["Modality"] == "CT"  # IPC-5
    assert s["ScheduledStationAETitle"] == ["ScheduledStationAET1", "ScheduledStationAET2"]
    assert s["ScheduledStationName"] == ["ScheduledStationName"]  # IPC-7
    assert s["ScheduledProcedureStepLocation"] == "ScheduledProcStepLocation"  # IPC-8
    assert s["ScheduledProcedureStepStartDate"] == "20000816"  # TQ1-7
    assert s["ScheduledProcedureStepStartTime"] == "1510"
    assert s["ScheduledProcedureStepDescription"] == "Microscopic Observation"  # IPC-6.2
    assert s["ScheduledProtocolCodeSequence"] == [  # IPC-6
        {"CodeValue": "10637-7", "CodeMeaning": "Microscopic Observation",
         "CodingSchemeDesignator": "LN"}]
    assert s["ScheduledPerformingPhysicianName"] == (
        "ScheduledPerformingPhysicianNameFN^ScheduledPerformingPhysicianNameGN"
        "^ScheduledPerformingPhysicianNameMN^DR^Md")
    assert event.origin["AccessionNumber"] == "IPC-1"
    assert event.origin["ScheduledProcedureStepStartDate"] == "TQ1-7"


def test_omi_priority_from_orc_7_6(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "ORC", 7, "^^^^^S")
    assert only_order(run(text, mappings)).procedure.attrs["RequestedProcedurePriority"] == "STAT"


def test_omi_priority_from_tq1_9_first(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "ORC", 7, "^^^^^S")
    text = set_field(text, "TQ1", 9, "R")
    assert only_order(run(text, mappings)).procedure.attrs[
        "RequestedProcedurePriority"] == "ROUTINE"


def test_omi_start_falls_back_from_tq1_7_to_orc_7_4(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "TQ1", 7, "")
    text = set_field(text, "ORC", 7, "^^^201505061718^^S")
    s = only_order(run(text, mappings)).procedure.steps[0].attrs
    assert s["ScheduledProcedureStepStartDate"] == "20150506"
    assert s["ScheduledProcedureStepStartTime"] == "1718"


def test_omi_start_falls_back_to_obr_27_4(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "TQ1", 7, "")
    text = set_field(text, "OBR", 27, "^^^20160708^^R")
    s = only_order(run(text, mappings)).procedure.steps[0].attrs
    assert s["ScheduledProcedureStepStartDate"] == "20160708"
    assert "ScheduledProcedureStepStartTime" not in s


def test_omi_without_group_nte_has_no_comments(mappings: MappingSet) -> None:
    segs = segments(sample_text("OMI^O23-ImagingOrder.hl7"))
    # keep the patient NTE (before ORC), drop the one inside the order group
    orc = next(i for i, s in enumerate(segs) if s.startswith("ORC"))
    segs = segs[:orc] + [s for s in segs[orc:] if not s.startswith("NTE")]
    a = only_order(run(join(segs), mappings)).procedure.attrs
    assert "RequestedProcedureComments" not in a


def test_omi_several_group_comments_are_joined(mappings: MappingSet) -> None:
    segs = segments(sample_text("OMI^O23-ImagingOrder.hl7"))
    ipc = next(i for i, s in enumerate(segs) if s.startswith("IPC"))
    segs.insert(ipc, "NTE|2||Second line~third \\T\\ last")
    a = only_order(run(join(segs), mappings)).procedure.attrs
    assert a["RequestedProcedureComments"] == (
        "RequestedProcedureComments\r\nSecond line\r\nthird & last")


def test_general_order_sample_omi_without_ipc(mappings: MappingSet) -> None:
    # ORM^O01-GeneralOrder.hl7 is an OMI^O23 without IPC but with OBR-18..24 and a ZDS
    message = load("ORM^O01-GeneralOrder.hl7")
    assert message.message_type == "OMI^O23"
    event = only_order(map_message(message, mappings))
    a = event.procedure.attrs
    assert a["AccessionNumber"] == "AccessionNumber"  # OBR-18
    assert a["RequestedProcedureID"] == "RequestedProcID"  # OBR-19
    assert a["StudyInstanceUID"] == "1.2.392.200036.9125.0.198811291108.7"  # ZDS-1.1
    assert event.origin["StudyInstanceUID"] == "ZDS-1.1"
    (step,) = event.procedure.steps
    s = step.attrs
    assert s["ScheduledProcedureStepID"] == "ScheduledProcStepID"  # OBR-20
    assert s["Modality"] == "CT"  # OBR-24
    assert "ScheduledStationAETitle" not in s
    assert "ScheduledStationName" not in s
    assert s["ScheduledProcedureStepDescription"] == "Microscopic Observation"  # OBR-4.2
    assert s["ScheduledProtocolCodeSequence"][0]["CodeValue"] == "10637-7"


def test_two_ipc_segments_make_two_steps(mappings: MappingSet) -> None:
    segs = segments(sample_text("OMI^O23-ImagingOrder.hl7"))
    segs.append("IPC|AccessionNumber|RequestedProcID|1.2.392.200036.9125.0.198811291108.7|SPS2|MR"
                "|MR1^Knee MR^L|MR Room|Basement|MRAE")
    event = only_order(run(join(segs), mappings))
    first, second = event.procedure.steps
    assert first.attrs["ScheduledProcedureStepID"] == "ScheduledProcStepID"
    assert first.attrs["Modality"] == "CT"
    assert first.attrs["ScheduledStationAETitle"] == ["ScheduledStationAET1",
                                                       "ScheduledStationAET2"]
    assert second.attrs["ScheduledProcedureStepID"] == "SPS2"
    assert second.attrs["Modality"] == "MR"
    assert second.attrs["ScheduledStationAETitle"] == ["MRAE"]
    assert second.attrs["ScheduledStationName"] == ["MR Room"]
    assert second.attrs["ScheduledProcedureStepLocation"] == "Basement"
    assert second.attrs["ScheduledProcedureStepDescription"] == "Knee MR"
    # the group-level start time applies to both steps
    assert second.attrs["ScheduledProcedureStepStartDate"] == "20000816"


def test_step_id_defaults_to_its_position(mappings: MappingSet) -> None:
    segs = segments(sample_text("OMI^O23-ImagingOrder.hl7"))
    segs.append("IPC|AccessionNumber|RequestedProcID||||||")
    text = join(segs)
    text = set_field(text, "IPC", 4, "", occurrence=1)
    steps = only_order(run(text, mappings)).procedure.steps
    assert [s.sps_id for s in steps] == ["1", "2"]


def test_two_order_groups_make_two_events(mappings: MappingSet) -> None:
    segs = segments(sample_text("ORM^O01.hl7"))
    segs += ["ORC|NW|A104Z^MESA_ORDPLC|B104Z^MESA_ORDFIL||SC",
             "OBR|2|A104Z^MESA_ORDPLC|B104Z^MESA_ORDFIL|P2^Procedure 2^ERL_MESA" + "|" * 14
             + "MOF5027|RP1027|SPS2033||||CT",
             "ZDS|1.113654.3.13.1027^100^Application^DICOM"]
    events = run(join(segs), mappings)
    assert len(events) == 2
    first, second = events
    assert first.procedure.attrs["AccessionNumber"] == "MOF5026"
    assert second.procedure.attrs["AccessionNumber"] == "MOF5027"
    assert second.procedure.attrs["StudyInstanceUID"] == "1.113654.3.13.1027"
    assert second.procedure.steps[0].attrs["Modality"] == "CT"
    # the header's patient is shared, PV1 comes from the header for both groups
    assert second.patient is not None and second.patient.key.patient_id == "583295"
    assert second.procedure.attrs["AdmissionID"] == "V103-1"


# -- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [("65000", "g", "65"), ("70", "kg^kilogram^UCUM", "70"), ("100", "[lb_av]", "45.359237"),
     ("65", "", "65")],
)
def test_weight_units(mappings: MappingSet, value: str, unit: str, expected: str) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "OBX", 5, value, occurrence=1)
    text = set_field(text, "OBX", 6, unit, occurrence=1)
    event = only_order(run(text, mappings))
    assert event.patient is not None
    assert event.patient.attrs["PatientWeight"] == expected


def test_height_in_centimetres(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "OBX", 5, "165", occurrence=2)
    text = set_field(text, "OBX", 6, "cm", occurrence=2)
    event = only_order(run(text, mappings))
    assert event.patient is not None
    assert event.patient.attrs["PatientSize"] == "1.65"


def test_unknown_unit_is_rejected_at_the_obx_path(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "OBX", 6, "stone", occurrence=1)
    err = rejected(text, mappings)
    assert err.ack_code == "AE"
    (e,) = err.errors
    assert e.code == 102
    assert e.location == "OBX{3.1=29463-7|3.2=Body Weight}-5"
    assert "'stone'" in e.text


def test_non_numeric_weight_is_rejected(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "OBX", 5, "heavy", occurrence=1)
    err = rejected(text, mappings)
    assert (err.ack_code, err.errors[0].code) == ("AE", 102)
    assert "PatientWeight" in err.errors[0].text


def test_signalling_nan_weight_is_rejected_as_data_type_error(mappings: MappingSet) -> None:
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "OBX", 5, "sNaN", occurrence=1)
    err = rejected(text, mappings)
    assert (err.ack_code, err.errors[0].code) == ("AE", 102)


# -- ADT --------------------------------------------------------------------------------------


def test_adt_a31_sample(mappings: MappingSet) -> None:
    (event,) = map_message(load("ADT^A31-UpdatePersonInfo.hl7"), mappings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.key == PatientKey("PID_1", "ADT1")
    a = event.patient.attrs
    assert a["PatientName"] == "Smith^Lucy^Mark"
    assert a["PatientBirthDate"] == "20141014"
    assert a["PatientSex"] == "F"
    assert a["PatientAddress"] == "PatientAddress"
    assert a["PatientComments"] == "PatientComments"


@pytest.mark.parametrize("trigger", ["A01", "A04", "A05", "A08"])
def test_other_adt_updates(mappings: MappingSet, trigger: str) -> None:
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "MSH", 9,
                     f"ADT^{trigger}^ADT_A01")
    (event,) = run(text, mappings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.key.patient_id == "PID_1"


def test_adt_a40_sample(mappings: MappingSet) -> None:
    (event,) = map_message(load("ADT^A40-PatientMerge.hl7"), mappings)
    assert isinstance(event, PatientMerge)
    assert event.surviving.key == PatientKey("NEW_PID_1", "ADT1")
    assert event.surviving.attrs["PatientName"] == "New_Smith^Lucy^Mark"
    assert event.prior == PatientKey("OLD_PID_1", "ADT1")
    assert "PatientComments" not in event.surviving.attrs


def test_adt_a47_sample(mappings: MappingSet) -> None:
    (event,) = map_message(load("ADT^A47-ChangePatientID.hl7"), mappings)
    assert isinstance(event, PatientIdChange)
    assert event.patient.key == PatientKey("NEW_PID_1", "ADT1")
    assert event.old == PatientKey("OLD_PID_1", "ADT1")


def test_adt_a47_origin_of_patient_id_is_pid3(mappings: MappingSet) -> None:
    (event,) = map_message(load("ADT^A47-ChangePatientID.hl7"), mappings)
    assert event.origin["PatientID"] == "PID-3.1"


def test_adt_merge_without_mrg_is_rejected(mappings: MappingSet) -> None:
    err = rejected(drop(sample_text("ADT^A40-PatientMerge.hl7"), "MRG"), mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AE", 101, "MRG-1.1")


def test_hl7_null_clears_an_attribute(mappings: MappingSet) -> None:
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "PID", 7, '""')
    (event,) = run(text, mappings)
    assert event.patient.attrs["PatientBirthDate"] == ""


def test_unknown_sex_maps_to_nothing_via_star_default(mappings: MappingSet) -> None:
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "PID", 8, "X")
    (event,) = run(text, mappings)
    assert "PatientSex" not in event.patient.attrs
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "PID", 8, "U")
    (event,) = run(text, mappings)
    assert event.patient.attrs["PatientSex"] == "O"


def test_patient_name_with_ideographic_repetition(mappings: MappingSet) -> None:
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "PID", 5,
                     "Wang^Xiaoming^^^^^^A~王^小明^^^^^^I")
    (event,) = run(text, mappings)
    assert event.patient.attrs["PatientName"] == "Wang^Xiaoming=王^小明"


# -- rejections -------------------------------------------------------------------------------


def test_siu_is_rejected_ar_200(mappings: MappingSet) -> None:
    with pytest.raises(Hl7Reject) as info:
        map_message(load("SIU^S12-NewAppointmentBooking.hl7"), mappings)
    err = info.value
    assert err.ack_code == "AR"
    (e,) = err.errors
    assert e.code == 200
    assert e.location == "MSH-9"
    assert "SIU^S12" in e.text


def test_unhandled_event_of_known_message_code_is_ar_201(mappings: MappingSet) -> None:
    text = set_field(sample_text("ADT^A31-UpdatePersonInfo.hl7"), "MSH", 9, "ADT^A02^ADT_A02")
    err = rejected(text, mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AR", 201, "MSH-9.2")


def test_orm_without_pid_is_ae_101(mappings: MappingSet) -> None:
    err = rejected(drop(sample_text("ORM^O01.hl7"), "PID"), mappings)
    assert err.ack_code == "AE"
    (e,) = err.errors
    assert e.code == 101
    assert e.location.startswith("PID-3")


def test_empty_patient_id_is_ae_101(mappings: MappingSet) -> None:
    err = rejected(set_field(sample_text("ORM^O01.hl7"), "PID", 3, "^^^ADT1"), mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AE", 101, "PID-3.1")


def test_unmapped_order_control_is_ae_103(mappings: MappingSet) -> None:
    text = set_field(set_field(sample_text("ORM^O01.hl7"), "ORC", 1, "ZZ"), "ORC", 5, "XX")
    err = rejected(text, mappings)
    assert err.ack_code == "AE"
    (e,) = err.errors
    assert e.code == 103
    assert e.location == "ORC-1"
    assert "'ZZ'" in e.text and "'XX'" in e.text


def test_non_numeric_birth_date_is_ae_102(mappings: MappingSet) -> None:
    err = rejected(set_field(sample_text("ORM^O01.hl7"), "PID", 7, "19OCT2014"), mappings)
    assert err.ack_code == "AE"
    (e,) = err.errors
    assert e.code == 102
    assert e.location == "PID-7"
    assert "PatientBirthDate" in e.text


def test_bad_study_uid_is_ae_102(mappings: MappingSet) -> None:
    err = rejected(set_field(sample_text("ORM^O01.hl7"), "ZDS", 1, "1.2.03^100^Application^DICOM"),
                   mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AE", 102, "ZDS-1.1")


def test_order_without_orc_is_ae_100(mappings: MappingSet) -> None:
    err = rejected(drop(sample_text("ORM^O01.hl7"), "ORC"), mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AE", 100, "ORC")


def test_new_order_without_obr_is_ae_100(mappings: MappingSet) -> None:
    err = rejected(drop(sample_text("ORM^O01.hl7"), "OBR"), mappings)
    assert (err.ack_code, err.errors[0].code, err.errors[0].location) == ("AE", 100, "OBR")


# -- order control ----------------------------------------------------------------------------


@pytest.mark.parametrize(("orc5", "control"), [("CA", "CA_CA"), ("", "CA")])
def test_cancel_is_a_status_change(mappings: MappingSet, orc5: str, control: str) -> None:
    text = set_field(set_field(sample_text("ORM^O01.hl7"), "ORC", 1, "CA"), "ORC", 5, orc5)
    event = only_order(run(text, mappings))
    assert event.action is OrderAction.STATUS
    assert event.status is StepStatus.CANCELED
    assert event.control == control
    assert event.procedure.steps == []  # a status change does not carry steps
    assert event.procedure.attrs["PlacerOrderNumberImagingServiceRequest"] == "A103Z"


def test_cancel_without_pid_has_no_patient(mappings: MappingSet) -> None:
    text = set_field(set_field(sample_text("ORM^O01.hl7"), "ORC", 1, "CA"), "ORC", 5, "CA")
    event = only_order(run(drop(text, "PID"), mappings))
    assert event.patient is None
    assert event.action is OrderAction.STATUS


@pytest.mark.parametrize(
    ("orc1", "orc5", "action", "status"),
    [("DC", "CA", OrderAction.STATUS, StepStatus.DISCONTINUED),
     ("XO", "CM", OrderAction.STATUS, StepStatus.COMPLETED),
     ("XO", "SC", OrderAction.UPSERT, StepStatus.SCHEDULED),
     ("NW", "IP", OrderAction.UPSERT, StepStatus.SCHEDULED)],
)
def test_order_control_table(mappings: MappingSet, orc1: str, orc5: str, action: OrderAction,
                             status: StepStatus) -> None:
    text = set_field(set_field(sample_text("ORM^O01.hl7"), "ORC", 1, orc1), "ORC", 5, orc5)
    event = only_order(run(text, mappings))
    assert (event.action, event.status, event.control) == (action, status, f"{orc1}_{orc5}")


# -- Study Instance UID -----------------------------------------------------------------------


def test_missing_study_uid_is_generated_deterministically(mappings: MappingSet) -> None:
    text = drop(sample_text("ORM^O01.hl7"), "ZDS")
    first = only_order(run(text, mappings)).procedure
    second = only_order(run(text, mappings)).procedure
    uid = first.study_uid
    assert uid.startswith("2.25.")
    assert UID_RE.match(uid) and len(uid) <= 64
    assert first.generated_uid
    assert uid == second.study_uid
    assert uid == generate_study_uid("MESA_OF", "XYZ_RADIOLOGY", ["MOF5026", "RP1026", "A103Z"])


def test_generated_uid_depends_on_the_order(mappings: MappingSet) -> None:
    text = drop(sample_text("ORM^O01.hl7"), "ZDS")
    other = set_field(text, "OBR", 18, "MOF9999")
    other_sender = set_field(text, "MSH", 3, "OTHER_RIS")
    uids = {only_order(run(t, mappings)).procedure.study_uid for t in (text, other, other_sender)}
    assert len(uids) == 3


def test_generate_study_uid_is_a_pure_function() -> None:
    a = generate_study_uid("APP", "FAC", ["ACC", "RP"])
    assert a == generate_study_uid("APP", "FAC", ["ACC", "RP"])
    assert a != generate_study_uid("APP", "FAC", ["RP", "ACC"])
    assert a.startswith("2.25.") and UID_RE.match(a) and len(a) <= 64


def test_missing_study_uid_without_seed_is_ae_101(mappings: MappingSet) -> None:
    text = drop(sample_text("ORM^O01.hl7"), "ZDS")
    for n in (18, 19):
        text = set_field(text, "OBR", n, "")
    text = set_field(text, "ORC", 2, "")
    text = set_field(text, "OBR", 2, "")
    err = rejected(text, mappings)
    assert (err.ack_code, err.errors[0].code) == ("AE", 101)


def test_missing_study_uid_rejected_when_mapping_says_so(folder: Path) -> None:
    edit(folder, "orders.yaml", "      missing: generate   # generate | reject",
         "      missing: reject")
    strict = load_mappings(folder)
    err = rejected(drop(sample_text("ORM^O01.hl7"), "ZDS"), strict)
    assert err.ack_code == "AE"
    (e,) = err.errors
    assert e.code == 101
    assert e.location == "ZDS-1.1"
    # a message that carries its UID is still accepted
    assert only_order(run(sample_text("ORM^O01.hl7"), strict)).procedure.study_uid == (
        "1.113654.3.13.1026")


# -- station rules ----------------------------------------------------------------------------


def with_station_rules(folder: Path, rules: str) -> MappingSet:
    edit(folder, "stations.yaml", "station_rules: []", "station_rules:\n" + rules)
    return load_mappings(folder)


def test_station_rule_assigns_station_when_message_names_none(folder: Path) -> None:
    ms = with_station_rules(folder, (
        "  - when: {Modality: CT}\n"
        "    set: {ScheduledStationAETitle: [CT01], ScheduledStationName: CT Room}\n"
        "  - when: {Modality: [MR, MRI]}\n"
        "    set: {ScheduledStationAETitle: [MR01, MR02]}\n"))
    step = only_order(run(sample_text("ORM^O01.hl7"), ms)).procedure.steps[0].attrs
    assert step["Modality"] == "MR"
    assert step["ScheduledStationAETitle"] == ["MR01", "MR02"]
    assert "ScheduledStationName" not in step


def test_station_rule_first_match_wins_and_wildcards(folder: Path) -> None:
    ms = with_station_rules(folder, (
        "  - when: {Modality: \"M?\", MSH-4: \"XYZ_*\"}\n"
        "    set: {ScheduledStationAETitle: [FIRST]}\n"
        "  - when: {Modality: MR}\n"
        "    set: {ScheduledStationAETitle: [SECOND]}\n"))
    step = only_order(run(sample_text("ORM^O01.hl7"), ms)).procedure.steps[0].attrs
    assert step["ScheduledStationAETitle"] == ["FIRST"]
    other_facility = set_field(sample_text("ORM^O01.hl7"), "MSH", 4, "ER")
    step = only_order(run(other_facility, ms)).procedure.steps[0].attrs
    assert step["ScheduledStationAETitle"] == ["SECOND"]


def test_station_rule_on_procedure_attribute(folder: Path) -> None:
    ms = with_station_rules(folder, (
        "  - when: {RequestedProcedurePriority: STAT}\n"
        "    set: {ScheduledStationAETitle: [EMERG]}\n"))
    step = only_order(run(sample_text("ORM^O01.hl7"), ms)).procedure.steps[0].attrs
    assert step["ScheduledStationAETitle"] == ["EMERG"]


def test_station_rule_not_matching_assigns_nothing(folder: Path) -> None:
    ms = with_station_rules(folder, (
        "  - when: {Modality: CT}\n"
        "    set: {ScheduledStationAETitle: [CT01]}\n"))
    step = only_order(run(sample_text("ORM^O01.hl7"), ms)).procedure.steps[0].attrs
    assert "ScheduledStationAETitle" not in step


def test_station_rule_does_not_override_stations_named_in_message(folder: Path) -> None:
    ms = with_station_rules(folder, (
        "  - when: {Modality: CT}\n"
        "    set: {ScheduledStationAETitle: [CT01], ScheduledStationName: Rule Room}\n"))
    step = only_order(run(sample_text("OMI^O23-ImagingOrder.hl7"), ms)).procedure.steps[0].attrs
    assert step["ScheduledStationAETitle"] == ["ScheduledStationAET1", "ScheduledStationAET2"]
    assert step["ScheduledStationName"] == ["ScheduledStationName"]
    # a step whose message names its AE title gets nothing from the rules, not even the
    # attributes the message left empty
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "IPC", 7, "")
    step = only_order(run(text, ms)).procedure.steps[0].attrs
    assert "ScheduledStationName" not in step
    # without IPC-9 the rule applies
    text = set_field(sample_text("OMI^O23-ImagingOrder.hl7"), "IPC", 9, "")
    step = only_order(run(text, ms)).procedure.steps[0].attrs
    assert step["ScheduledStationAETitle"] == ["CT01"]
    # values the message gave are kept (setdefault)
    assert step["ScheduledStationName"] == ["ScheduledStationName"]
