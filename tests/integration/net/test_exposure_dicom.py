"""The DICOM side of the exposure warning (issue #11): on its defaults the DICOM listener is on
all interfaces with no allow-list, and ``serve`` and ``doctor`` must say so, as they do for
MLLP. tests/integration/net/test_exposure.py and test_doctor.py restrict DICOM with
``dicom.allowed_calling_aes`` in both of their cases, so the DICOM warning was never checked
(and the doctor helper there keeps one finding per check name: a second ``exposure`` line
would hide the first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import cli
from broker.config import Settings
from broker.net.exposure import open_listeners
from tests.support.broker import BrokerProcess, free_port

OPEN = ("mllp.host=0.0.0.0", "dicom.host=0.0.0.0")


def test_serve_warns_about_both_listeners_on_their_defaults(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, OPEN)
    broker.start()
    broker.stop()
    warnings = [line for line in broker.log_text().splitlines()
                if "event=listener_open_to_all" in line]
    assert len(warnings) == 2, warnings
    (dicom,) = [line for line in warnings if "listener=dicom" in line]
    assert "level=WARNING" in dicom and "host=0.0.0.0" in dicom
    assert f"port={broker.dicom_port}" in dicom
    assert "dicom.allowed_addresses" in dicom and "dicom.allowed_calling_aes" in dicom


def exposure_lines(capsys: pytest.CaptureFixture[str], folder: Path, *options: str
                   ) -> list[tuple[str, str]]:
    """(status, message) of each ``exposure`` line ``mwl-broker doctor`` prints."""
    args = ["doctor", "-o", f"database.path={folder / 'broker.sqlite'}", "-o", "database.url=",
            "-o", f"mllp.port={free_port()}", "-o", f"dicom.port={free_port()}",
            "-o", f"admin.port={free_port()}"]
    for option in options:
        args += ["-o", option]
    cli.main(args)
    out = capsys.readouterr().out.splitlines()
    return [(line[:5].strip(), line[19:]) for line in out if line[6:18].strip() == "exposure"]


def test_doctor_flags_the_dicom_listener(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    found = exposure_lines(capsys, tmp_path, *OPEN)
    assert [status for status, _ in found] == ["WARN", "WARN"], found
    assert found[0][1].startswith("mllp listens on all interfaces (0.0.0.0:")
    assert found[1][1].startswith("dicom listens on all interfaces (0.0.0.0:")
    assert "dicom.allowed_addresses" in found[1][1]
    restricted = exposure_lines(capsys, tmp_path, *OPEN, "dicom.allowed_addresses=[10.1.2.0/24]")
    assert [m.split()[0] for _, m in restricted] == ["mllp"], restricted


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "*"])
def test_every_spelling_of_all_interfaces_is_open(host: str) -> None:
    settings = Settings()
    settings.dicom.host = host
    assert [o.listener for o in open_listeners(settings)] == ["mllp", "dicom"]
    settings.dicom.host = "192.0.2.10"
    assert [o.listener for o in open_listeners(settings)] == ["mllp"]
