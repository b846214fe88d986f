"""Admin access settings: loopback detection, token resolution, refusal without a token; and
the metrics' bound on label values taken from the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.admin.auth import resolve_token
from broker.config import AdminSettings, ConfigError, Settings, is_loopback
from broker.config.loading import apply_overrides
from broker.metrics import MAX_LABEL_VALUES, Metrics


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("", False),
    ("10.0.0.5", False), ("::", False), ("broker.example.org", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_from_file_is_its_first_line_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "admin.token"
    secret.write_text("  t0ken-from-file \n")
    token = resolve_token(AdminSettings(host="0.0.0.0", token_file=str(secret)))
    assert token == "t0ken-from-file"


def test_loopback_needs_no_token_and_others_do(tmp_path: Path) -> None:
    assert resolve_token(AdminSettings()) == ""
    assert resolve_token(AdminSettings(host="0.0.0.0", token="abc")) == "abc"
    with pytest.raises(ConfigError, match="not a loopback address"):
        resolve_token(AdminSettings(host="0.0.0.0"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_token(AdminSettings(host="0.0.0.0", token_file=str(empty)))


def test_settings_check_refuses_a_public_console_without_token() -> None:
    with pytest.raises(ConfigError, match=r"admin\.host '0\.0\.0\.0' is not a loopback"):
        apply_overrides(Settings(), ["admin.host=0.0.0.0"])
    assert apply_overrides(Settings(), ["admin.host=0.0.0.0", "admin.enabled=false"])
    assert apply_overrides(Settings(), ["admin.token=x", "admin.host=0.0.0.0"])


def test_message_type_labels_are_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES + 10):
        metrics.message_in(f"ZZ{n}^Z01", "AR", 0.001)
    metrics.message_in("X" * 40, "AR", 0.001)
    labels = {s.labels["type"] for family in metrics.registry.collect()
              if family.name == "mwl_hl7_messages_in" for s in family.samples}
    assert len(labels) == MAX_LABEL_VALUES + 1 and "other" in labels
    assert metrics.registry.get_sample_value("mwl_hl7_messages_in_total",
                                             {"type": "other", "outcome": "AR"}) == 11
