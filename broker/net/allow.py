"""Allow-lists: source addresses (IP or CIDR networks) and HL7 senders (MSH-3/MSH-4 + address)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str], setting: str) -> tuple[Network, ...]:
    """Each entry as a network (a bare address is a /32 or /128); ValueError names the entry."""
    networks = []
    for i, value in enumerate(values):
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}[{i}] {value!r} is not an IP address or a CIDR "
                             "network (such as 10.1.2.0/24)") from None
    return tuple(networks)


def host_of(peer: str) -> str:
    """The address part of a 'host:port' peer text ('[::1]:5000' and '::1:5000' too)."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return peer
    return host.strip("[]")


def address_allowed(networks: Sequence[Network], address: str) -> bool:
    """Whether ``address`` is in one of the networks (always, when there are none)."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


class AddressAllowList:
    """Connections from these networks only (everyone when empty)."""

    def __init__(self, values: Iterable[str], setting: str) -> None:
        self.setting = setting
        self.networks = parse_networks(values, setting)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, address: str) -> bool:
        return address_allowed(self.networks, address)


@dataclass(frozen=True, slots=True)
class SenderRule:
    application: str
    facility: str
    networks: tuple[Network, ...]

    def matches(self, application: str, facility: str, address: str) -> bool:
        return ((not self.application or self.application == application)
                and (not self.facility or self.facility == facility)
                and address_allowed(self.networks, address))


class SenderAllowList:
    """HL7 senders allowed to send (everyone when empty): MSH-3, MSH-4 and source address."""

    def __init__(self, rules: Iterable[tuple[str, str, Iterable[str]]], setting: str) -> None:
        self.rules = tuple(
            SenderRule(app.strip(), fac.strip(),
                       parse_networks(addresses, f"{setting}[{i}].addresses"))
            for i, (app, fac, addresses) in enumerate(rules))

    def refusal(self, application: str, facility: str, address: str) -> str:
        """Why this sender may not send ('' when it may)."""
        if not self.rules or any(r.matches(application, facility, address)
                                 for r in self.rules):
            return ""
        known = [r for r in self.rules if (not r.application or r.application == application)
                 and (not r.facility or r.facility == facility)]
        who = (f"sender {application or '(empty)'}/{facility or '(empty)'} "
               "(MSH-3/MSH-4)")
        if known:
            return f"{who} may not send from address {address}"
        return f"{who} is not on the list of allowed senders"
