"""The coded values of the audit messages: DICOM PS3.16 DCM codes (CID 400 event IDs, 401
and 403 event types, 402 roles, 404 participant object ID types) and the RFC 3881 codes the
DICOM messages keep."""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    """A coded value: csd-code, codeSystemName and originalText (the Code Meaning)."""

    code: str
    system: str
    meaning: str


def dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# EventID (CID 400 Audit Event ID)
APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
ORDER_RECORD = dcm("110109", "Order Record")
PATIENT_RECORD = dcm("110110", "Patient Record")
PROCEDURE_RECORD = dcm("110111", "Procedure Record")
QUERY = dcm("110112", "Query")
SECURITY_ALERT = dcm("110113", "Security Alert")
USER_AUTHENTICATION = dcm("110114", "User Authentication")

# EventTypeCode (CID 401 Audit Event Type Code, CID 403 Security Alert Type)
APPLICATION_START = dcm("110120", "Application Start")
APPLICATION_STOP = dcm("110121", "Application Stop")
LOGIN = dcm("110122", "Login")
LOGOUT = dcm("110123", "Logout")
NODE_AUTHENTICATION = dcm("110126", "Node Authentication")

# RoleIDCode (CID 402 Audit Active Participant Role ID Code)
APPLICATION = dcm("110150", "Application")
APPLICATION_LAUNCHER = dcm("110151", "Application Launcher")
DESTINATION_ROLE = dcm("110152", "Destination Role ID")
SOURCE_ROLE = dcm("110153", "Source Role ID")

# ParticipantObjectIDTypeCode (CID 404, RFC 3881 and DCM)
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID = dcm("110180", "Study Instance UID")
SOP_CLASS_UID = dcm("110181", "SOP Class UID")
NODE_ID = dcm("110182", "Node ID")
PLACER_NUMBER = dcm("121020", "Placer Number")
ACCESSION_NUMBER = dcm("121022", "Accession Number")

# EventOutcomeIndicator
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = "0", "4", "8", "12"

# ParticipantObjectTypeCode and ParticipantObjectTypeCodeRole (PS3.15 A.5.1.2, A.5.2.6)
PERSON, SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_JOB = "1", "3", "20"

# AuditSourceTypeCode: an application server process
APPLICATION_SERVER = "4"

# NetworkAccessPointTypeCode
MACHINE_NAME, IP_ADDRESS = "1", "2"
