"""Mirroring one upstream worklist poll (broker.workflow.upstream) on a real SQLite store:
added, changed, unchanged and removed items, and other sources' procedures left alone."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.worklist_data import items
from broker.config import Settings
from broker.hl7.message import parse
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.model.orders import OrderChange
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.orders import apply
from broker.workflow.upstream import PollOutcome, apply_poll, by_study
from tests.support.db import Db
from tests.support.samples import order

DATA = list(items(4))


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "broker.sqlite")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def poll(writer: Writer, orders: list[OrderChange], source: str = "ris",
         remove_after: int = 2) -> PollOutcome:
    fresh = [copy.deepcopy(o) for o in orders]
    return writer.run_sync(lambda uow: apply_poll(uow, source, fresh, remove_after))


def test_added_unchanged_changed_and_removed_after_n_polls(writer: Writer,
                                                           tmp_path: Path) -> None:
    db = Db(tmp_path / "broker.sqlite")
    first = poll(writer, DATA[:3])
    assert (first.added, first.items) == (3, 3)
    again = poll(writer, DATA[:3])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
    changed = copy.deepcopy(DATA[0])
    changed.procedure.attrs.pop("ReferringPhysicianName")
    changed.procedure.steps[0].attrs["ScheduledProcedureStepID"] = "NEW"
    uid = changed.procedure.study_uid
    assert poll(writer, [changed, DATA[1]]).updated == 1
    steps = db.steps(uid)
    assert steps["NEW"]["_status"] == "SCHEDULED"
    assert steps[f"SPS{0:08d}"]["_status"] == "CANCELED"  # XO-like: the step set replaced
    assert "ReferringPhysicianName" not in db.procedure(uid)  # replaced, not merged
    gone = DATA[2].procedure.study_uid
    assert db.steps(gone)[f"SPS{2:08d}"]["_status"] == "SCHEDULED"  # missed once: kept
    outcome = poll(writer, [changed, DATA[1]])
    assert (outcome.removed, outcome.items) == (1, 2)
    assert db.steps(gone)[f"SPS{2:08d}"]["_status"] == "CANCELED"
    assert db.query("SELECT source FROM procedures WHERE study_uid = ?", uid) == [("ris",)]


def test_other_sources_are_never_touched(writer: Writer, tmp_path: Path) -> None:
    mappings = load_mappings(Settings().mappings.directory)
    hl7 = order(0)  # the Study Instance UID of DATA[0]

    def seed(uow: UnitOfWork) -> None:
        for ev in map_message(parse(hl7.text(), "utf_8"), mappings):
            apply(uow.orders, ev)
    writer.run_sync(seed)
    db = Db(tmp_path / "broker.sqlite")
    assert DATA[0].procedure.study_uid == hl7.study_uid
    outcome = poll(writer, DATA[:2])
    assert outcome.skipped == [(hl7.study_uid, "")] and outcome.added == 1
    other = poll(writer, [DATA[1]], source="other-ris")  # held by "ris"
    assert other.skipped == [(DATA[1].procedure.study_uid, "ris")]
    for _ in range(3):  # nothing upstream: only "ris"'s own item goes
        poll(writer, [])
    assert db.steps(hl7.study_uid)["SPS0000000"]["_status"] == "SCHEDULED"
    assert db.procedure(hl7.study_uid)["_accession"] == "A0000000"
    assert db.steps(DATA[1].procedure.study_uid)[f"SPS{1:08d}"]["_status"] == "CANCELED"


def test_answers_of_one_procedure_are_grouped() -> None:
    second = copy.deepcopy(DATA[0])
    second.procedure.steps[0].attrs["ScheduledProcedureStepID"] = "SECOND"
    (grouped,) = by_study([copy.deepcopy(DATA[0]), second])
    assert [s.sps_id for s in grouped.procedure.steps] == [f"SPS{0:08d}", "SECOND"]
