"""FHIR R4 resources taken in at /fhir: validation (fhir.resources, R4B models),
OperationOutcome answers, Bundles and their references, the CapabilityStatement."""
