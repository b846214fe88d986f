"""``mwl-broker doctor``: a good installation passes; each broken part gives a FAIL line that
names it (and a running broker's ports are told apart from another program's)."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import cli
from broker.model.orders import PatientKey
from broker.store.sqlite.writer import SqliteWriter as Writer
from broker.store.unit_of_work import UnitOfWork
from tests.support.broker import ROOT, BrokerProcess, free_port


def make_database(path: Path, patients: int = 300) -> None:
    writer = Writer(path, synchronous="NORMAL")
    writer.start()

    def admit(uow: UnitOfWork) -> None:
        repo = uow.orders
        for n in range(patients):
            repo.insert_patient(PatientKey(f"P{n:06d}"), {"PatientName": f"DOE^{n}" * 20})

    try:
        writer.run_sync(admit)
    finally:
        writer.stop()


def doctor(capsys: pytest.CaptureFixture[str], folder: Path, *options: str
           ) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code and {check: (status, message)}."""
    args = ["doctor", "-o", f"database.path={folder / 'broker.sqlite'}",
            "-o", "mllp.host=127.0.0.1", "-o", "dicom.host=127.0.0.1"]
    for option in options:
        args += ["-o", option]
    code = cli.main(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("# ")
    found = {}
    for line in lines[:-1]:
        if line[:1] != " ":
            found[line[6:18].strip()] = (line[:5].strip(), line[19:])
        else:
            found[list(found)[-1]] = (found[list(found)[-1]][0],
                                      found[list(found)[-1]][1] + "\n" + line.strip())
    return code, found


@pytest.fixture
def ports() -> Iterator[list[str]]:
    yield [f"mllp.port={free_port()}", f"dicom.port={free_port()}",
           f"admin.port={free_port()}"]


@pytest.mark.sqlite_only  # the file and its disk (PostgreSQL: test_doctor_postgres.py)
def test_a_good_installation_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    ports: list[str]) -> None:
    make_database(tmp_path / "broker.sqlite")
    code, found = doctor(capsys, tmp_path, *ports, "outbound.destinations="
                         "[{name: ris, host: localhost, port: 2576}]")
    assert code == 0
    statuses = {name: status for name, (status, _) in found.items()}
    assert statuses == {
        "settings": "OK", "mappings": "OK", "database": "OK", "schema": "OK",
        "quick_check": "OK", "integrity": "OK", "wal": "OK", "disk": statuses["disk"],
        "mllp port": "OK", "dicom port": "OK", "admin port": "OK", "exposure": "OK",
        "outbound ris": "OK"}
    assert statuses["disk"] in ("OK", "WARN")
    assert "ORM^O01" in found["mappings"][1]
    assert found["mllp port"][1].endswith(" is free")


@pytest.mark.sqlite_only
def test_a_corrupt_database_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  ports: list[str]) -> None:
    db = tmp_path / "broker.sqlite"
    make_database(db)
    page = 4096
    with open(db, "r+b") as fh:  # scribble over b-tree pages past the schema
        for number in (3, 6, 9):
            fh.seek(number * page + 8)
            fh.write(b"\xa5" * 512)
    code, found = doctor(capsys, tmp_path, *ports)
    assert code == 1
    assert found["integrity"][0] == "FAIL"
    assert "PRAGMA integrity_check on" in found["integrity"][1]
    assert "restore the latest backup" in found["integrity"][1]

    db.write_bytes(b"this is not a database" * 100)
    code, found = doctor(capsys, tmp_path, *ports)
    assert code == 1
    assert found["database"][0] == "FAIL"
    assert "cannot be read: file is not a database" in found["database"][1]


def test_a_bad_mapping_folder_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    ports: list[str]) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    orders = mappings / "orders.yaml"
    orders.write_text(orders.read_text().replace("transform: date", "transform: dat", 1))
    code, found = doctor(capsys, tmp_path, *ports, f"mappings.directory={mappings}")
    assert code == 1
    status, message = found["mappings"]
    assert status == "FAIL"
    assert f"{orders}:" in message and "dat" in message


def test_a_port_taken_by_another_program_fails(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code, found = doctor(capsys, tmp_path, f"mllp.port={port}",
                             f"dicom.port={free_port()}", f"admin.port={port}")
    assert code == 1
    status, message = found["mllp port"]
    assert status == "FAIL"
    assert f"127.0.0.1:{port} is in use by another program (pid " in message
    assert "choose another mllp.port" in message
    assert found["admin port"] == ("FAIL", f"admin.port and mllp.port are both {port}; give "
                                   "each listener its own port")


def test_a_running_broker_is_recognised(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    running = BrokerProcess(tmp_path)
    running.start()
    try:
        time.sleep(0.1)
        code, found = doctor(capsys, tmp_path, f"mllp.port={running.port}",
                             f"dicom.port={running.dicom_port}", "admin.enabled=false")
    finally:
        running.stop()
    assert code == 0
    for name in ("mllp port", "dicom port"):
        status, message = found[name]
        assert status == "WARN"
        assert "is in use by a running broker (pid " in message and "mwl-broker serve" in message
    assert "admin port" not in found


def test_an_unresolvable_destination_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           ports: list[str]) -> None:
    code, found = doctor(capsys, tmp_path, *ports, "outbound.destinations="
                         "[{name: ris, host: ris.nonexistent.invalid, port: 2576}]")
    assert code == 1
    status, message = found["outbound ris"]
    assert status == "FAIL"
    assert "host 'ris.nonexistent.invalid' cannot be resolved" in message
    assert "correct outbound.destinations" in message


def test_a_listener_open_to_every_network_is_flagged(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     ports: list[str]) -> None:
    make_database(tmp_path / "broker.sqlite", patients=1)
    code, found = doctor(capsys, tmp_path, *ports, "mllp.host=0.0.0.0",
                         "dicom.host=0.0.0.0", "dicom.allowed_calling_aes=[MOD1]")
    assert code == 0  # a warning, not a failure: it is the default for a first start
    status, message = found["exposure"]
    assert status == "WARN"
    assert message.startswith("mllp listens on all interfaces (0.0.0.0:")
    assert "mllp.allowed_addresses" in message and "hl7.allowed_senders" in message
    code, found = doctor(capsys, tmp_path, *ports, "mllp.host=0.0.0.0",
                         "mllp.allowed_addresses=[10.1.2.0/24]")
    assert found["exposure"][0] == "OK"


def test_secrets_of_a_running_broker_are_not_shown(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    secret = "SuperSecret-4711"
    running = BrokerProcess(tmp_path, (f"admin.token={secret}",))
    running.start()
    try:
        _, found = doctor(capsys, tmp_path, f"mllp.port={running.port}",
                          f"dicom.port={running.dicom_port}",
                          f"admin.port={running.admin_port}", f"admin.token={secret}")
    finally:
        running.stop()
    shown = "\n".join(message for _, message in found.values())
    assert "is in use by a running broker (pid " in found["mllp port"][1]
    assert "-o admin.token=***" in found["mllp port"][1]
    assert secret not in shown
