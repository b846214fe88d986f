"""The worklist SCP parses the same encoded query from the same caller once: the kept parse
is the one a fresh parse gives, per caller options, and a refused query is not kept."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from broker.dicom.mwl import QueryLimitError, QueryLimits
from broker.dicom.worklist_matching import (
    PARSED_KEPT,
    CallingAeOptions,
    WorklistMatching,
    WorklistOptions,
)

IMPLICIT = "1.2.840.10008.1.2"


def query(station: str = "", name: str = "") -> Dataset:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = ""
    item = Dataset()
    item.ScheduledStationAETitle = station
    item.ScheduledProcedureStepStartDate = "20261203"
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def encoded(ds: Dataset) -> bytes:
    data = encode(ds, True, True)  # implicit VR little endian
    assert data is not None
    return data


class Counting:
    """The identifier's decoder, counting its calls."""

    def __init__(self, ds: Dataset) -> None:
        self.ds, self.calls = ds, 0

    def __call__(self) -> Dataset:
        self.calls += 1
        return self.ds


def test_the_same_query_is_parsed_once_and_equals_a_fresh_parse() -> None:
    matching = WorklistMatching()
    ds = query("CT01")
    decode = Counting(ds)
    first = matching.parse_encoded(encoded(ds), IMPLICIT, "CT01", decode)
    again = matching.parse_encoded(encoded(query("CT01")), IMPLICIT, "CT01", decode)
    assert again is first and decode.calls == 1
    fresh = matching.parse(ds, "CT01")
    assert first.query.keys() == fresh.query.keys()
    assert [k.keyword for k in first.keys] == [k.keyword for k in fresh.keys]


def test_another_query_syntax_or_caller_is_parsed_again() -> None:
    options = WorklistOptions(callers={"MR01": CallingAeOptions(station_key=True)})
    matching = WorklistMatching(options)
    ds = query()
    decode = Counting(ds)
    ct = matching.parse_encoded(encoded(ds), IMPLICIT, "CT01", decode)
    mr = matching.parse_encoded(encoded(ds), IMPLICIT, "MR01", decode)
    matching.parse_encoded(encoded(ds), "1.2.840.10008.1.2.1", "CT01", decode)
    other = query(name="DOE*")
    named = matching.parse_encoded(encoded(other), IMPLICIT, "CT01", Counting(other))
    assert decode.calls == 3
    assert "ScheduledStationAETitle" not in ct.query.keywords()
    assert mr.query.keys()["ScheduledStationAETitle"] == "MR01", "the caller is the station"
    assert named.query.keys()["PatientName"] == "DOE*"


def test_a_refused_query_is_refused_each_time() -> None:
    matching = WorklistMatching(limits=QueryLimits(max_value_length=4))
    ds = query(name="LONGER*")
    decode = Counting(ds)
    for _ in range(2):
        with pytest.raises(QueryLimitError):
            matching.parse_encoded(encoded(ds), IMPLICIT, "CT01", decode)
    assert decode.calls == 2


def test_at_most_parsed_kept_queries_are_kept() -> None:
    matching = WorklistMatching()
    for n in range(PARSED_KEPT + 10):
        ds = query(name=f"N{n}*")
        matching.parse_encoded(encoded(ds), IMPLICIT, "CT01", Counting(ds))
    assert len(matching._parsed) == PARSED_KEPT
    first = query(name="N0*")
    decode = Counting(first)
    matching.parse_encoded(encoded(first), IMPLICIT, "CT01", decode)
    assert decode.calls == 1, "the oldest went first"
