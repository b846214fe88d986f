"""DICOM: datasets, and (later) the worklist and MPPS services (knows nothing of HL7)."""
