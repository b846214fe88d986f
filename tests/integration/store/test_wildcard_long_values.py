"""Wildcard matching of the non-PN keys does not backtrack, on either store (issue #11).

PN values go through broker.model.worklist's segment matcher (tests/unit/model/test_worklist.py);
the other wildcard keys are matched by the database: SQLite's GLOB, PostgreSQL's LIKE. Neither
was tried against a long stored value: the benchmark's ``lo_worst`` query runs against
9-character accession numbers. Here a stored Accession Number and Requested Procedure ID of
20,000 characters meet the worst patterns the caps accept (16 wildcards): a backtracking
matcher tries about C(20000, 15) placements of the stars and never ends; SQLite's GLOB and
PostgreSQL's LIKE give a pattern up once its last ``*`` has run through the value."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from broker.config import DatabaseSettings
from broker.dicom.mwl import parse_identifier
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.store.factory import Store, open_store
from broker.workflow.orders import apply
from tests.support.postgres import PostgresCluster
from tests.support.samples import order

ROOT = Path(__file__).resolve().parents[3]
LONG = 20_000
#: far above what a linear matcher needs on a loaded 2-core machine; a backtracking one
#: does not finish in a lifetime
BOUND_SECONDS = 10.0


def fill(store: Store) -> None:
    mappings = load_mappings(ROOT / "mappings")
    store.writer.start()
    samples = [order(1, accession="0" * LONG, requested_procedure_id="0" * LONG),
               order(2, accession="0" * (LONG - 1) + "X", requested_procedure_id="RP2")]
    for sample in samples:
        events = map_message(parse(sample.text(), "utf_8"), mappings)
        store.writer.run_sync(lambda uow, events=events: [apply(uow.orders, e) for e in events])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="wildcards-") as tmp:
        if request.param == "sqlite":
            opened = open_store(DatabaseSettings(path=str(Path(tmp) / "w.sqlite"),
                                                 synchronous="OFF", url=""))
            cluster = None
        else:
            cluster = PostgresCluster()
            cluster.__enter__()
            opened = open_store(DatabaseSettings(url=cluster.create_database("wildcards")), "t")
        try:
            fill(opened)
            yield opened
        finally:
            opened.writer.stop()
            opened.close()
            if cluster is not None:
                cluster.__exit__(None, None, None)


def accessions(store: Store, **keys: str) -> tuple[list[str], float]:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    identifier.ScheduledProcedureStepSequence = [Dataset()]
    query = parse_identifier(identifier).query  # the default caps apply
    reader = store.worklist_reader()
    started = time.perf_counter()
    try:
        found = [r.procedure["AccessionNumber"][-1:] for r in reader.search(query)]
    finally:
        reader.close()
    return sorted(found), time.perf_counter() - started


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: values longer than SH allows
@pytest.mark.parametrize(("keys", "expected"), [
    ({"AccessionNumber": "*0" * 15 + "*X"}, ["X"]),  # the last '0…0X' only
    ({"AccessionNumber": "*0" * 15 + "*Y"}, []),
    ({"AccessionNumber": "*0?" * 7 + "*0Y"}, []),
    ({"AccessionNumber": "0*" * 15 + "1"}, []),
    ({"RequestedProcedureID": "*0" * 15 + "*"}, ["0"]),
    ({"RequestedProcedureID": "*00" * 15 + "*1"}, []),
], ids=["star-x", "star-miss", "star-question", "prefix-stars", "rpid-match", "rpid-miss"])
def test_worst_accepted_patterns_against_long_values(store: Store, keys: dict[str, str],
                                                     expected: list[str]) -> None:
    found, seconds = accessions(store, **keys)
    assert found == expected
    assert seconds < BOUND_SECONDS, f"{keys}: {seconds:.2f} s"
