"""``mwl-broker simulate modality`` as a real command against a real ``mwl-broker serve``:
worklist query, MPPS IN PROGRESS and COMPLETED, and its exit codes."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.broker import BIN, BrokerProcess, mappings_with_orc18_station
from tests.support.db import Db
from tests.support.mllp import msa, send
from tests.support.samples import order

STATION = "CT01"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("simulate")
    mappings = mappings_with_orc18_station(folder)
    proc = BrokerProcess(folder, (f"mappings.directory={mappings}",))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mwl-broker"), "simulate", "modality", *args],
                          capture_output=True, text=True, timeout=60)


def test_simulated_modality_completes_the_scheduled_step(served: BrokerProcess) -> None:
    sample = order(1, station=STATION)
    acks = asyncio.run(send(served.port, sample.encode()))
    assert msa(acks[0])[1] == "AA"
    db = Db(served.db)
    assert [s["_status"] for s in db.steps(sample.study_uid).values()] == ["SCHEDULED"]

    done = simulate("--station", STATION, "--worklist", f"MWLBROKER@127.0.0.1:{served.dicom_port}",
                    "--series", "1", "--images", "2")
    assert done.returncode == 0, done.stderr
    started = re.search(r"mpps: IN PROGRESS (\S+)", done.stdout)
    assert started, done.stdout
    mpps_uid = started.group(1)
    assert f"done: MPPS {mpps_uid} COMPLETED, study {sample.study_uid}" in done.stdout
    assert sample.accession in done.stdout

    assert [s["_status"] for s in db.steps(sample.study_uid).values()] == ["COMPLETED"]
    assert db.query("SELECT sop_instance_uid, status, unscheduled FROM mpps") == [
        (mpps_uid, "COMPLETED", 0)]
    listed = db.query("SELECT COUNT(*), COUNT(DISTINCT series_uid) FROM mpps_instances")
    assert listed == [(2, 1)], "no --store: the images are listed but not sent"


def test_station_without_a_scheduled_step_exits_3(served: BrokerProcess) -> None:
    before = Db(served.db).query("SELECT COUNT(*) FROM mpps")
    done = simulate("--station", "CT99", "--worklist",
                    f"MWLBROKER@127.0.0.1:{served.dicom_port}")
    assert done.returncode == 3
    assert "no scheduled step for station CT99" in done.stderr
    assert done.stdout == ""
    assert Db(served.db).query("SELECT COUNT(*) FROM mpps") == before


@pytest.mark.parametrize("worklist", ["127.0.0.1", "MWLBROKER@127.0.0.1:port", "@:104"])
def test_bad_worklist_address_exits_2(worklist: str) -> None:
    done = simulate("--station", STATION, "--worklist", worklist)
    assert done.returncode == 2
    assert f"{worklist!r} is not HOST:PORT or AE@HOST:PORT" in done.stderr
