"""``mwl-broker doctor`` on PostgreSQL: the database reachable, its schema, the clocks of
this machine and of each broker alive, the owners of the outbox lanes; an unreachable
database is a FAIL that says what to check."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import cli
from tests.support.broker import BrokerProcess, free_port


def doctor(capsys: pytest.CaptureFixture[str], url: str, *options: str
           ) -> tuple[int, list[tuple[str, str, str]]]:
    args = ["doctor", "-o", f"database.url={url}", "-o", "mllp.host=127.0.0.1",
            "-o", "dicom.host=127.0.0.1", "-o", f"mllp.port={free_port()}",
            "-o", f"dicom.port={free_port()}", "-o", f"admin.port={free_port()}"]
    for option in options:
        args += ["-o", option]
    code = cli.main(args)
    found: list[tuple[str, str, str]] = []
    for line in capsys.readouterr().out.splitlines()[:-1]:
        if line[:1] == " ":  # a message's next line
            status, check, message = found[-1]
            found[-1] = (status, check, message + " " + line.strip())
        else:
            found.append((line[:5].strip(), line[6:18].strip(), line[19:]))
    return code, found


def test_doctor_reports_the_shared_database(tmp_path: Path, postgres_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, found = doctor(capsys, postgres_url)
    assert found[[c for _, c, _ in found].index("schema")][:2] == ("WARN", "schema")
    broker = BrokerProcess(tmp_path, (f"database.url={postgres_url}", "node.id=mwl-a",
                                      "outbound.destinations=[{name: ris, host: 127.0.0.1,"
                                      f" port: {free_port()}, timeout: 1}}]"))
    broker.start()
    try:
        _, found = doctor(capsys, postgres_url)
    finally:
        broker.stop()
    by_check = {}
    for status, check, message in found:
        by_check.setdefault(check, []).append((status, message))
    assert by_check["database"][0][0] == "OK" and "PostgreSQL" in by_check["database"][0][1]
    assert by_check["schema"] == [("OK", by_check["schema"][0][1])]
    assert "current" in by_check["schema"][0][1]
    clocks = [m for _, m in by_check["clock"]]
    assert any(m.startswith("this machine") for m in clocks)
    assert any("broker mwl-a" in m for m in clocks)
    assert by_check["brokers"] == [("OK", "1 alive: mwl-a")]
    assert any("ris owned by mwl-a" in m for _, m in by_check["lanes"])


def test_an_unreachable_database_fails_with_what_to_check(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://mwl@127.0.0.1:{free_port()}/nowhere"
    code, found = doctor(capsys, url, "database.connect_timeout=1")
    assert code != 0
    database = [f for f in found if f[1] == "database"]
    assert database and database[0][0] == "FAIL"
    assert "cannot reach" in database[0][2] and "pg_hba.conf" in database[0][2]
