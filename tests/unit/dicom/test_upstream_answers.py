"""Upstream answers read once: an answer received again byte for byte takes the previous
poll's attributes (as a copy of its own), a changed one is read anew, and an answer whose
elements were already read is read each time."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from broker.dicom import upstream_answers
from broker.dicom.importer import to_attrs
from broker.dicom.upstream_answers import Read, attrs_of, fingerprint


def answer(name: str = "MÜLLER^HANS", sps: str = "S1", implicit: bool = True) -> Dataset:
    """An upstream answer as pynetdicom hands it over: decoded, elements not yet read."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = name, "P1"
    item = Dataset()
    item.ScheduledProcedureStepID, item.Modality = sps, "CT"
    ds.ScheduledProcedureStepSequence = [item]
    data = encode(ds, implicit, True)
    assert data is not None
    return decode(BytesIO(data), implicit, True)


def test_the_same_answer_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counting(ds: Dataset) -> dict[str, Any]:
        calls.append(1)
        return to_attrs(ds)

    monkeypatch.setattr(upstream_answers, "to_attrs", counting)
    first: Read = {}
    a = attrs_of(answer(), {}, first)
    second: Read = {}
    b = attrs_of(answer(), first, second)
    assert calls == [1], "read once, then taken from the previous poll"
    assert a == b == to_attrs(answer())
    b["ScheduledProcedureStepSequence"][0]["Modality"] = "MR"
    third: Read = {}
    assert attrs_of(answer(), second, third)["ScheduledProcedureStepSequence"][0][
        "Modality"] == "CT", "each use gets its own copy"


def test_a_changed_answer_is_read_anew() -> None:
    kept: Read = {}
    attrs_of(answer(), {}, kept)
    now: Read = {}
    assert attrs_of(answer("ROE^ANNA"), kept, now)["PatientName"] == "ROE^ANNA"
    assert attrs_of(answer(sps="S2"), kept, now)["ScheduledProcedureStepSequence"][0][
        "ScheduledProcedureStepID"] == "S2"
    assert attrs_of(answer(implicit=False), kept, now) == to_attrs(answer())
    assert len(now) == 3, "explicit VR bytes are another answer"


def test_an_answer_already_read_is_not_kept() -> None:
    ds = answer()
    assert fingerprint(ds) is not None
    _ = ds.PatientName  # pydicom converts the element: no longer the bytes as received
    assert fingerprint(ds) is None
    kept: Read = {}
    assert attrs_of(ds, {}, kept)["PatientName"] == "MÜLLER^HANS" and kept == {}
