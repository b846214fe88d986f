"""1,000 random worklist identifiers give identical answers (same items, same order) from a
SQLite store and a PostgreSQL store holding the same orders: wildcards, person names (PN
matching in SQL on SQLite, in Python on PostgreSQL), ranges, UID lists, stations."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from broker.config import DatabaseSettings
from broker.dicom.mwl import parse_identifier
from broker.dicom.status import DimseFailure
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.store.factory import Store, open_store
from broker.workflow.orders import apply
from tests.support.postgres import PostgresCluster
from tests.support.samples import order

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["DOE^JOHN", "DOE^JANE", "DOERING^ANNA", "MÜLLER^Jörg", "O'NEIL^SEAN",
         "50%_OFF^X", "BRACKET[1]^Y", "Yamada^Tarou~山田^太郎~やまだ^たろう", "ROE^RICHARD^M",
         "SMITH", "SMITHERS^W", "WANG^XIAOMING~王^小明", "ÅSTRÖM^Åsa", "DOE*^LITERAL"]
STATIONS = ["CT01", "CT02", "MR_1", "US%1", ""]
MODALITIES = ["CT", "MR", "US"]
DATES = ["202611221000", "202611221430", "202611230800", "202611240000", "202611232359"]


def samples() -> list[object]:
    out = []
    for n in range(60):
        out.append(order(n, patient_name=NAMES[n % len(NAMES)], station=STATIONS[n % 5],
                         modality=MODALITIES[n % 3], start=DATES[n % len(DATES)],
                         charset="UNICODE UTF-8", order_status="SC" if n % 7 else "IP",
                         accession=f"A{n % 20:03d}{'_' if n % 4 == 0 else ''}"))
    return out


def fill(store: Store) -> None:
    mappings = load_mappings(ROOT / "mappings")
    store.writer.start()
    for sample in samples():
        events = map_message(parse(sample.text(), "utf_8"), mappings)  # type: ignore[attr-defined]
        store.writer.run_sync(lambda uow, events=events: [apply(uow.orders, e) for e in events])


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Store, Store]]:
    with tempfile.TemporaryDirectory(prefix="backends-") as tmp, PostgresCluster() as pg:
        sqlite = open_store(DatabaseSettings(path=str(Path(tmp) / "b.sqlite"),
                                             synchronous="OFF", url=""))
        postgres = open_store(DatabaseSettings(url=pg.create_database("agree")), "t")
        fill(sqlite)
        fill(postgres)
        try:
            yield sqlite, postgres
        finally:
            for store in (sqlite, postgres):
                store.writer.stop()
                store.close()


def pattern(stored: list[str]) -> st.SearchStrategy[str]:
    """A stored value as is, cut with a ``*``, with a ``?``, or random text."""
    def variants(value: str) -> st.SearchStrategy[str]:
        cut = st.integers(0, max(0, len(value)))
        return st.one_of(st.just(value), cut.map(lambda i: value[:i] + "*"),
                         cut.map(lambda i: "*" + value[i:]),
                         cut.map(lambda i: value[:i] + "?" + value[i + 1:]),
                         st.just(value.lower()))
    noise = st.text(alphabet=st.sampled_from(list("*?%_[]\\^=DOEJ ")), max_size=8)
    return st.one_of(st.sampled_from(stored).flatmap(variants), noise)


@st.composite
def identifiers(draw: st.DrawFn) -> Dataset:
    ds = Dataset()
    sps = Dataset()
    if draw(st.booleans()):
        ds.PatientName = draw(pattern(NAMES))
    if draw(st.integers(0, 3)) == 0:
        ds.PatientID = draw(pattern([f"P{n:07d}" for n in range(0, 60, 7)]))
    if draw(st.integers(0, 3)) == 0:
        ds.AccessionNumber = draw(pattern(["A001", "A004_", "A012"]))
    if draw(st.integers(0, 4)) == 0:
        ds.StudyInstanceUID = "\\".join(draw(st.lists(st.sampled_from(
            [f"1.2.826.0.1.3680043.8.498.{n + 1}" for n in range(0, 60, 3)]), max_size=4)))
    if draw(st.booleans()):
        sps.ScheduledStationAETitle = draw(pattern([s for s in STATIONS if s]))
    if draw(st.booleans()):
        sps.Modality = draw(st.sampled_from([*MODALITIES, "C*", "?R", ""]))
    if draw(st.booleans()):
        low = draw(st.sampled_from(["", "20261122", "20261123", "20261124"]))
        high = draw(st.sampled_from(["", "20261123", "20261124"]))
        sps.ScheduledProcedureStepStartDate = draw(st.sampled_from([low, f"{low}-{high}"]))
    if draw(st.integers(0, 3)) == 0:
        sps.ScheduledProcedureStepStartTime = draw(st.sampled_from(
            ["0800-1200", "1000", "-0959", "1400-", "2359"]))
    if draw(st.integers(0, 3)) == 0:
        sps.ScheduledProcedureStepStatus = draw(st.sampled_from(
            ["SCHEDULED", "STARTED", "SCHEDULED\\STARTED", "*"]))
    if draw(st.integers(0, 4)) == 0:
        ds.ReferringPhysicianName = draw(pattern(["WELBY^MARCUS", "HOUSE^GREGORY"]))
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def answers(store: Store, identifier: Dataset) -> list[tuple[str, str, str]] | str:
    try:
        parsed = parse_identifier(identifier)
    except DimseFailure as exc:
        return f"{exc.status:04X}"
    reader = store.worklist_reader()
    try:
        return [(r.patient["PatientID"], r.procedure["StudyInstanceUID"],
                 str(r.step.get("ScheduledProcedureStepID"))) for r in reader.search(parsed.query)]
    finally:
        reader.close()


def test_both_stores_hold_every_order(stores: tuple[Store, Store]) -> None:
    everything = Dataset()
    everything.ScheduledProcedureStepSequence = [Dataset()]
    sqlite, postgres = stores
    assert len(answers(sqlite, everything)) == 60
    assert answers(sqlite, everything) == answers(postgres, everything)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(identifier=identifiers())
def test_random_identifiers_get_identical_answers(identifier: Dataset,
                                                  stores: tuple[Store, Store]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about values invalid for their VR
        sqlite, postgres = stores
        assert answers(sqlite, identifier) == answers(postgres, identifier)
