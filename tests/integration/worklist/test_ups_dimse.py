"""UPS over DIMSE on the broker's steps, with stock pynetdicom SCUs and a stock pynetdicom SCP
receiving the event reports: find, claim with the wrong and the right Transaction UID,
update, complete, create, cancel, subscriptions, and the cross-view cases (a claim hides the
MWL step; an MPPS moves the workitem; an HL7 cancel cancels both; the RIS is told)."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    UnifiedProcedureStepEvent,
    UnifiedProcedureStepPull,
    UnifiedProcedureStepPush,
    UnifiedProcedureStepWatch,
)

from broker.app import Broker
from broker.config import DestinationSettings, UpsSubscriberSettings
from tests.support import ups
from tests.support.broker import make_settings, mappings_with_orc18_station, running
from tests.support.mllp import msa, send
from tests.support.mpps import mpps
from tests.support.ris import Ris
from tests.support.samples import order

GLOBAL = "1.2.840.10008.5.1.4.34.5"


def today() -> str:
    return datetime.date.today().strftime("%Y%m%d")


class EventScp:
    """A stock pynetdicom AE receiving UPS event reports (N-EVENT-REPORT)."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, str, dict[str, Any]]] = []
        self.ae = AE(ae_title="WATCHER")
        self.ae.add_supported_context(UnifiedProcedureStepEvent, scu_role=True, scp_role=True)
        self.server: Any = None

    def __enter__(self) -> EventScp:
        def on_report(ev: Any) -> tuple[int, None]:
            info = ev.event_information
            self.reports.append((int(ev.event_type), str(ev.request.AffectedSOPInstanceUID),
                                 {e.keyword: str(e.value) for e in info if e.VR != "SQ"}))
            return 0, None
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        return self

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    def wait_for(self, predicate: Any, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while not predicate(self.reports):
            assert time.monotonic() < deadline, f"reports so far: {self.reports}"
            time.sleep(0.05)

    def states(self, uid: str) -> list[str]:
        return [r[2].get("ProcedureStepState", "") for r in self.reports
                if r[1] == uid and r[0] == 1]


@pytest.fixture
def events() -> Iterator[EventScp]:
    with EventScp() as scp:
        yield scp


@pytest.fixture
async def ris() -> AsyncIterator[Ris]:
    r = await Ris().start()
    yield r
    await r.stop()


@pytest.fixture
async def broker(tmp_path: Path, events: EventScp, ris: Ris) -> AsyncIterator[Broker]:
    settings = make_settings(tmp_path)
    settings.mappings.directory = str(mappings_with_orc18_station(tmp_path))
    settings.dicom.ups.subscribers = [UpsSubscriberSettings("WATCHER", "127.0.0.1",
                                                            events.port, 5.0)]
    settings.outbound.destinations = [DestinationSettings("ris", "127.0.0.1", ris.port, 2.0)]
    settings.outbound.poll = 0.05
    async with running(settings) as b:
        yield b


class Scu:
    """A stock pynetdicom UPS SCU (Push, Pull, Watch) and MWL/MPPS SCU of one association."""

    def __init__(self, port: int, ae_title: str = "CT01") -> None:
        ae = AE(ae_title=ae_title)
        for context in (UnifiedProcedureStepPush, UnifiedProcedureStepPull,
                        UnifiedProcedureStepWatch, ModalityWorklistInformationFind,
                        ModalityPerformedProcedureStep):
            ae.add_requested_context(context)
        ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 15
        self.assoc = ae.associate("127.0.0.1", port, ae_title="MWLBROKER")
        assert self.assoc.is_established

    def close(self) -> None:
        self.assoc.release()

    def find(self, **keys: Any) -> list[Dataset]:
        ds = Dataset()
        ds.SOPInstanceUID = ""
        ds.ProcedureStepState = ""
        ds.PatientName = ""
        ds.PatientID = ""
        ds.ScheduledProcedureStepStartDateTime = ""
        item = Dataset()
        item.AccessionNumber = ""
        ds.ReferencedRequestSequence = [item]
        for keyword, value in keys.items():
            if keyword == "AccessionNumber":
                item.AccessionNumber = value
            else:
                setattr(ds, keyword, value)
        return [identifier for status, identifier in self.assoc.send_c_find(
            ds, UnifiedProcedureStepPull) if status.Status in (0xFF00, 0xFF01)]

    def mwl(self, station: str) -> list[str]:
        ds = Dataset()
        ds.AccessionNumber = ""
        item = Dataset()
        item.ScheduledStationAETitle = station
        ds.ScheduledProcedureStepSequence = [item]
        return [str(i.AccessionNumber) for s, i in self.assoc.send_c_find(
            ds, ModalityWorklistInformationFind) if s.Status in (0xFF00, 0xFF01)]

    def action(self, uid: str, action: int, **info: Any) -> tuple[int, str]:
        ds = Dataset()
        for keyword, value in info.items():
            setattr(ds, keyword, value)
        status, _ = self.assoc.send_n_action(ds, action, UnifiedProcedureStepPush, uid)
        return int(status.Status), str(status.get("ErrorComment", ""))

    def get(self, uid: str) -> tuple[int, Dataset | None]:
        status, ds = self.assoc.send_n_get([], UnifiedProcedureStepPush, uid)
        return int(status.Status), ds

    def set(self, uid: str, ds: Dataset) -> int:
        status, _ = self.assoc.send_n_set(ds, UnifiedProcedureStepPush, uid)
        return int(status.Status)

    def create(self, uid: str, ds: Dataset) -> int:
        status, _ = self.assoc.send_n_create(ds, UnifiedProcedureStepPush, uid)
        return int(status.Status)


async def watched_order(broker: Broker, lock: str = "FALSE") -> str:
    """Order 1 for CT01 today, its workitem found and subscribed to by WATCHER; its UID."""
    assert [msa(a)[1] for a in await send(
        broker.mllp.bound_port, order(1, station="CT01", start=f"{today()}0930").encode()
    )] == ["AA"]

    def find_and_watch() -> str:
        scu = Scu(broker.dicom.bound_port)
        try:
            (item,) = scu.find()
            uid = str(item.SOPInstanceUID)
            assert scu.action(uid, 3, ReceivingAE="WATCHER", DeletionLock=lock)[0] == 0
            return uid
        finally:
            scu.close()
    return await asyncio.to_thread(find_and_watch)


def performed_procedure() -> Dataset:
    return ups.performed_procedure(f"{today()}093000", f"{today()}094500")


def push_dataset(state: str = "SCHEDULED") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ProcedureStepState = state
    ds.PatientName = "PUSHED^PAT"
    ds.PatientID = "PUSH1"
    ds.ProcedureStepLabel = "AI lung nodule check"
    ds.ScheduledProcedureStepPriority = "HIGH"
    ds.ScheduledProcedureStepStartDateTime = f"{today()}140000"
    station = Dataset()
    station.CodeValue = "CT02"
    station.CodingSchemeDesignator = "99MWLBROKER"
    station.CodeMeaning = "CT02"
    ds.ScheduledStationNameCodeSequence = [station]
    request = Dataset()
    request.AccessionNumber = "PUSHACC1"
    request.RequestedProcedureID = "RP-PUSH"
    ds.ReferencedRequestSequence = [request]
    ds.InputReadinessState = "READY"
    return ds


async def test_ups_pull_watch_and_the_worklist_see_one_set_of_steps(
        broker: Broker, events: EventScp, ris: Ris) -> None:
    t = today()
    acks = await send(broker.mllp.bound_port, order(1, station="CT01", start=f"{t}0930").encode(),
                      order(2, station="CT01", start=f"{t}1000").encode(),
                      order(3, station="CT01", start=f"{t}1030").encode())
    assert [msa(a)[1] for a in acks] == ["AA"] * 3

    def dimse() -> None:
        scu = Scu(broker.dicom.bound_port)
        try:
            found = {str(d.ReferencedRequestSequence[0].AccessionNumber): d
                     for d in scu.find()}
            assert sorted(found) == ["A0000001", "A0000002", "A0000003"]
            assert {str(d.ProcedureStepState) for d in found.values()} == {"SCHEDULED"}
            uid = str(found["A0000001"].SOPInstanceUID)
            assert [str(d.SOPInstanceUID) for d in scu.find(SOPInstanceUID=uid)] == [uid]

            # watch: an unknown AE is refused, WATCHER gets the state of every workitem
            assert scu.action(GLOBAL, 3, ReceivingAE="NOBODY", DeletionLock="FALSE")[0] \
                == 0xC308
            assert scu.action(GLOBAL, 3, ReceivingAE="WATCHER", DeletionLock="FALSE")[0] == 0
            events.wait_for(lambda r: len([x for x in r if x[0] == 1]) >= 3)

            # claim: without a Transaction UID refused, with one accepted, then taken
            assert scu.action(uid, 1, ProcedureStepState="IN PROGRESS")[0] == 0xC301
            mine = generate_uid()
            assert scu.action(uid, 1, ProcedureStepState="IN PROGRESS",
                              TransactionUID=mine)[0] == 0
            assert scu.action(uid, 1, ProcedureStepState="IN PROGRESS",
                              TransactionUID=generate_uid())[0] == 0xC302
            assert "A0000001" not in scu.mwl("CT01")  # claimed: off the MWL default answer
            # update and complete: only with the performer's Transaction UID
            changes = performed_procedure()
            changes.TransactionUID = generate_uid()
            assert scu.set(uid, changes) == 0xC301
            assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                              TransactionUID=mine)[0] == 0xC304  # final state not met
            changes.TransactionUID = mine
            assert scu.set(uid, changes) == 0
            # C-FIND answers hold the workitem's own attributes too
            (answer,) = scu.find(SOPInstanceUID=uid,
                                 UnifiedProcedureStepPerformedProcedureSequence=[])
            performed = answer.UnifiedProcedureStepPerformedProcedureSequence[0]
            assert performed.PerformedProcedureStepEndDateTime == f"{t}094500"
            assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                              TransactionUID=generate_uid())[0] == 0xC301
            assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                              TransactionUID=mine)[0] == 0
            assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                              TransactionUID=mine)[0] == 0xB306  # already: a warning
            status, got = scu.get(uid)
            assert status == 0 and got is not None and got.ProcedureStepState == "COMPLETED"
            assert "TransactionUID" not in got
            events.wait_for(lambda r: events.states(uid)[-2:] == ["IN PROGRESS",
                                                                  "COMPLETED"])

            # cancel: a scheduled workitem at once
            other = str(found["A0000002"].SOPInstanceUID)
            assert scu.action(other, 2, ReasonForCancellation="patient left")[0] == 0
            assert scu.get(other)[1].ProcedureStepState == "CANCELED"
            assert scu.action(other, 2, ReasonForCancellation="again")[0] == 0xB304
            events.wait_for(lambda r: "CANCELED" in events.states(other))

            # an MPPS on the third moves its workitem
            third = str(found["A0000003"].SOPInstanceUID)
            ds = mpps(study_uid=order(3).study_uid or "", sps_id="SPS0000003",
                      accession="A0000003")
            status, _ = scu.assoc.send_n_create(ds, ModalityPerformedProcedureStep,
                                                generate_uid())
            assert status.Status == 0
            assert scu.get(third)[1].ProcedureStepState == "IN PROGRESS"
            events.wait_for(lambda r: "IN PROGRESS" in events.states(third))

            # UPS Push: a new workitem, on the worklist of its station
            pushed = generate_uid()
            assert scu.create(pushed, push_dataset("IN PROGRESS")) == 0xC309
            assert scu.create(pushed, push_dataset()) == 0
            assert scu.create(pushed, push_dataset()) == 0x0111
            assert scu.mwl("CT02") == ["PUSHACC1"]
            got = scu.get(pushed)[1]
            assert got is not None and got.ProcedureStepLabel == "AI lung nodule check"
            assert got.ScheduledProcedureStepPriority == "HIGH"
            assert scu.get("1.2.3.4.5.6.7")[0] == 0xC307
        finally:
            scu.close()
    await asyncio.to_thread(dimse)

    # the RIS heard of the claim and the completion as of an MPPS
    async def told() -> list[str]:
        return [m.split("\r")[0].split("|")[8] for m in ris.received]
    deadline = asyncio.get_running_loop().time() + 15
    while len(ris.received) < 3:  # claim, completion, the MPPS of the third
        assert asyncio.get_running_loop().time() < deadline, ris.received
        await asyncio.sleep(0.05)
    statuses = [next(seg.split("|")[5] for seg in m.split("\r") if seg.startswith("ORC"))
                for m in ris.received if "A0000001" in m]
    assert statuses[:2] == ["IP", "CM"]

    # the procedure page shows the workitem: its state, performer and subscribers
    import aiohttp
    assert broker.admin is not None
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{broker.admin.bound_port}/procedures/A0000001") as page:
        text = await page.text()
    assert "Workitems (UPS)" in text and "COMPLETED" in text and "CT01" in text
    assert "Global subscribers: WATCHER" in text


async def test_an_hl7_cancel_cancels_the_workitem_and_tells_its_watchers(
        broker: Broker, events: EventScp) -> None:
    t = today()
    uid = await watched_order(broker, "TRUE")
    cancel = order(1, control_id="CA1", order_control="CA", order_status="CA",
                   station="CT01", start=f"{t}0930")
    assert [msa(a)[1] for a in await send(broker.mllp.bound_port, cancel.encode())] == ["AA"]

    def state() -> str:
        scu = Scu(broker.dicom.bound_port)
        try:
            got = scu.get(uid)[1]
            assert got is not None
            return str(got.ProcedureStepState)
        finally:
            scu.close()
    assert await asyncio.to_thread(state) == "CANCELED"
    await asyncio.to_thread(events.wait_for, lambda r: "CANCELED" in events.states(uid))
    threading.Event().wait(0)


async def test_the_ups_command_finds_claims_and_completes(broker: Broker, ris: Ris) -> None:
    import subprocess
    import sys

    t = today()
    assert [msa(a)[1] for a in await send(
        broker.mllp.bound_port, order(1, station="CT01", start=f"{t}0930").encode())] == ["AA"]
    base = [str(Path(sys.executable).parent / "mwl-broker"), "ups"]
    where = ["-p", str(broker.dicom.bound_port)]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args, *where], capture_output=True, text=True,
                              timeout=60)
    found = await asyncio.to_thread(cli, "find", "--station", "CT01", "--state", "SCHEDULED")
    assert found.returncode == 0, found.stderr
    assert "1 workitem(s): status 0x0000" in found.stdout
    uid = found.stdout.split()[0]
    claimed = await asyncio.to_thread(cli, "claim", uid)
    assert claimed.returncode == 0, claimed.stderr
    transaction = claimed.stdout.split("Transaction UID ")[1].split()[0]
    wrong = await asyncio.to_thread(cli, "complete", uid, "--transaction-uid", "1.2.3")
    assert wrong.returncode == 1 and "0xC301" in wrong.stderr
    done = await asyncio.to_thread(cli, "complete", uid, "--transaction-uid", transaction)
    assert done.returncode == 0, done.stderr
    got = await asyncio.to_thread(cli, "get", uid, "--json")
    assert got.returncode == 0 and '"COMPLETED"' in got.stdout
    refused = await asyncio.to_thread(cli, "subscribe", "global", "--receiving-ae", "NOBODY")
    assert refused.returncode == 1 and "0xC308" in refused.stderr


async def test_subscribers_hear_the_scp_going_down_and_restarting(
        tmp_path: Path, events: EventScp) -> None:
    settings = make_settings(tmp_path)
    settings.dicom.ups.subscribers = [UpsSubscriberSettings("WATCHER", "127.0.0.1",
                                                            events.port, 5.0)]
    settings.outbound.poll = 0.05
    first = Broker(settings)
    await first.start()
    try:
        def subscribe() -> None:
            scu = Scu(first.dicom.bound_port)
            try:
                assert scu.action(GLOBAL, 3, ReceivingAE="WATCHER", DeletionLock="FALSE")[0] \
                    == 0
            finally:
                scu.close()
        await asyncio.to_thread(subscribe)
    finally:
        await first.stop()
    second = Broker(settings)  # the same database: the subscription is kept (warm start)
    await second.start()
    try:
        await asyncio.to_thread(events.wait_for, lambda r: [
            x[2].get("SCPStatus") for x in r if x[0] == 4] == ["GOING DOWN", "RESTARTED"])
        restarted = [x for x in events.reports if x[0] == 4][-1]
        assert restarted[1] == GLOBAL
        assert restarted[2]["SubscriptionListStatus"] == "WARM START"
    finally:
        await second.stop()


async def test_an_hl7_change_of_station_is_an_assigned_report(broker: Broker,
                                                              events: EventScp) -> None:
    t = today()
    uid = await watched_order(broker, "FALSE")
    moved = order(1, control_id="XO1", order_control="XO", station="CT02", start=f"{t}0930")
    assert [msa(a)[1] for a in await send(broker.mllp.bound_port, moved.encode())] == ["AA"]
    await asyncio.to_thread(events.wait_for, lambda r: any(
        x[0] == 5 and x[1] == uid for x in r))
    assert events.states(uid) == ["SCHEDULED"]  # the initial report only: no state change


async def test_subscriptions_without_duplicates_opt_out_and_suspend(
        broker: Broker, events: EventScp) -> None:
    """Found by an independent probe: one report per AE whatever it subscribed by; leaving
    one workitem of a global subscription; suspending keeps what is watched now; a cancel
    request names its requester and is kept in the workitem; N-CREATE without a UID and
    N-GET of one attribute answer properly."""
    t = today()
    acks = await send(broker.mllp.bound_port, *(order(n, station="CT01", start=f"{t}0930")
                                                .encode() for n in (1, 2, 3)))
    assert [msa(a)[1] for a in acks] == ["AA"] * 3

    def dimse() -> None:
        scu = Scu(broker.dicom.bound_port)
        try:
            found = {str(d.ReferencedRequestSequence[0].AccessionNumber): str(d.SOPInstanceUID)
                     for d in scu.find()}
            one, two, three = found["A0000001"], found["A0000002"], found["A0000003"]
            assert scu.action(GLOBAL, 3, ReceivingAE="WATCHER", DeletionLock="FALSE")[0] == 0
            assert scu.action(one, 3, ReceivingAE="WATCHER", DeletionLock="FALSE")[0] == 0
            events.wait_for(lambda r: len(r) >= 4)
            events.reports.clear()
            progress = Dataset()
            step = Dataset()
            step.ProcedureStepProgress = "10"
            progress.ProcedureStepProgressInformationSequence = [step]
            assert scu.set(one, progress) == 0
            events.wait_for(lambda r: any(x[0] == 3 and x[1] == one for x in r))
            # leave workitem two out of the global subscription
            assert scu.action(two, 4, ReceivingAE="WATCHER")[0] == 0
            assert scu.set(two, progress) == 0
            # suspend the global subscription: three stays watched, new ones are not
            assert scu.action(GLOBAL, 5, ReceivingAE="WATCHER")[0] == 0
            assert scu.set(three, progress) == 0
            events.wait_for(lambda r: any(x[0] == 3 and x[1] == three for x in r))
            assert [x[1] for x in events.reports if x[0] == 3].count(one) == 1  # not twice
            assert two not in [x[1] for x in events.reports]
            # a cancellation request must reach the performer: CT01 claimed two and does
            # not subscribe to it (nor does anyone now): C312
            assert scu.action(two, 1, ProcedureStepState="IN PROGRESS",
                              TransactionUID=generate_uid())[0] == 0
            assert scu.action(two, 2, ReasonForCancellation="patient unwell")[0] == 0xC312
            # WATCHER performs three, to which it subscribes: told of the request
            mine = generate_uid()
            performer = Scu(broker.dicom.bound_port, "WATCHER")
            try:
                assert performer.action(three, 1, ProcedureStepState="IN PROGRESS",
                                        TransactionUID=mine)[0] == 0
            finally:
                performer.close()
            assert scu.action(three, 2, ReasonForCancellation="patient unwell",
                              ContactDisplayName="Ward 3")[0] == 0
            events.wait_for(lambda r: any(x[0] == 2 and x[1] == three for x in r))
            (requested,) = [x for x in events.reports if x[0] == 2]
            assert requested[2]["RequestingAE"] == "CT01"
            assert scu.action(three, 1, ProcedureStepState="CANCELED", TransactionUID=mine)[0] \
                == 0
            got = scu.get(three)[1]
            assert got is not None
            kept = got.ProcedureStepProgressInformationSequence[0]
            assert kept.ReasonForCancellation == "patient unwell"
            assert kept.ProcedureStepCommunicationsURISequence[0].ContactDisplayName == \
                "Ward 3"
            # N-CREATE without a SOP Instance UID: the broker's UID comes back
            status, created = scu.assoc.send_n_create(push_dataset(),
                                                      UnifiedProcedureStepPush, None)
            assert status.Status == 0 and created is not None and created.SOPInstanceUID
            status, ds = scu.assoc.send_n_get([0x00741000], UnifiedProcedureStepPush,
                                              str(created.SOPInstanceUID))
            assert status.Status == 0 and ds.ProcedureStepState == "SCHEDULED"
            assert "PatientName" not in ds
        finally:
            scu.close()
    await asyncio.to_thread(dimse)


async def test_an_n_set_of_the_scheduling_moves_the_step_on_the_worklist(
        broker: Broker) -> None:
    t = today()
    assert [msa(a)[1] for a in await send(
        broker.mllp.bound_port, order(1, station="CT01", start=f"{t}0930").encode())] == ["AA"]

    def dimse() -> None:
        scu = Scu(broker.dicom.bound_port)
        try:
            (item,) = scu.find()
            uid = str(item.SOPInstanceUID)
            change = Dataset()
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator = "MR09", "99MWLBROKER"
            code.CodeMeaning = "MR09"
            change.ScheduledStationNameCodeSequence = [code]
            change.ScheduledProcedureStepStartDateTime = f"{t}1400"
            assert scu.set(uid, change) == 0
            assert scu.mwl("MR09") == ["A0000001"] and scu.mwl("CT01") == []
            station = Dataset()
            station.CodeValue = "MR09"
            assert [str(d.SOPInstanceUID) for d in scu.find(
                ScheduledStationNameCodeSequence=[station])] == [uid]
            rename = Dataset()
            rename.PatientName = "SOMEONE^ELSE"
            assert scu.set(uid, rename) == 0x0106  # the RIS's data
        finally:
            scu.close()
    await asyncio.to_thread(dimse)


async def test_query_and_subscription_inputs_are_read_strictly(broker: Broker) -> None:
    t = today()
    assert [msa(a)[1] for a in await send(
        broker.mllp.bound_port, order(1, station="CT01", start=f"{t}0930").encode())] == ["AA"]
    filtered = "1.2.840.10008.5.1.4.34.5.1"

    def dimse() -> None:
        scu = Scu(broker.dicom.bound_port)
        try:
            assert len(scu.find(ProcedureStepState="SCHED*")) == 1  # CS wildcards
            assert len(scu.find(ProcedureStepState="*")) == 1
            assert scu.find(ProcedureStepState="COMP*") == []
            ds = Dataset()
            ds.ProcedureStepState = ""
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator = "CT01", "SOMEOTHER"
            ds.ScheduledStationNameCodeSequence = [code]
            statuses = [s.Status for s, _ in scu.assoc.send_c_find(ds, UnifiedProcedureStepPull)]
            assert statuses[0] == 0xFF01  # the scheme is not matched: said so
            # a filter the broker cannot apply is refused, never widened to everything
            assert scu.action(filtered, 3, ReceivingAE="WATCHER", DeletionLock="FALSE",
                              WorklistLabel="CT*")[0] == 0x0106
            assert scu.action(GLOBAL, 3, ReceivingAE="WATCHER", DeletionLock="MAYBE")[0] \
                == 0x0106
        finally:
            scu.close()
    await asyncio.to_thread(dimse)


async def test_n_create_requires_type_1_and_says_what_it_stored_otherwise(
        broker: Broker) -> None:
    """PS3.4 Table CC.2.5-3: Type 1 missing 0120, empty 0121, not enumerated 0106; a
    request the broker stores as given answers 0000; one it changes or leaves parts of
    out answers B300 and names them; a COMPLETED needs the performed procedure's station,
    workitem code and output."""
    def dimse() -> None:
        scu = Scu(broker.dicom.bound_port)
        try:
            def create(ds: Dataset) -> tuple[int, str, Dataset | None]:
                status, answer = scu.assoc.send_n_create(ds, UnifiedProcedureStepPush,
                                                         generate_uid())
                return int(status.Status), str(status.get("ErrorComment", "")), answer

            for keyword in ("ScheduledProcedureStepPriority", "ProcedureStepLabel",
                            "ScheduledProcedureStepStartDateTime", "InputReadinessState"):
                ds = push_dataset()
                delattr(ds, keyword)
                code, comment, _ = create(ds)
                assert (code, comment.split()[0]) == (0x0120, keyword)
                ds = push_dataset()
                setattr(ds, keyword, "")
                assert create(ds)[0] == 0x0121
            ds = push_dataset()
            ds.ScheduledProcedureStepPriority = "URGENT"
            assert create(ds)[0] == 0x0106

            # stored as given, the station's scheme and meaning and the readiness included
            ds = push_dataset()
            ds.InputReadinessState = "UNAVAILABLE"
            ds.ScheduledStationNameCodeSequence[0].CodingSchemeDesignator = "L"
            ds.ScheduledStationNameCodeSequence[0].CodeMeaning = "CT scanner 2"
            ds.ReferencedRequestSequence[0].StudyInstanceUID = generate_uid()
            code, comment, answer = create(ds)
            assert (code, comment) == (0, "")
            assert answer is not None and answer.InputReadinessState == "UNAVAILABLE"
            station = answer.ScheduledStationNameCodeSequence[0]
            assert (station.CodingSchemeDesignator, station.CodeMeaning) == (
                "L", "CT scanner 2")
            assert scu.mwl("CT02") != []  # the step is on CT02's worklist

            # a Transaction UID and a performed procedure are left out; a start time with
            # fractions is stored to the second: B300 naming them
            ds = push_dataset()
            ds.PatientID = "PUSH2"
            ds.TransactionUID = generate_uid()
            ds.ScheduledProcedureStepStartDateTime = f"{today()}140000.123456"
            ds.UnifiedProcedureStepPerformedProcedureSequence = [ups.performed_item(
                f"{today()}093000", f"{today()}094500")]
            code, comment, answer = create(ds)
            assert code == 0xB300
            assert comment.startswith("modified ScheduledProcedureStepStartDateTime")
            assert "; left out Transacti" in comment  # 64 characters: the rest is logged
            assert answer is not None
            assert answer.ScheduledProcedureStepStartDateTime == f"{today()}140000"
            uid = str(answer.SOPInstanceUID)
            assert scu.get(uid)[1].get("UnifiedProcedureStepPerformedProcedureSequence") \
                in (None, [])

            # COMPLETED: the performed procedure's station, workitem code and output first
            mine = generate_uid()
            assert scu.action(uid, 1, ProcedureStepState="IN PROGRESS",
                              TransactionUID=mine)[0] == 0
            times = Dataset()
            item = Dataset()
            item.PerformedProcedureStepStartDateTime = f"{today()}093000"
            item.PerformedProcedureStepEndDateTime = f"{today()}094500"
            times.UnifiedProcedureStepPerformedProcedureSequence = [item]
            times.TransactionUID = mine
            assert scu.set(uid, times) == 0
            code, comment = scu.action(uid, 1, ProcedureStepState="COMPLETED",
                                       TransactionUID=mine)
            assert code == 0xC304 and "PerformedStationNameCodeSequence" in comment
            whole = performed_procedure()
            whole.TransactionUID = mine
            assert scu.set(uid, whole) == 0
            assert scu.action(uid, 1, ProcedureStepState="COMPLETED",
                              TransactionUID=mine)[0] == 0
        finally:
            scu.close()
    await asyncio.to_thread(dimse)
