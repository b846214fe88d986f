"""UPS-RS (the DICOMweb Worklist Service) over a real broker: create, search (station, date
range, state, accession, tags, includefield, limit/offset), retrieve, claim with the wrong
and the right Transaction UID, update, complete, cancellation requests, and the admin's
authentication rules on /dicomweb."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from broker.app import Broker
from tests.support import ups
from tests.support.broker import make_settings, mappings_with_orc18_station, running
from tests.support.dicomweb import UpsRs, body, dataset
from tests.support.mllp import msa, send
from tests.support.samples import order

STATION = "ScheduledStationNameCodeSequence.CodeValue"


def today() -> str:
    return datetime.date.today().strftime("%Y%m%d")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    async with running(settings) as b:
        yield b


@pytest.fixture
async def web(broker: Broker) -> AsyncIterator[UpsRs]:
    assert broker.admin is not None
    client = UpsRs(broker.admin.bound_port)
    yield client
    await client.close()


def workitem(patient_id: str = "WEB1", station: str = "CT02", accession: str = "WEBACC1",
             state: str = "SCHEDULED", start: str = "") -> Dataset:
    ds = Dataset()
    ds.ProcedureStepState = state
    ds.PatientName = "WEB^PATIENT"
    if patient_id:
        ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.ProcedureStepLabel = "AI triage"
    ds.ScheduledProcedureStepPriority = "HIGH"
    ds.ScheduledProcedureStepStartDateTime = start or f"{today()}140000"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = station, "99MWLBROKER", \
        station
    ds.ScheduledStationNameCodeSequence = [code]
    request = Dataset()
    request.AccessionNumber = accession
    request.RequestedProcedureID = "RP-WEB"
    ds.ReferencedRequestSequence = [request]
    ds.InputReadinessState = "READY"
    return ds


def performed() -> Dataset:
    return ups.performed_procedure(f"{today()}093000", f"{today()}094500")


async def test_create_retrieve_and_the_refusals_of_create(web: UpsRs) -> None:
    uid = generate_uid()
    created = await web.call("POST", f"/workitems?{uid}", body(workitem()), 201)
    assert created.headers["Location"].endswith(f"/dicomweb/workitems/{uid}")
    got = dataset((await web.call("GET", f"/workitems/{uid}", expect=200)).body[0])
    assert got.ProcedureStepState == "SCHEDULED" and got.PatientID == "WEB1"
    assert got.ProcedureStepLabel == "AI triage" and got.SOPInstanceUID == uid
    assert got.ReferencedRequestSequence[0].AccessionNumber == "WEBACC1"

    again = await web.call("POST", f"/workitems?{uid}", body(workitem()), 409)
    assert again.body["dimse_status"] == "0x0111" and again.warnings[0].startswith("299 ")
    missing = await web.call("POST", "/workitems", body(workitem(patient_id="",
                                                                   accession="X2")), 400)
    assert missing.body["dimse_status"] == "0x0120"
    not_scheduled = await web.call("POST", "/workitems", body(workitem(
        state="IN PROGRESS", accession="X3")), 400)
    assert not_scheduled.body["dimse_status"] == "0xC309"
    # the UID from the body's SOPInstanceUID, or generated
    own = workitem(patient_id="WEB2", accession="WEBACC2")
    own.SOPInstanceUID = body_uid = generate_uid()
    located = await web.call("POST", "/workitems", body(own), 201)
    assert located.headers["Location"].endswith(body_uid)
    made = await web.call("POST", "/workitems", body(workitem("WEB3", accession="WEBACC3")),
                          201)
    assert (await web.state(made.headers["Location"].rsplit("/", 1)[1])) == "SCHEDULED"

    unknown = await web.call("GET", "/workitems/1.2.3.4.5.6", expect=404)
    assert unknown.body["dimse_status"] == "0xC307" and "1.2.3.4.5.6" in unknown.body["error"]
    assert (await web.call("GET", "/workitems/not-a-uid", expect=400)).body["error"]
    bad = await web.call("POST", "/workitems", {"00100020": "text"}, 400)
    assert "DICOM JSON" in bad.body["error"] and "Traceback" not in str(bad.body)
    wrong_type = await web.call("POST", "/workitems", body(workitem()), 415,
                                headers={"Content-Type": "text/plain"})
    assert "application/dicom+json" in wrong_type.body["error"]
    # only DICOM JSON is answered: XML or multipart asked for is 406 (PS3.18 8.7.3)
    for accept in ("application/dicom+xml", "multipart/related; type=\"application/dicom\"",
                   "application/dicom+json; q=0, application/dicom+xml"):
        await web.call("GET", f"/workitems/{uid}", expect=406, headers={"Accept": accept})
        await web.call("GET", "/workitems", expect=406, headers={"Accept": accept})
    for accept in ("application/dicom+json", "*/*", "application/dicom+xml, application/*"):
        await web.call("GET", f"/workitems/{uid}", expect=200, headers={"Accept": accept})
    # created with modifications: 201 with a Warning that names them
    changed = workitem(patient_id="WEB4", accession="WEBACC4")
    changed.TransactionUID = generate_uid()
    modified = await web.call("POST", "/workitems", body(changed), 201)
    assert modified.warnings == ['299 mwl-broker: "The UPS was created with modifications: '
                                 'left out TransactionUID"']
    # Type 1 at creation (PS3.4 Table CC.2.5-3)
    no_label = workitem(patient_id="WEB5", accession="WEBACC5")
    del no_label.ProcedureStepLabel
    refused = await web.call("POST", "/workitems", body(no_label), 400)
    assert refused.body["dimse_status"] == "0x0120" and "ProcedureStepLabel" in \
        refused.body["error"]


async def test_search_matches_as_ups_cfind_does(broker: Broker, web: UpsRs) -> None:
    t = today()
    acks = await send(broker.mllp.bound_port,
                      order(1, station="CT01", start=f"{t}0930").encode(),
                      order(2, station="CT01", start=f"{t}1000").encode(),
                      order(3, station="CT01", start=f"{t}1030").encode(),
                      order(4, station="MR01", start=f"{t}1100").encode())
    assert [msa(a)[1] for a in acks] == ["AA"] * 4
    pushed = generate_uid()
    await web.call("POST", f"/workitems?{pushed}", body(workitem()), 201)

    found = {dataset(d).ReferencedRequestSequence[0].AccessionNumber: dataset(d)
             for d in await web.search({STATION: "CT01"})}
    assert sorted(found) == ["A0000001", "A0000002", "A0000003"]
    first = str(found["A0000001"].SOPInstanceUID)
    assert await web.uids({"00404025.00080100": "CT*"}) == sorted(
        [*(str(d.SOPInstanceUID) for d in found.values()), pushed])
    window = {"ScheduledProcedureStepStartDateTime": f"{t}0945-{t}1045"}
    assert sorted(dataset(d).ReferencedRequestSequence[0].AccessionNumber
                  for d in await web.search(window)) == ["A0000002", "A0000003"]
    assert await web.uids({"ReferencedRequestSequence.AccessionNumber": "A0000001"}) == [
        first]
    assert await web.uids({"00100020": "P0000001"}) == [first]
    assert await web.uids({"PatientID": "WEB1"}) == [pushed]
    assert await web.uids({"SOPInstanceUID": first}) == [first]
    assert len(await web.search({"ProcedureStepState": "SCHEDULED"})) == 5
    assert await web.search({"ProcedureStepState": "IN PROGRESS"}) == []

    # return keys: a default set, the matching keys, includefield on top; all: everything
    plain = dataset((await web.search({"PatientID": "WEB1"}))[0])
    assert "PatientBirthDate" not in plain and plain.ProcedureStepLabel == "AI triage"
    extra = dataset((await web.search({"PatientID": "WEB1", "includefield":
                                       "PatientBirthDate,InputReadinessState"}))[0])
    assert extra.PatientBirthDate == "19700101" and extra.InputReadinessState == "READY"
    every = dataset((await web.search({"PatientID": "WEB1", "includefield": "all"}))[0])
    assert every.PatientBirthDate == "19700101" and "TransactionUID" not in every

    # paging: limit and offset, with a Warning while more remain
    page = await web.call("GET", "/workitems", params={STATION: "CT01", "limit": "2"},
                          expect=200)
    assert len(page.body) == 2 and any("additional results" in w for w in page.warnings)
    rest = await web.search({STATION: "CT01", "limit": "2", "offset": "2"})
    assert len(rest) == 1 and {dataset(d).SOPInstanceUID for d in page.body + rest} == {
        str(d.SOPInstanceUID) for d in found.values()}

    # what cannot be matched: a Warning (match anything), or a 400 naming it
    loose = await web.call("GET", "/workitems", params={"PatientID": "WEB1",
                                                        "ProcedureStepLabel": "AI*"}, expect=200)
    assert len(loose.body) == 1 and "ProcedureStepLabel" in loose.warnings[0]
    for params, words in (({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
                          ({"ProcedureStepState": "DONE"}, "DONE"),
                          ({"ScheduledProcedureStepStartDateTime": "yesterday"}, "DT"),
                          ({"ScheduledStationNameCodeSequence": "CT01"}, "sequence"),
                          ({"limit": "ten"}, "limit")):
        refused = await web.call("GET", "/workitems", params=params, expect=400)
        assert words in refused.body["error"], refused.body


async def test_claim_update_complete_and_cancel(broker: Broker, web: UpsRs) -> None:
    t = today()
    acks = await send(broker.mllp.bound_port,
                      order(1, station="CT01", start=f"{t}0930").encode(),
                      order(2, station="CT01", start=f"{t}1000").encode())
    assert [msa(a)[1] for a in acks] == ["AA"] * 2
    by_accession = {dataset(d).ReferencedRequestSequence[0].AccessionNumber:
                    str(dataset(d).SOPInstanceUID) for d in await web.search({STATION: "CT01"})}
    uid, other = by_accession["A0000001"], by_accession["A0000002"]

    # claim: no Transaction UID 400 (PS3.18 11.7.3), then a claim, another performer's 409
    missing = await web.change(uid, "IN PROGRESS", expect=400)
    assert missing.body["dimse_status"] == "0xC301" and missing.warnings
    mine = generate_uid()
    claimed = await web.change(uid, "IN PROGRESS", mine)
    assert claimed.body is None  # PS3.18 11.7.3: no payload
    taken = await web.change(uid, "IN PROGRESS", generate_uid(), expect=409)
    assert taken.body["dimse_status"] == "0xC302"
    assert await web.state(uid) == "IN PROGRESS"
    assert "TransactionUID" not in dataset(
        (await web.call("GET", f"/workitems/{uid}", expect=200)).body[0])
    # the claimed step leaves the worklist's default answer, its workitem stays found
    assert await web.uids({STATION: "CT01", "ProcedureStepState": "IN PROGRESS"}) == [uid]

    # complete: not before the performed procedure is set, not with another UID
    early = await web.change(uid, "COMPLETED", mine, expect=409)
    assert early.body["dimse_status"] == "0xC304"
    wrong = await web.call("POST", f"/workitems/{uid}?{generate_uid()}", body(performed()),
                           400)
    assert wrong.body["dimse_status"] == "0xC301"
    await web.call("POST", f"/workitems/{uid}?{mine}", body(performed()), 200)
    with_body = performed()
    with_body.TransactionUID = mine
    with_body.ProcedureStepProgressInformationSequence = [Dataset()]
    with_body.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress = "50"
    await web.call("POST", f"/workitems/{uid}", body(with_body), 200)
    assert (await web.change(uid, "COMPLETED", generate_uid(), expect=400)).body[
        "dimse_status"] == "0xC301"
    await web.change(uid, "COMPLETED", mine)
    again = await web.change(uid, "COMPLETED", mine, expect=200)
    assert "already in the requested state of COMPLETED" in again.warnings[0]
    assert await web.state(uid) == "COMPLETED"
    late = await web.call("POST", f"/workitems/{uid}?{mine}", body(performed()), 400)
    assert late.body["dimse_status"] == "0xC300"

    # cancellation: a SCHEDULED workitem at once (202), again a Warning, a COMPLETED one 409
    reason = Dataset()
    reason.ReasonForCancellation = "patient left"
    await web.call("POST", f"/workitems/{other}/cancelrequest", body(reason), 202)
    assert await web.state(other) == "CANCELED"
    repeat = await web.call("POST", f"/workitems/{other}/cancelrequest", None, 202)
    assert "CANCELED" in repeat.warnings[0]
    done = await web.call("POST", f"/workitems/{uid}/cancelrequest", None, 409)
    assert done.body["dimse_status"] == "0xC311"
    scheduled_again = await web.change(other, "SCHEDULED", mine, expect=400)
    assert scheduled_again.body["dimse_status"] == "0xC303"


async def test_dicomweb_sits_behind_the_admin_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.admin.token = "s3cret-token"
    b = Broker(settings)
    await b.start()
    try:
        assert b.admin is not None
        port = b.admin.bound_port
        anonymous, signed = UpsRs(port), UpsRs(port, "s3cret-token")
        try:
            assert (await anonymous.call("GET", "/workitems")).status == 401
            assert (await anonymous.call("POST", "/workitems", body(workitem()))).status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await anonymous.channel("WEBAI")
            assert refused.value.status == 401
            assert await signed.search() == []
            ws = await signed.channel("WEBAI")
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as cross:
                await signed.session.ws_connect(f"{signed.ws_base}/ws/subscribers/WEBAI",
                                                origin="https://evil.example")
            assert cross.value.status == 403
        finally:
            await anonymous.close()
            await signed.close()
    finally:
        await b.stop()
