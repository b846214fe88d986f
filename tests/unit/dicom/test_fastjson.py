"""The fast DICOM JSON converter gives exactly what pydicom gives, or defers to it."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from broker.cli.simulator import completed, in_progress
from broker.dicom.fastjson import to_json
from tests.support.mpps import completion, mpps


def encode(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def reference(raw: bytes, implicit: bool) -> dict[str, Any]:
    return read_dataset(BytesIO(raw), implicit, True).to_json_dict()


def worklist_item() -> Dataset:
    item = Dataset()
    item.PatientName, item.PatientID = "DOE^JANE", "P1"
    item.StudyInstanceUID, item.AccessionNumber = "1.2.3.4", "A1"
    item.RequestedProcedureID = "RP1"
    sps = Dataset()
    sps.ScheduledProcedureStepID, sps.Modality = "SPS1", "CT"
    sps.ScheduledProcedureStepDescription = "Chest"
    item.ScheduledProcedureStepSequence = [sps]
    return item


def samples() -> list[Dataset]:
    mixed = Dataset()
    mixed.SpecificCharacterSet = "ISO_IR 192"
    mixed.PatientName = "Doe^John=山田^太郎=やまだ^たろう"
    mixed.OtherPatientIDs = ["A", "B"]
    mixed.PatientWeight, mixed.PatientSize = "70.5", None
    mixed.SeriesNumber, mixed.Rows = "3", 5
    mixed.ImageType = ["ORIGINAL", "PRIMARY"]
    mixed.PixelSpacing = ["0.5", "1e3"]
    mixed.PatientComments = "line1\\line2 "
    mixed.Modality = ""
    mixed.StudyTime = "101010.5"
    mixed.ProcedureCodeSequence = []
    inner = Dataset()
    inner.SeriesInstanceUID = "1.2.3"
    mixed.ScheduledStepAttributesSequence = [inner, Dataset()]
    latin = Dataset()
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = "Müller^Jürgen"
    latin.InstitutionName = "Hôpital "
    item = worklist_item()
    return [in_progress(item, "CT01"), completed([], [("1.2.9", "1.2.840.10008.5.1.4.1.1.7",
                                                         "1.2.10")], False),
            mpps(), completion(), mixed, latin]


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("number", range(6))
def test_same_as_pydicom(number: int, implicit: bool) -> None:
    raw = encode(samples()[number], implicit)
    fast = to_json(raw, implicit)
    assert fast is not None
    assert fast == reference(raw, implicit)


def test_defers_to_pydicom_for_other_character_sets_and_private_tags() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO 2022 IR 87"
    ds.PatientName = "X^Y"
    assert to_json(encode(ds, True), True) is None
    private = Dataset()
    private.add_new(0x00091010, "LO", "private")
    assert to_json(encode(private, True), True) is None
    assert to_json(b"\x08\x00\x05", True) is None  # truncated


texts = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                       blacklist_characters="\\="), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(name=texts, pid=texts, desc=st.text(max_size=30), implicit=st.booleans(),
       weight=st.one_of(st.none(), st.floats(0, 500, allow_nan=False).map(lambda f: f"{f:.3g}")),
       number=st.one_of(st.none(), st.integers(-999, 9999).map(str)))
def test_random_datasets_match_pydicom_or_defer(name: str, pid: str, desc: str,
                                                implicit: bool, weight: str | None,
                                                number: str | None) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = name, pid
    ds.PerformedProcedureStepDescription = desc.replace("\\", "/")[:64]
    ds.PatientWeight, ds.SeriesNumber = weight, number
    item = Dataset()
    item.PatientID = pid
    ds.ScheduledStepAttributesSequence = [item]
    raw = encode(ds, implicit)
    fast = to_json(raw, implicit)
    if fast is not None:
        assert fast == reference(raw, implicit)
