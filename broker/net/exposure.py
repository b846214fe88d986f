"""Listeners open to every network: on all interfaces with no allow-list (the default, so that
a first start works), named with how to restrict them, for ``serve``'s start and ``doctor``."""

from __future__ import annotations

from dataclasses import dataclass

from broker.config import Settings

ALL_INTERFACES = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


@dataclass(frozen=True)
class OpenListener:
    listener: str
    host: str
    port: int
    restrict: str

    def describe(self) -> str:
        return (f"{self.listener} listens on all interfaces ({self.host or '*'}:{self.port}) "
                f"and accepts any peer; restrict it with {self.restrict}")


def open_listeners(settings: Settings) -> list[OpenListener]:
    """The MLLP and DICOM listeners that listen on all interfaces with no allow-list."""
    out = []
    m, d = settings.mllp, settings.dicom
    if m.host.strip() in ALL_INTERFACES and not m.allowed_addresses and not (
            settings.hl7.allowed_senders):
        out.append(OpenListener("mllp", m.host, m.port, "mllp.host (one interface, e.g. "
                                "the RIS network's address), mllp.allowed_addresses (the "
                                "RIS's IP or network) or hl7.allowed_senders"))
    if d.host.strip() in ALL_INTERFACES and not d.allowed_addresses and not (
            d.allowed_calling_aes):
        out.append(OpenListener("dicom", d.host, d.port, "dicom.host (one interface), "
                                "dicom.allowed_addresses (the modalities' IPs or networks) "
                                "or dicom.allowed_calling_aes"))
    return out
