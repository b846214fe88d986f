"""Allow-list matching: addresses and networks, peers, HL7 sender rules, setting errors."""

from __future__ import annotations

import pytest

from broker.config import ConfigError, Settings
from broker.config.loading import apply_overrides
from broker.net.allow import AddressAllowList, SenderAllowList, host_of


@pytest.mark.parametrize(("address", "allowed"), [
    ("10.1.2.3", True), ("10.1.3.1", False), ("192.168.0.9", True), ("192.168.0.10", False),
    ("::ffff:10.1.2.200", True), ("fd00::1", True), ("fd01::1", False), ("::1", False),
    ("not-an-address", False), ("fe80::1%eth0", False),
])
def test_addresses_and_networks(address: str, allowed: bool) -> None:
    allow = AddressAllowList(["10.1.2.0/24", "192.168.0.9", "fd00::/16"], "x.allowed_addresses")
    assert allow.allows(address) is allowed


def test_an_empty_list_allows_everyone() -> None:
    allow = AddressAllowList([], "x")
    assert not allow and allow.allows("203.0.113.5")


def test_a_bad_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"mllp.allowed_addresses\[1\] '10.0.0.0/33'"):
        AddressAllowList(["127.0.0.1", "10.0.0.0/33"], "mllp.allowed_addresses")


@pytest.mark.parametrize(("peer", "host"), [
    ("127.0.0.1:5000", "127.0.0.1"), ("::1:5000", "::1"), ("[fd00::2]:104", "fd00::2"),
    ("?", "?")])
def test_host_of_peer(peer: str, host: str) -> None:
    assert host_of(peer) == host


def test_sender_rules() -> None:
    senders = SenderAllowList([("RIS", "HOSP", []), ("LAB", "", ["10.0.0.0/8"])],
                              "hl7.allowed_senders")
    assert senders.refusal("RIS", "HOSP", "203.0.113.1") == ""
    assert senders.refusal("LAB", "ANY", "10.9.9.9") == ""
    assert "may not send from address 127.0.0.1" in senders.refusal("LAB", "X", "127.0.0.1")
    assert "not on the list" in senders.refusal("RIS", "OTHER", "10.0.0.1")
    assert "not on the list" in senders.refusal("", "", "10.0.0.1")
    assert SenderAllowList([], "x").refusal("ANYONE", "", "1.2.3.4") == ""


def test_settings_refuse_bad_addresses_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"hl7.allowed_senders\[0\].addresses\[0\] 'ten'"):
        apply_overrides(Settings(), ["hl7.allowed_senders=[{application: RIS, "
                                     "addresses: [ten]}]"])
    with pytest.raises(ConfigError, match=r"dicom.allowed_addresses\[0\]"):
        apply_overrides(Settings(), ["dicom.allowed_addresses=[300.1.1.1]"])
