"""Loading and validating mapping files: broker.mapping.schema.load_mappings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.mapping.schema import MappingLoadError, describe, load_mappings
from broker.mapping.specs import MappingSet
from broker.model.orders import OrderAction, StepStatus

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings(MAPPINGS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def edit(folder: Path, name: str, old: str, new: str) -> tuple[str, int]:
    """Replace the single occurrence of ``old`` in ``name``; return (file, line of the edit)."""
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {name}"
    index = text.index(old)
    path.write_text(text.replace(old, new), encoding="utf-8")
    return str(path), text[:index].count("\n") + 1


def load_errors(folder: Path) -> list[str]:
    with pytest.raises(MappingLoadError) as info:
        load_mappings(folder)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def error_at(errors: list[str], file: str, line: int, *fragments: str) -> str:
    """The error for file:line that contains every fragment (fails with all errors shown)."""
    prefix = f"{file}:{line}: "
    for err in errors:
        if err.startswith(prefix) and all(f in err for f in fragments):
            return err
    raise AssertionError(f"no error at {prefix} with {fragments}; got:\n" + "\n".join(errors))


# -- the shipped set --------------------------------------------------------------------------


def test_shipped_mappings_load(shipped: MappingSet) -> None:
    assert sorted(shipped.messages) == [
        "ADT^A01", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A31", "ADT^A40", "ADT^A47",
        "OMG^O19", "OMI^O23", "ORM^O01"]
    assert [Path(f).name for f in shipped.files] == [
        "adt.yaml", "fhir.yaml", "omg.yaml", "orders.yaml", "outbound.yaml", "stations.yaml",
        "tables.yaml"]
    assert shipped.fhir is not None


@pytest.mark.parametrize(
    ("message_type", "kind"),
    [("ORM^O01", "order"), ("OMI^O23", "order"), ("ADT^A01", "patient_update"),
     ("ADT^A04", "patient_update"), ("ADT^A05", "patient_update"),
     ("ADT^A08", "patient_update"), ("ADT^A31", "patient_update"),
     ("ADT^A40", "patient_merge"), ("ADT^A47", "patient_id_change")],
)
def test_shipped_kinds(shipped: MappingSet, message_type: str, kind: str) -> None:
    mm = shipped.for_type(message_type)
    assert mm is not None
    assert mm.kind == kind
    assert any(f.keyword == "PatientID" for f in mm.patient)


def test_unmapped_type(shipped: MappingSet) -> None:
    assert shipped.for_type("SIU^S12") is None


def test_shipped_order_mappings(shipped: MappingSet) -> None:
    orm = shipped.for_type("ORM^O01")
    omi = shipped.for_type("OMI^O23")
    assert orm is not None and omi is not None
    assert orm.step_segments == ("OBR",)
    assert omi.step_segments == ("IPC", "OBR")
    assert orm.group_segment == "ORC"
    assert str(orm.order_code) == "ORC-1" and str(orm.order_status) == "ORC-5"
    assert orm.study_uid_missing == "generate"
    assert orm.study_uid_seed == ("AccessionNumber", "RequestedProcedureID",
                                  "PlacerOrderNumberImagingServiceRequest")
    assert orm.absent_steps == "cancel"
    proc = {f.keyword: f for f in orm.procedure}
    assert [str(p) for p in proc["StudyInstanceUID"].paths] == ["ZDS-1.1"]
    assert [str(p) for p in proc["AdmissionID"].paths] == ["PV1-19.1", "PID-18.1"]
    assert proc["RequestedProcedureComments"].group_only
    assert proc["RequestedProcedureCodeSequence"].vr == "SQ"
    assert proc["RequestedProcedureCodeSequence"].multi
    assert proc["RequestedProcedureCodeSequence"].structural
    steps = {f.keyword: f for f in omi.steps}
    assert [str(p) for p in steps["ScheduledStationAETitle"].paths] == ["IPC-9[*]"]
    assert steps["ScheduledProcedureStepStartDate"].vr == "DA"
    assert [name for name, _fn, _p in steps["ScheduledProcedureStepStartDate"].transforms] == [
        "date"]
    patient = {f.keyword: f for f in orm.patient}
    assert patient["PatientID"].required
    assert patient["PatientWeight"].unit is not None
    assert patient["PatientWeight"].unit.factors["g"] == pytest.approx(0.001)
    # the section keeps the location of its own file
    adt_lines = (MAPPINGS / "adt.yaml").read_text(encoding="utf-8").splitlines()
    line = next(i for i, s in enumerate(adt_lines, 1) if s.strip().startswith("PatientID:"))
    assert patient["PatientID"].where == f"{MAPPINGS / 'adt.yaml'}:{line}"


def test_shipped_tables_and_order_control(shipped: MappingSet) -> None:
    assert shipped.tables["priority"]["S"] == "STAT"
    assert shipped.tables["pregnancy"] == {"B6": "3"}
    assert shipped.tables["sex"]["*"] == ""
    assert shipped.order_control["NW_SC"].action is OrderAction.UPSERT
    assert shipped.order_control["NW_SC"].status is StepStatus.SCHEDULED
    assert shipped.order_control["CA"].action is OrderAction.STATUS
    assert shipped.order_control["CA"].status is StepStatus.CANCELED
    assert shipped.order_control["DC_CA"].status is StepStatus.DISCONTINUED
    assert shipped.station_rules == []


def test_describe(shipped: MappingSet) -> None:
    summary = describe(shipped)
    assert summary["order_control"]["XO_CM"] == "status/COMPLETED"
    assert "ORM^O01" in summary["messages"]
    assert summary["station_rules"] == 0


def test_copy_loads_identically(folder: Path, shipped: MappingSet) -> None:
    copy = load_mappings(folder)
    assert sorted(copy.messages) == sorted(shipped.messages)


# -- errors name file and line ----------------------------------------------------------------


def test_unknown_dicom_keyword_with_suggestion(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "    PatientState: OBR-12",
                      "    PatientStat: OBR-12")
    err = error_at(load_errors(folder), file, line, "'PatientStat' is not a DICOM keyword")
    assert "did you mean 'PatientState'?" in err


def test_unknown_keyword_in_message_block(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "      AccessionNumber: OBR-18",
                      "      AccessionNumbr: OBR-18")
    error_at(load_errors(folder), file, line, "AccessionNumbr", "did you mean 'AccessionNumber'")


def test_unknown_transform(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "transform: {person_name: {groups: script}}}",
                      "transform: persn_name}")
    err = error_at(load_errors(folder), file, line, "unknown transform 'persn_name'")
    assert "did you mean 'person_name'?" in err


def test_unknown_transform_in_multiline_spec(folder: Path) -> None:
    file, _ = edit(folder, "orders.yaml",
                   "          {path: [ORC-7.4, OBR-27.4, OBR-36, ORC-15], transform: time}",
                   "          {path: [ORC-7.4, OBR-27.4, OBR-36, ORC-15], transform: tmie}")
    text = Path(file).read_text(encoding="utf-8").splitlines()
    line = next(i for i, s in enumerate(text, 1) if "transform: tmie" in s)
    error_at(load_errors(folder), file, line, "ScheduledProcedureStepStartTime",
             "unknown transform 'tmie'")


def test_misspelled_option_key(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "PatientBirthDate: {path: PID-7, transform: date}",
                      "PatientBirthDate: {path: PID-7, trnasform: date}")
    errors = load_errors(folder)
    err = error_at(errors, file, line, "unknown option of PatientBirthDate 'trnasform'")
    assert "did you mean 'transform'?" in err
    # without its transform the DA attribute is also reported
    error_at(errors, file, line, "PatientBirthDate has VR DA")


def test_bad_path_syntax(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "    PatientState: OBR-12", "    PatientState: OBR12")
    error_at(load_errors(folder), file, line, "PatientState:", "'OBR12' is not a field path")


def test_bad_path_in_list(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "AdmissionID: [PV1-19.1, PID-18.1]",
                      "AdmissionID: [PV1-19.1, PID-18.x]")
    error_at(load_errors(folder), file, line, "AdmissionID", "'PID-18.x'")


def test_bad_condition_syntax(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml",
                      'PatientWeight: {path: "OBX{3.1=29463-7|3.2=Body Weight}-5"',
                      'PatientWeight: {path: "OBX{Body Weight}-5"')
    error_at(load_errors(folder), file, line, "PatientWeight", "must look like 3.2=VALUE")


def test_date_attribute_without_date_transform(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "PatientBirthDate: {path: PID-7, transform: date}",
                      "PatientBirthDate: PID-7")
    error_at(load_errors(folder), file, line, "PatientBirthDate has VR DA",
             "add 'transform: date'")


def test_time_attribute_with_wrong_transform(folder: Path) -> None:
    file, _ = edit(folder, "orders.yaml",
                   "          {path: [ORC-7.4, OBR-27.4, OBR-36, ORC-15], transform: time}",
                   "          {path: [ORC-7.4, OBR-27.4, OBR-36, ORC-15], transform: date}")
    errors = load_errors(folder)
    assert any("ScheduledProcedureStepStartTime has VR TM: add 'transform: time'" in e
               and e.startswith(file + ":") for e in errors)


def test_sequence_attribute_without_code_transform(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml",
                      "ScheduledProtocolCodeSequence: {path: OBR-4, transform: "
                      "{code: {triplets: [2, 1]}}}",
                      "ScheduledProtocolCodeSequence: OBR-4")
    error_at(load_errors(folder), file, line, "ScheduledProtocolCodeSequence has VR SQ",
             "add 'transform: code'")


def test_undefined_lookup_table(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "transform: {lookup: sex}}",
                      "transform: {lookup: gender}}")
    error_at(load_errors(folder), file, line, "PatientSex", "lookup table 'gender' is not defined")


def test_structural_transform_not_first(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "transform: {person_name: {groups: script}}}",
                      "transform: [upper, person_name]}")
    error_at(load_errors(folder), file, line, "transform 'person_name' must come first")


def test_transform_parameter_checks(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "PatientTelephoneNumbers: PID-13.1",
                      "PatientTelephoneNumbers: {path: PID-13.1, transform: [{truncate: x}, "
                      "{upper: 1}]}")
    errors = load_errors(folder)
    error_at(errors, file, line, "truncate needs a whole number")
    error_at(errors, file, line, "upper takes no parameter")


def test_duplicate_keys(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "    R: ROUTINE\n", "    R: ROUTINE\n    S: HIGH\n")
    error_at(load_errors(folder), file, line + 1, "duplicate key 'S'")


def test_duplicate_keyword_in_field_block(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "    IssuerOfPatientID: PID-3.4\n",
                      "    IssuerOfPatientID: PID-3.4\n    IssuerOfPatientID: PID-3.5\n")
    error_at(load_errors(folder), file, line + 1, "duplicate key 'IssuerOfPatientID'")


def test_yaml_syntax_error(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "    IssuerOfPatientID: PID-3.4",
                      "    IssuerOfPatientID: [PID-3.4")
    errors = load_errors(folder)
    matching = [e for e in errors if e.startswith(file + ":") and "YAML syntax" in e]
    assert matching, errors
    reported = int(matching[0][len(file) + 1 :].split(":")[0])
    # the parser notices the unclosed bracket on the line itself or shortly after
    assert line <= reported <= line + 2


def test_yaml_syntax_error_tab_indentation(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "    R: ROUTINE\n", "\tR: ROUTINE\n")
    errors = load_errors(folder)
    assert any(e.startswith(f"{file}:{line}:") and "YAML syntax" in e for e in errors), errors


def test_unknown_section_in_use(folder: Path) -> None:
    # the ORM^O01 procedure block (OMI^O23 has the same 'use' line)
    file, line = edit(folder, "orders.yaml",
                      "      use: order_request\n      StudyInstanceUID: {path: ZDS-1.1,",
                      "      use: order_requst\n      StudyInstanceUID: {path: ZDS-1.1,")
    err = error_at(load_errors(folder), file, line, "unknown section 'order_requst'")
    assert "did you mean 'order_request'?" in err


def test_unknown_section_in_use_list(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "    patient: {use: patient_demographics}\n    prior:\n"
                      "      PatientID: {path: MRG-1.1, required: true}\n      IssuerOfPatientID:"
                      " MRG-1.4\n\n  - types: [ADT^A47]",
                      "    patient: {use: [patient_demographic]}\n    prior:\n"
                      "      PatientID: {path: MRG-1.1, required: true}\n      IssuerOfPatientID:"
                      " MRG-1.4\n\n  - types: [ADT^A47]")
    errors = load_errors(folder)
    error_at(errors, file, line, "unknown section 'patient_demographic'")


def test_unknown_top_level_key(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "order_control:\n", "order_contrl:\n")
    errors = load_errors(folder)
    error_at(errors, file, line, "unknown top-level key 'order_contrl'",
             "did you mean 'order_control'")


def test_unknown_message_key(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "  - types: [ORM^O01]\n    kind: order\n",
                      "  - types: [ORM^O01]\n    knd: order\n    kind: order\n")
    error_at(load_errors(folder), file, line + 1, "unknown message mapping key 'knd'",
             "did you mean 'kind'")


def test_bad_kind(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "    kind: patient_merge", "    kind: patient_merger")
    error_at(load_errors(folder), file, line, "kind 'patient_merger' must be one of")


def test_bad_study_uid_option(folder: Path) -> None:
    file, line = edit(folder, "orders.yaml", "    study_uid:\n      missing: generate   #",
                      "    study_uid:\n      missing: invent   #")
    error_at(load_errors(folder), file, line, "study_uid.missing must be generate or reject")


def test_bad_order_control_entry(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "  XO_CM: {action: status, status: COMPLETED}",
                      "  XO_CM: {action: stauts, status: COMPLETED}")
    error_at(load_errors(folder), file, line, "order_control 'XO_CM'", "action must be one of")


def test_bad_order_control_status(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "  XO_CM: {action: status, status: COMPLETED}",
                      "  XO_CM: {action: status, status: DONE}")
    error_at(load_errors(folder), file, line, "status must be one of")


def test_type_mapped_twice(folder: Path) -> None:
    file, line = edit(folder, "adt.yaml", "  - types: [ADT^A47]", "  - types: [ADT^A40]")
    error_at(load_errors(folder), file, line, "ADT^A40 is mapped twice")


def test_missing_patient_id(folder: Path) -> None:
    file, _ = edit(folder, "adt.yaml", "      PatientID: {path: MRG-1.1, required: true}\n"
                   "      IssuerOfPatientID: MRG-1.4\n\n  - types: [ADT^A47]",
                   "      IssuerOfPatientID: MRG-1.4\n\n  - types: [ADT^A47]")
    # prior without PatientID is allowed by the loader; the patient block is what needs one
    load_mappings(folder)
    file, line = edit(folder, "adt.yaml", "    patient: {use: patient_demographics}\n    prior:\n"
                      "      IssuerOfPatientID: MRG-1.4\n\n  - types: [ADT^A47]",
                      "    patient: {IssuerOfPatientID: PID-3.4}\n    prior:\n"
                      "      IssuerOfPatientID: MRG-1.4\n\n  - types: [ADT^A47]")
    error_at(load_errors(folder), file, line, "patient needs a PatientID mapping")


def test_station_rule_unknown_keyword(folder: Path) -> None:
    file, line = edit(folder, "stations.yaml", "station_rules: []",
                      "station_rules:\n  - when: {Modalty: CT}\n"
                      "    set: {ScheduledStationAETitle: [CT01]}")
    error_at(load_errors(folder), file, line + 1, "'Modalty' is not a DICOM keyword")


def test_station_rule_bad_path(folder: Path) -> None:
    file, line = edit(folder, "stations.yaml", "station_rules: []",
                      "station_rules:\n  - when: {MSH-4x: ER}\n"
                      "    set: {ScheduledStationAETitle: [CT01]}")
    error_at(load_errors(folder), file, line + 1, "station rule", "'MSH-4x'")


def test_station_rule_without_set(folder: Path) -> None:
    file, line = edit(folder, "stations.yaml", "station_rules: []",
                      "station_rules:\n  - when: {Modality: CT}\n")
    error_at(load_errors(folder), file, line + 1, "a station rule needs when: and set:")


def test_several_errors_are_all_reported(folder: Path) -> None:
    f1, l1 = edit(folder, "adt.yaml", "transform: {person_name: {groups: script}}}",
                      "transform: persn_name}")
    f2, l2 = edit(folder, "tables.yaml", "  XO_CM: {action: status, status: COMPLETED}",
                  "  XO_CM: {action: status, status: DONE}")
    errors = load_errors(folder)
    error_at(errors, f1, l1, "persn_name")
    error_at(errors, f2, l2, "XO_CM", "status must be one of")


def test_empty_folder(tmp_path: Path) -> None:
    errors = load_errors(tmp_path)
    assert errors == [f"{tmp_path}:0: no mapping files (*.yaml) found"]


def test_order_mappings_need_order_control(folder: Path) -> None:
    text = (folder / "tables.yaml").read_text(encoding="utf-8")
    (folder / "tables.yaml").write_text(text.split("\norder_control:")[0] + "\n",
                                        encoding="utf-8")
    errors = load_errors(folder)
    assert any("order mappings need an order_control table" in e for e in errors), errors


def test_file_must_be_a_mapping(folder: Path) -> None:
    (folder / "extra.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    errors = load_errors(folder)
    error_at(errors, str(folder / "extra.yaml"), 1, "the file must be a mapping")


def test_empty_extra_file_is_ignored(folder: Path) -> None:
    (folder / "empty.yaml").write_text("# nothing here\n", encoding="utf-8")
    assert "ORM^O01" in load_mappings(folder).messages


def test_section_defined_twice(folder: Path) -> None:
    (folder / "zz.yaml").write_text("sections:\n  order_request:\n    PatientID: PID-3.1\n",
                                    encoding="utf-8")
    error_at(load_errors(folder), str(folder / "zz.yaml"), 2,
             "section 'order_request' is defined twice")


def test_malformed_order_control_key_names_file_and_line(folder: Path) -> None:
    file, line = edit(folder, "tables.yaml", "  NW_IP: {action: upsert",
                      "  NW-IP: {action: upsert")
    error_at(load_errors(folder), file, line, "'NW-IP' must look like NW_SC or CA")
