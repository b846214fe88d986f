"""Several real ``mwl-broker serve`` processes on one PostgreSQL database (issue 13).

``cluster`` gives a test its own database on the session's PostgreSQL (``postgres_url``);
``cluster.start(n, *options)`` starts ``n`` brokers on it at once (nodes ``a``, ``b``, ``c``),
and the fixture stops every broker it started after the test, whatever happened.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.broker import BrokerProcess
from tests.support.postgres import PostgresCluster

NODES = ("a", "b", "c")
#: a line a broker logs when something went wrong on its side
_ERROR_LINE = re.compile(r"level=(ERROR|CRITICAL)|Traceback")
_RECEIVED = re.compile(r"event=hl7_received control_id=(\S+) .*?outcome=(\S+) "
                       r"duplicate=(True|False)")


@dataclass
class Cluster:
    """Brokers sharing the database at ``url``; ``pg`` is the server it lives on."""

    url: str
    folder: Path
    pg: PostgresCluster
    brokers: list[BrokerProcess] = field(default_factory=list)
    _pg_log_offset: int = 0

    def start(self, count: int = 2, *options: str) -> list[BrokerProcess]:
        """Start ``count`` brokers at once (each migrates; one of them does the work)."""
        started = []
        for node in NODES[len(self.brokers):len(self.brokers) + count]:
            folder = self.folder / node
            folder.mkdir()
            started.append(BrokerProcess(folder, ("database.url=" + self.url,
                                                  "node.id=" + node, *options)))
        self.brokers += started
        failures: list[BaseException] = []

        def start(broker: BrokerProcess) -> None:
            try:
                broker.start()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=start, args=(b,)) for b in started]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if failures:
            raise failures[0]
        return started

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return [tuple(row) for row in conn.execute(sql.encode(), params or None)]

    def scalar(self, sql: str, *params: Any) -> Any:
        return self.query(sql, *params)[0][0]

    def error_lines(self) -> dict[str, list[str]]:
        """Each broker's ERROR lines and tracebacks so far (node → lines)."""
        return {b.folder.name: [line for line in b.log_text().splitlines()
                                if _ERROR_LINE.search(line)] for b in self.brokers}

    def assert_no_errors(self, ignore: str = "") -> None:
        """No broker logged an ERROR line or a traceback (but those containing ``ignore``)."""
        found = {node: kept[:5] for node, lines in self.error_lines().items()
                 if (kept := [line for line in lines if not ignore or ignore not in line])}
        assert not found, f"brokers logged errors: {found}"

    def received(self, broker: BrokerProcess) -> list[tuple[str, str, bool]]:
        """(control ID, ACK code, duplicate) of each HL7 message the broker answered, from
        its log (which outlives a SIGKILL)."""
        return [(m[1], m[2], m[3] == "True")
                for m in _RECEIVED.finditer(broker.log_text())]

    def pg_log(self) -> str:
        """What PostgreSQL logged since this cluster was made (the server is shared by the
        session's tests: only this test's part)."""
        try:
            with open(self.pg.log_path, "rb") as log:
                log.seek(self._pg_log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def deadlocks(self) -> int:
        """Deadlocks PostgreSQL detected (and aborted a transaction for) during this test."""
        return self.pg_log().count("deadlock detected")


@pytest.fixture
def cluster(postgres_cluster: PostgresCluster, postgres_url: str, tmp_path: Path
            ) -> Iterator[Cluster]:
    """Brokers on this test's database (``start()``), stopped after the test."""
    offset = postgres_cluster.log_path.stat().st_size if postgres_cluster.log_path.exists() \
        else 0
    found = Cluster(postgres_url, tmp_path, postgres_cluster, _pg_log_offset=offset)
    try:
        yield found
    finally:
        with contextlib.suppress(Exception):
            found.stop()
        for broker in found.brokers:  # whatever stop() left (it kills after its timeout)
            broker.kill()
