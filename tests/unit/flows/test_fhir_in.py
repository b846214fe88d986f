"""The FHIR intake path on a real SQLite store: ``%encounter`` and ``%appointment`` resolved
from the same Bundle (urn:uuid) or from held resources, and an Appointment posted later
re-mapping the order it is based on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.fhir.requests import Identifier, Write
from broker.flows.fhir_in import FhirIntake
from broker.store.orders import ProcedureRow, StepRow
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from tests.support.fhir import (
    ORDER_SYSTEM,
    appointment,
    encounter,
    order_bundle,
)
from tests.unit.flows.conftest import SHIPPED

PEER = "127.0.0.1:1"


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "broker.sqlite", synchronous="NORMAL")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def entry(resource: dict[str, Any], url: str, method: str = "POST") -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
            "request": {"method": method, "url": url}}


def bundle_with(*extra: dict[str, Any], placer: str = "FPLC1") -> dict[str, Any]:
    """A transaction Bundle of Patient + ServiceRequest, and ``extra`` entries (an
    Appointment's basedOn "SR" names the Bundle's ServiceRequest, an Encounter is the
    order's)."""
    bundle = order_bundle(placer=placer, accession=placer.replace("PLC", "ACC"))
    sr_entry = bundle["entry"][1]
    for e in extra:
        res = e["resource"]
        if res["resourceType"] == "Encounter":
            sr_entry["resource"]["encounter"] = {"reference": e["fullUrl"]}
        if res["resourceType"] == "Appointment":
            res["basedOn"] = [{"reference": sr_entry["fullUrl"]}]
    bundle["entry"] += list(extra)
    return bundle


def order_of(writer: Writer, placer: str = "FPLC1") -> tuple[ProcedureRow, list[StepRow]]:
    def job(uow: UnitOfWork) -> tuple[ProcedureRow, list[StepRow]]:
        row = uow.orders.procedure_by_order(placer, "")
        assert row is not None
        found = uow.orders.procedure_with_steps(row.study_uid)
        assert found is not None
        return found
    found: tuple[ProcedureRow, list[StepRow]] = asyncio.run(writer.run(job))
    return found


def request_id(writer: Writer, placer: str = "FPLC1") -> str:
    rows = asyncio.run(writer.run(
        lambda uow: uow.fhir.by_identifier("ServiceRequest", ORDER_SYSTEM, placer)))
    assert len(rows) == 1
    return str(rows[0].id)


def test_a_bundle_with_encounter_and_appointment(writer: Writer) -> None:
    intake = FhirIntake(writer, lambda: SHIPPED)
    bundle = bundle_with(entry(encounter(), "Encounter"), entry(appointment("SR"), "Appointment"))
    answer = asyncio.run(intake.bundle(bundle, PEER, "http://x/fhir"))
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 4
    procedure, [step] = order_of(writer)
    assert (procedure.attrs["AdmissionID"], procedure.attrs["CurrentPatientLocation"],
            procedure.attrs["ReferringPhysicianName"]) == ("V100", "Ward 5, bed 2",
                                                           "Ref^Doctor")
    assert (step.attrs["ScheduledProcedureStepStartDate"],
            step.attrs["ScheduledProcedureStepStartTime"]) == ("20270302", "144500")
    assert step.attrs["ScheduledStationAETitle"] == ["CT02"]


def test_a_held_encounter_and_a_later_appointment(writer: Writer) -> None:
    intake = FhirIntake(writer, lambda: SHIPPED)
    visit = asyncio.run(intake.write(Write(encounter(visit="V7", ward="ICU 1")), PEER))
    bundle = order_bundle()
    bundle["entry"][1]["resource"]["encounter"] = {"reference": f"Encounter/{visit.row.id}"}
    asyncio.run(intake.bundle(bundle, PEER, "http://x/fhir"))
    procedure, [step] = order_of(writer)
    assert (procedure.attrs["AdmissionID"], procedure.attrs["CurrentPatientLocation"]) == (
        "V7", "ICU 1")
    assert (step.attrs["ScheduledProcedureStepStartTime"],
            step.attrs["ScheduledStationAETitle"]) == ("093000", ["CT01"])
    # the booking arrives on its own: a conditional update re-maps the order's step
    sr = f"ServiceRequest/{request_id(writer)}"
    booking = appointment(sr, start="2027-03-01T16:20:00Z", station="CT09")
    booking["identifier"] = [{"system": "urn:appt", "value": "A1"}]
    match = Identifier("urn:appt", "A1")
    done = asyncio.run(intake.write(Write(booking, "PUT", match=match), PEER))
    assert done.created and done.events
    _, [step] = order_of(writer)
    assert (step.attrs["ScheduledProcedureStepStartTime"],
            step.attrs["ScheduledStationAETitle"]) == ("162000", ["CT09"])
    # moved to another slot: the step follows
    booking["start"] = "2027-03-01T17:05:00Z"
    asyncio.run(intake.write(Write(booking, "PUT", match=match), PEER))
    assert order_of(writer)[1][0].attrs["ScheduledProcedureStepStartTime"] == "170500"
    # cancelled: the order's own occurrence and performer again
    booking["status"] = "cancelled"
    asyncio.run(intake.write(Write(booking, "PUT", match=match), PEER))
    _, [step] = order_of(writer)
    assert (step.attrs["ScheduledProcedureStepStartTime"],
            step.attrs["ScheduledStationAETitle"]) == ("093000", ["CT01"])


def test_an_appointment_for_no_held_order_changes_nothing(writer: Writer) -> None:
    intake = FhirIntake(writer, lambda: SHIPPED)
    done = asyncio.run(intake.write(Write(appointment("ServiceRequest/unknown")), PEER))
    assert done.created and done.events == []
    visit = asyncio.run(intake.write(Write(encounter()), PEER))
    assert visit.events == []
    assert asyncio.run(writer.run(lambda uow: uow.fhir.count("Appointment"))) == 1
