"""``serve`` warns at start about each listener open to every network (all interfaces and no
allow-list), naming the settings that restrict it; a restricted listener is not named."""

from __future__ import annotations

from pathlib import Path

from tests.support.broker import BrokerProcess


def test_serve_warns_about_a_listener_open_to_every_network(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path, ("mllp.host=0.0.0.0", "dicom.host=0.0.0.0",
                                      "dicom.allowed_calling_aes=[MOD1]"))
    broker.start()
    broker.stop()
    warnings = [line for line in broker.log_text().splitlines()
                if "event=listener_open_to_all" in line]
    assert len(warnings) == 1, warnings
    (line,) = warnings
    assert "level=WARNING" in line and "listener=mllp" in line and "host=0.0.0.0" in line
    assert f"port={broker.port}" in line
    assert "mllp.allowed_addresses" in line and "hl7.allowed_senders" in line
