"""Brokers sharing one PostgreSQL database poll each upstream worklist once: one of them
holds the upstream's lease and mirrors it, the other skips its polls and answers from the
same mirror; when the poller stops the other takes the upstream over and mirrors on."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from benchmarks.peers import Wlmscpfs
from benchmarks.worklist_data import items, worklist_file
from broker.dicom.client import WorklistClient, build_query, query_keys
from tests.integration.cluster.conftest import Cluster
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not Wlmscpfs.available(), reason="DCMTK wlmscpfs missing")
LANE = "upstream:ris-wl"


def accessions(port: int) -> set[str]:
    today = datetime.date.today().strftime("%Y%m%d")
    with WorklistClient("127.0.0.1", port, called="MWLBROKER", calling="FINDSCU",
                        timeout=10) as client:
        result = client.find(build_query(query_keys(station="CT01", date=today)))
    assert result.status == 0, result
    return {str(ds.AccessionNumber) for ds in result.matches}


async def test_one_broker_polls_and_the_other_takes_over(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    peer = Wlmscpfs(tmp_path / "wlmscpfs")
    peer.items_folder.mkdir(parents=True)
    (peer.items_folder / "lockfile").touch()
    data = list(items(3))
    with peer:
        for n in range(2):
            worklist_file(data[n]).save_as(peer.items_folder / f"item{n}.wl",
                                           enforce_file_format=True)
        upstream = (f"upstream_worklists=[{{name: ris-wl, ae_title: {peer.ae_title}, "
                    f"port: {peer.port}, interval: 0.3, timeout: 5, remove_after: 2, "
                    "query: {days_before: 1, days_after: 1}}]")
        a, b = cluster.start(2, upstream)
        wanted = {f"A{n:08d}" for n in range(2)}
        await until(lambda: accessions(a.dicom_port) == wanted, 30)
        assert accessions(b.dicom_port) == wanted  # one mirror, both answer from it
        await asyncio.sleep(1.5)  # several intervals: the other broker only skips
        owner = cluster.scalar("SELECT owner FROM lanes WHERE destination = %s", LANE)
        poller, other = (a, b) if owner == "a" else (b, a)
        assert "event=upstream_polled_elsewhere" in other.log_text()
        assert "event=upstream_lease_taken" not in other.log_text()
        assert "event=upstream_mirrored" in poller.log_text()

        # the poller stops (its lease is released): the other takes over and mirrors on
        assert poller.stop() == 0
        worklist_file(data[2]).save_as(peer.items_folder / "item2.wl",
                                       enforce_file_format=True)
        await until(lambda: accessions(other.dicom_port) == wanted | {f"A{2:08d}"}, 30)
        assert "event=upstream_lease_taken" in other.log_text()
        assert cluster.scalar("SELECT owner FROM lanes WHERE destination = %s", LANE) == \
            other.folder.name
    assert cluster.error_lines() == {a.folder.name: [], b.folder.name: []}


