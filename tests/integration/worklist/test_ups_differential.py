"""The same items searched through MWL C-FIND, UPS C-FIND and UPS-RS give the same matches:
orders on several stations and days, some claimed, completed or cancelled, queried by station
and date, date range, patient, accession and name pattern through the three views."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    UnifiedProcedureStepPull,
)

from broker.app import Broker
from tests.support.broker import make_settings, mappings_with_orc18_station, running
from tests.support.mllp import msa, send
from tests.support.mpps import mpps
from tests.support.samples import order

STATIONS = ("CT01", "CT02", "MR1")


def day(offset: int) -> str:
    return (datetime.date.today() + datetime.timedelta(days=offset)).strftime("%Y%m%d")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    async with running(settings) as b:
        yield b


def orders() -> list[bytes]:
    out = []
    for n in range(1, 31):
        out.append(order(n, station=STATIONS[n % 3], start=f"{day(n % 3 - 1)}{8 + n % 9:02d}15",
                         patient_name=f"{'NEEDLE' if n % 7 == 0 else 'HAY'}^NUMBER{n}",
                         modality="MR" if n % 3 == 2 else "CT").encode())
    for n in (4, 11, 18):  # cancelled by the RIS
        out.append(order(n, control_id=f"CA{n}", order_control="CA", order_status="CA",
                         station=STATIONS[n % 3], start=f"{day(n % 3 - 1)}{8 + n % 9:02d}15"
                         ).encode())
    return out


def started(port: int, numbers: tuple[int, ...]) -> None:
    """MPPS IN PROGRESS for these orders' steps."""
    from pydicom.uid import generate_uid

    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
    try:
        for n in numbers:
            ds = mpps(study_uid=order(n).study_uid or "", sps_id=f"SPS{n:07d}",
                      accession=f"A{n:07d}")
            status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())
            assert status.Status == 0
    finally:
        assoc.release()


#: (name, MWL keys at the top, MWL SPS keys, UPS keys, UPS-RS parameters)
QUERIES: list[tuple[str, dict[str, str], dict[str, str], dict[str, Any], dict[str, str]]] = [
    ("station and today", {}, {"ScheduledStationAETitle": "CT02",
                               "ScheduledProcedureStepStartDate": day(0)},
     {"station": "CT02", "ScheduledProcedureStepStartDateTime": f"{day(0)}-{day(0)}"},
     {"ScheduledStationNameCodeSequence.CodeValue": "CT02",
      "ScheduledProcedureStepStartDateTime": f"{day(0)}-{day(0)}"}),
    ("date range", {}, {"ScheduledProcedureStepStartDate": f"{day(-1)}-{day(0)}"},
     {"ScheduledProcedureStepStartDateTime": f"{day(-1)}-{day(0)}"},
     {"ScheduledProcedureStepStartDateTime": f"{day(-1)}-{day(0)}"}),
    ("patient", {"PatientID": "P0000007"}, {}, {"PatientID": "P0000007"},
     {"PatientID": "P0000007"}),
    ("accession", {"AccessionNumber": "A0000014"}, {}, {"accession": "A0000014"},
     {"ReferencedRequestSequence.AccessionNumber": "A0000014"}),
    ("name pattern", {"PatientName": "NEEDLE*"}, {}, {"PatientName": "NEEDLE*"},
     {"PatientName": "NEEDLE*"}),
    ("everything", {}, {}, {}, {}),
]


def mwl(assoc: Any, top: dict[str, str], sps: dict[str, str]) -> set[str]:
    ds = Dataset()
    ds.AccessionNumber = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword, value in sps.items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return {str(i.AccessionNumber) for s, i in assoc.send_c_find(
        ds, ModalityWorklistInformationFind) if s.Status in (0xFF00, 0xFF01)}


def ups(assoc: Any, keys: dict[str, Any]) -> set[str]:
    ds = Dataset()
    ds.ProcedureStepState = "SCHEDULED"  # what the worklist's default answer shows
    request = Dataset()
    request.AccessionNumber = keys.get("accession", "")
    ds.ReferencedRequestSequence = [request]
    if "station" in keys:
        code = Dataset()
        code.CodeValue = keys["station"]
        ds.ScheduledStationNameCodeSequence = [code]
    for keyword, value in keys.items():
        if keyword not in ("station", "accession"):
            setattr(ds, keyword, value)
    return {str(i.ReferencedRequestSequence[0].AccessionNumber) for s, i in assoc.send_c_find(
        ds, UnifiedProcedureStepPull) if s.Status in (0xFF00, 0xFF01)}


async def ups_rs(base: str, params: dict[str, str]) -> set[str]:
    """The accession numbers UPS-RS finds."""
    query = {**params, "ProcedureStepState": "SCHEDULED",
             "includefield": "ReferencedRequestSequence", "limit": "1000"}
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/dicomweb/workitems", params=query,
            headers={"Accept": "application/dicom+json"}) as answer:
        if answer.status == 204:
            return set()
        assert answer.status == 200, await answer.text()
        items = await answer.json(content_type=None)
    return {i["0040A370"]["Value"][0]["00080050"]["Value"][0] for i in items}


async def test_mwl_ups_and_ups_rs_find_the_same_items(broker: Broker) -> None:
    acks = await send(broker.mllp.bound_port, *orders())
    assert {msa(a)[1] for a in acks} == {"AA"}
    await asyncio.to_thread(started, broker.dicom.bound_port, (1, 9, 13))
    assert broker.admin is not None
    base = f"http://127.0.0.1:{broker.admin.bound_port}"

    def dimse() -> list[tuple[str, set[str], set[str]]]:
        ae = AE(ae_title="DIFF")
        ae.add_requested_context(ModalityWorklistInformationFind)
        ae.add_requested_context(UnifiedProcedureStepPull)
        assoc = ae.associate("127.0.0.1", broker.dicom.bound_port, ae_title="MWLBROKER")
        try:
            return [(name, mwl(assoc, top, sps), ups(assoc, keys))
                    for name, top, sps, keys, _ in QUERIES]
        finally:
            assoc.release()
    answers = await asyncio.to_thread(dimse)
    nonempty = 0
    for (name, by_mwl, by_ups), query in zip(answers, QUERIES, strict=True):
        assert by_mwl == by_ups, name
        assert await ups_rs(base, query[4]) == by_mwl, name
        nonempty += bool(by_mwl)
    assert nonempty == len(QUERIES), [(a[0], sorted(a[1])) for a in answers]
    everything = answers[-1][1]
    assert "A0000013" not in everything and "A0000004" not in everything  # started, cancelled
