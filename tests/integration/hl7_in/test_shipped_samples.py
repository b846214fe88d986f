"""Every shared sample message sent to the real ``mwl-broker serve`` by two MLLP clients we
did not write for the broker (python-hl7's ``mllp_send``) or did (``mwl-broker send``); the
stored rows are checked field by field against REFERENCE.md §2."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.support.broker import BIN, SAMPLES, BrokerProcess
from tests.support.db import Db

ORM_UID = "1.113654.3.13.1026"
OMI_UID = "1.2.392.200036.9125.0.198811291108.7"


def send_with_mllp_send(port: int, name: str) -> str:
    out = subprocess.run([str(BIN / "mllp_send"), "--loose", "-f", str(SAMPLES / name),
                          "-p", str(port), "127.0.0.1"], capture_output=True, timeout=30,
                         check=True)
    return out.stdout.decode("latin-1")


def send_with_broker_cli(port: int, name: str) -> str:
    out = subprocess.run([str(BIN / "mwl-broker"), "send", "-p", str(port),
                          str(SAMPLES / name)], capture_output=True, timeout=30)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.decode("utf-8")


def ack_code(output: str) -> str:
    for line in output.replace("\r", "\n").splitlines():
        if line.startswith("MSA|"):
            return line.split("|")[1]
    raise AssertionError(f"no MSA in {output!r}")


@pytest.mark.parametrize("sender", [send_with_mllp_send, send_with_broker_cli],
                         ids=["mllp_send", "mwl-broker-send"])
def test_every_shared_sample(broker_process: BrokerProcess,
                             sender: Callable[[int, str], str]) -> None:
    db = Db(broker_process.db)
    port = broker_process.port

    assert ack_code(sender(port, "ORM^O01.hl7")) == "AA"
    patient = db.patient("583295", "ADT1")
    assert patient["PatientName"] == "DOE^J1"
    assert patient["PatientSex"] == "M"
    assert patient["MedicalAlerts"] == ["xxx"]  # OBR-13
    proc = db.procedure(ORM_UID)  # ZDS-1
    assert proc["_patient_id"] == "583295"
    assert proc["AccessionNumber"] == proc["_accession"] == "MOF5026"  # OBR-18
    assert proc["RequestedProcedureID"] == "RP1026"  # OBR-19
    assert proc["PlacerOrderNumberImagingServiceRequest"] == "A103Z"  # ORC-2
    assert proc["FillerOrderNumberImagingServiceRequest"] == "B103Z"  # ORC-3
    assert proc["RequestedProcedurePriority"] == "STAT"  # ORC-7.6 = S
    assert proc["ReferringPhysicianName"] == "NELL^FREDERICK^P^DR"  # PV1-8
    assert proc["AdmissionID"] == "V103-1"  # PV1-19
    assert proc["RequestingPhysician"] == "ESTRADA^JAIME^P^DR"  # OBR-16
    assert proc["PatientTransportArrangements"] == "WALK"  # OBR-30
    assert proc["RequestedProcedureDescription"] == "Procedure 1"  # OBR-44
    assert proc["RequestedProcedureCodeSequence"] == [
        {"CodeValue": "P1", "CodingSchemeDesignator": "ERL_MESA", "CodeMeaning": "Procedure 1"}]
    steps = db.steps(ORM_UID)
    assert list(steps) == ["SPS2032"]  # OBR-20
    step = steps["SPS2032"]
    assert step["_status"] == "SCHEDULED"  # NW_SC
    assert step["Modality"] == step["_modality"] == "MR"  # OBR-24
    # ORC-7.4 and OBR-27.4 are empty in this message: ORC-15 (order effective time) is used
    assert (step["ScheduledProcedureStepStartDate"],
            step["ScheduledProcedureStepStartTime"]) == ("20000701", "0900")
    assert step["_start_dt"] == "20000701090000"
    assert step["ScheduledProtocolCodeSequence"] == [  # OBR-4.4-6
        {"CodeValue": "X1_A1", "CodingSchemeDesignator": "DSS_MESA",
         "CodeMeaning": "SP Action Item X1_A1"}]
    assert step["ScheduledProcedureStepDescription"] == "SP Action Item X1_A1"
    assert step["ScheduledPerformingPhysicianName"] == "ESTRADA^JAIME^P^DR"  # OBR-34

    assert ack_code(sender(port, "OMI^O23-ImagingOrder.hl7")) == "AA"
    patient = db.patient("PID_1", "ADT1")  # PID-3.1 / PID-3.4
    assert patient["PatientName"] == "Smith^Lucy^Mark"  # PID-5
    assert patient["PatientBirthDate"] == "20141014"  # PID-7
    assert patient["PatientSex"] == "F"  # PID-8
    assert patient["PregnancyStatus"] == "3"  # PV1-15 = B6
    assert patient["PatientWeight"] == "65"  # OBX body weight, kg
    assert patient["PatientSize"] == "1.65"  # OBX body height, m
    assert patient["PatientState"] == "PatientState"  # OBR-12
    assert patient["MedicalAlerts"] == ["MedicalAlerts"]  # OBR-13
    proc = db.procedure(OMI_UID)  # IPC-3
    assert proc["AccessionNumber"] == "AccessionNumber"  # IPC-1
    assert proc["RequestedProcedureID"] == "RequestedProcID"  # IPC-2
    assert proc["PlacerOrderNumberImagingServiceRequest"] == (
        "PlacerOrderNumberImagingServiceRequest")
    assert proc["FillerOrderNumberImagingServiceRequest"] == (
        "FillerOrderNumberImagingServiceRequest")
    assert "RequestedProcedurePriority" not in proc  # ORC-7.6 holds no table 0027 code
    assert proc["AdmissionID"] == "AdmissionIDFromVisitNo"  # PV1-19 before PID-18
    assert proc["ReferringPhysicianName"] == (
        "ReferringPhysicianFN^ReferringPhysicianGN^ReferringPhysicianMN^DR^Md")
    assert proc["RequestingPhysician"] == (
        "RequestingPhysicianFN^RequestingPhysicianGN^RequestingPhysicianMN^DR^Md")
    assert proc["PatientTransportArrangements"] == "PatientTransportArrangements"
    # OBR-31: MSH-18 says 8859/1 but the bytes are UTF-8: the en dash survives
    assert proc["ReasonForTheRequestedProcedure"] == (
        "Rheumatoid, other arthritis with motor score from 12 \u201335.,comorbidity in tier 3")
    assert proc["RequestedProcedureComments"] == "RequestedProcedureComments"  # NTE-3
    assert proc["RequestedProcedureDescription"] == "Microscopic Observation"  # OBR-44
    steps = db.steps(OMI_UID)
    assert list(steps) == ["ScheduledProcStepID"]  # IPC-4
    step = steps["ScheduledProcStepID"]
    assert step["Modality"] == "CT"  # IPC-5
    assert step["_stations"] == ["ScheduledStationAET1", "ScheduledStationAET2"]  # IPC-9
    assert step["ScheduledStationName"] == ["ScheduledStationName"]  # IPC-7
    assert step["ScheduledProcedureStepLocation"] == "ScheduledProcStepLocation"  # IPC-8
    assert (step["ScheduledProcedureStepStartDate"],
            step["ScheduledProcedureStepStartTime"]) == ("20000816", "1510")  # TQ1-7
    assert step["ScheduledProtocolCodeSequence"] == [  # IPC-6
        {"CodeValue": "10637-7", "CodingSchemeDesignator": "LN",
         "CodeMeaning": "Microscopic Observation"}]
    assert step["ScheduledPerformingPhysicianName"] == (
        "ScheduledPerformingPhysicianNameFN^ScheduledPerformingPhysicianNameGN^"
        "ScheduledPerformingPhysicianNameMN^DR^Md")

    # OMI header with ORM-style OBR-18/19/20 and a ZDS: same study, so it updates that order
    assert ack_code(sender(port, "ORM^O01-GeneralOrder.hl7")) == "AA"
    steps = db.steps(OMI_UID)
    assert list(steps) == ["ScheduledProcStepID"]  # OBR-20
    assert steps["ScheduledProcStepID"]["_status"] == "SCHEDULED"
    assert db.procedure(OMI_UID)["AccessionNumber"] == "AccessionNumber"  # OBR-18

    assert ack_code(sender(port, "ADT^A31-UpdatePersonInfo.hl7")) == "AA"
    patient = db.patient("PID_1", "ADT1")
    assert patient["PatientComments"] == "PatientComments"
    assert patient["PatientWeight"] == "65"  # not in the A31: kept

    assert ack_code(sender(port, "ADT^A40-PatientMerge.hl7")) == "AA"
    assert db.patient("NEW_PID_1", "ADT1")["PatientName"] == "New_Smith^Lucy^Mark"
    assert ack_code(sender(port, "ADT^A47-ChangePatientID.hl7")) == "AA"
    assert db.patient("NEW_PID_1", "ADT1")["PatientName"] == "Smith^Lucy^Mark"

    before = db.domain_snapshot()
    assert ack_code(sender(port, "SIU^S12-NewAppointmentBooking.hl7")) == "AR"
    assert db.domain_snapshot() == before
    outcomes = [(row[0], row[1]) for row in db.log()]
    assert outcomes == [("103106", "AA"), ("1001125", "AA"), ("1001126", "AA"),
                        ("100212", "AA"), ("1002122", "AA"), ("1002123", "AA"),
                        ("1001127", "AR")]
    raw = db.query("SELECT raw FROM message_log WHERE control_id = '1001125'")[0][0]
    assert raw == (SAMPLES / "OMI^O23-ImagingOrder.hl7").read_bytes()
