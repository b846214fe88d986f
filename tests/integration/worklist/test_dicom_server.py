"""The DICOM AE on its own: calling-AE allow-list and a store that cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys
from broker.dicom.server import DicomServer
from broker.store.sqlite.readers import SqliteWorklistReader as WorklistReader


def server(db: Path, **kwargs: object) -> DicomServer:
    s = DicomServer(lambda: WorklistReader(db), ae_title="MWLBROKER", host="127.0.0.1", port=0,
                    **kwargs)  # type: ignore[arg-type]
    s.start()
    return s


@pytest.fixture
def missing_store(tmp_path: Path) -> Iterator[DicomServer]:
    s = server(tmp_path / "no-such-folder" / "broker.sqlite")
    yield s
    s.stop()


def test_store_failure_gives_c001_with_a_comment(missing_store: DicomServer) -> None:
    with WorklistClient("127.0.0.1", missing_store.bound_port) as client:
        result = client.find(build_query(query_keys(station="CT01")))
    assert result.status == 0xC001
    assert "worklist store unavailable" in result.comment


def test_calling_ae_allow_list(tmp_path: Path) -> None:
    s = server(tmp_path / "broker.sqlite", calling_aes=["CT01"])
    try:
        with WorklistClient("127.0.0.1", s.bound_port, calling="CT01") as allowed:
            assert allowed.echo() == 0
        stranger = WorklistClient("127.0.0.1", s.bound_port, calling="INTRUDER")
        with pytest.raises(QueryFailed):
            stranger.open()
    finally:
        s.stop()
