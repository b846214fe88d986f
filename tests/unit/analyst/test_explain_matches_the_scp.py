"""The explanation and the SCP's answers never disagree: for random worklist queries over a
real store with steps on several stations, dates, modalities and statuses, a step is
explained as returned exactly when the SCP's search returns it, and an excluded step always
has a reason — each of which excludes it on its own."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from broker.analyst.explain import explain, key_groups, returns
from broker.dicom.status import DimseFailure
from broker.dicom.worklist_matching import WorklistMatching
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.model.worklist import WorklistQuery
from broker.store.orders import OrderRepo
from broker.store.sqlite.connection import connect, migrate
from broker.store.sqlite.readers import open_reader, search
from broker.workflow.orders import apply
from tests.support.broker import mappings_with_orc18_station
from tests.support.samples import order

STATIONS = ["CT01", "CT02", "MR1"]
DATES = ["20261201", "20261202", "20261203"]
MODALITIES = ["CT", "MR"]


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[sqlite3.Connection, list[int]]]:
    samples = []
    for n in range(24):
        samples.append(order(n, station=STATIONS[n % 3], start=f"{DATES[n % 3 - (n // 9)]}"
                             f"{8 + n % 10:02d}{(n * 7) % 60:02d}", modality=MODALITIES[n % 2],
                             patient_name=f"PATIENT^NUMBER{n}" if n % 4 else "MÜLLER^JÖRG"))
    samples += [order(3, order_control="CA", order_status="CA", control_id="CA3",
                      station="CT01"),
                order(5, order_control="DC", order_status="CA", control_id="DC5",
                      station="MR1"),
                order(7, order_control="SC", order_status="CM", control_id="SC7",
                      station="CT02")]
    with tempfile.TemporaryDirectory(prefix="explain-") as tmp:
        mappings = load_mappings(mappings_with_orc18_station(Path(tmp)))
        path = Path(tmp) / "broker.sqlite"
        writer = connect(path, synchronous="OFF")
        migrate(writer)
        repo = OrderRepo(writer, 0.0)
        for sample in samples:
            for ev in map_message(parse(sample.text(), "utf_8"), mappings):
                apply(repo, ev)
        writer.commit()
        conn = open_reader(path)
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM steps ORDER BY id")]
        try:
            yield conn, ids
        finally:
            conn.close()
            writer.close()


def test_the_store_has_steps_of_every_kind(store: tuple[sqlite3.Connection, list[int]]
                                           ) -> None:
    conn, ids = store
    assert len(ids) >= 24
    statuses = {r[0] for r in conn.execute("SELECT status FROM steps")}
    assert {"SCHEDULED", "CANCELED"} <= statuses and len(statuses) >= 3
    assert {r[0] for r in conn.execute("SELECT station_aet FROM step_stations")} == set(
        STATIONS)


@st.composite
def identifiers(draw: st.DrawFn) -> Dataset:
    ds = Dataset()
    ds.PatientName = draw(st.sampled_from(["", "PATIENT*", "*NUMBER1*", "müller*", "X*"]))
    ds.PatientID = draw(st.sampled_from(["", "P0000004", "P0000005", "NOBODY"]))
    ds.AccessionNumber = draw(st.sampled_from(["", "A0000002", "A0000003"]))
    item = Dataset()
    item.ScheduledStationAETitle = draw(st.sampled_from(["", "CT01", "CT02", "MR1", "CT*"]))
    item.Modality = draw(st.sampled_from(["", "CT", "MR"]))
    date = draw(st.sampled_from(["", *DATES, "20261201-20261202", "-20261202", "20261203-"]))
    item.ScheduledProcedureStepStartDate = date
    item.ScheduledProcedureStepStartTime = draw(st.sampled_from(["", "0800-1200", "1300-"]))
    status = draw(st.sampled_from(["", "SCHEDULED", "CANCELED", "COMPLETED"]))
    item.ScheduledProcedureStepStatus = status
    ds.ScheduledProcedureStepSequence = [item]
    return ds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifier=identifiers(), show_all=st.booleans())
def test_explain_agrees_with_the_scp(store: tuple[sqlite3.Connection, list[int]],
                                     identifier: Dataset, show_all: bool) -> None:
    conn, ids = store
    matching = WorklistMatching()
    matching.options.show_all_statuses = show_all
    try:
        parsed = matching.parse(identifier, "CT01")
    except DimseFailure:
        return
    query = parsed.query

    def find(q: WorklistQuery) -> Iterator:  # type: ignore[type-arg]
        return search(conn, q)
    answered = {row.step_id for row in find(query)}
    for step_id in ids:
        verdict = explain(find, query, step_id, matching, "CT01")
        assert verdict.returned == (step_id in answered), (step_id, query)
        if verdict.returned:
            assert not verdict.exclusions
            continue
        assert verdict.exclusions, (step_id, query)
        for exclusion in verdict.exclusions:
            if exclusion.keyword == "status":
                assert not returns(find, WorklistQuery(), step_id)
                continue
            group = next(g for g in key_groups(query) if g[0].keyword == exclusion.keyword
                         or (exclusion.keyword == "ScheduledProcedureStepStartDate"
                         and g[0].keyword.startswith("ScheduledProcedureStepStart")))
            assert not returns(find, WorklistQuery(matches=group, include_hidden=True),
                               step_id)
