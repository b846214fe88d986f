"""HL7 v2: framing, decoding, parsing and acknowledgements (knows nothing of DICOM)."""
