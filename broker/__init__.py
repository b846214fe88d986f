"""HL7 v2 / DICOM modality worklist and MPPS broker."""

__version__ = "0.1.0"
