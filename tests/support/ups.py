"""A UPS performed procedure as a performer reports it before COMPLETED: the attributes of
the Unified Procedure Step Performed Procedure Sequence that PS3.4 Table CC.2.5-3 requires
for that final state."""

from __future__ import annotations

from pydicom.dataset import Dataset


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def performed_item(start: str, end: str, station: str = "CT02",
                   output: list[Dataset] | None = None) -> Dataset:
    """One performed-procedure item: times, the station, what was done, its output."""
    item = Dataset()
    item.PerformedProcedureStepStartDateTime = start
    item.PerformedProcedureStepEndDateTime = end
    item.PerformedStationNameCodeSequence = [code(station, "99MWLBROKER", station)]
    item.PerformedWorkitemCodeSequence = [code("CT", "DCM", "CT")]
    item.OutputInformationSequence = output or []
    return item


def performed_procedure(start: str, end: str, station: str = "CT02",
                        output: list[Dataset] | None = None) -> Dataset:
    """An N-SET (or UPS-RS update) that reports the performed procedure."""
    ds = Dataset()
    ds.UnifiedProcedureStepPerformedProcedureSequence = [
        performed_item(start, end, station, output)]
    return ds
