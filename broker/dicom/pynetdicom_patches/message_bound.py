"""A bound on the bytes of one DIMSE message: pynetdicom 3.0.4 appends every P-DATA fragment
of a message (command set and data set) to memory until the last one comes, so an association
streaming non-final fragments grew the broker without limit (94 MiB → 1.1 GiB). Fragments are
counted per message as they arrive; past the bound the message read so far is dropped and the
association is aborted (A-ABORT, source 2 service provider, reason 0 — the state machine's
answer to an invalid PDU). It covers every association of the process, with or without
``dicom.fast_path``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pynetdicom.dimse import DIMSEServiceProvider

from broker.logs import event

log = logging.getLogger("broker.dicom")

#: enough for any C-FIND identifier, MPPS N-CREATE/N-SET, IAN or storage commitment request
#: and report (≈ 120 bytes per referenced instance: ≈ 35,000 instances)
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
#: invalid or unrecognised PDU: AA-8 answers it with an A-ABORT (source 2, reason 0)
INVALID_PDU_EVENT = "Evt19"
_stock_receive_primitive = DIMSEServiceProvider.receive_primitive
_default_limit = DEFAULT_MAX_MESSAGE_BYTES


class TooLarge(Protocol):
    """Told (peer, calling AE, bytes, limit) when a message of its server is cut off."""

    def __call__(self, peer: str, calling_ae: str, received: int, limit: int) -> None: ...


def limit_for(assoc: Any) -> int:
    """The bound of an association: its server's ``max_message_bytes``, else the process's."""
    server = getattr(assoc, "_server", None)
    limit = getattr(server, "max_message_bytes", None)
    return int(limit) if limit else _default_limit


def _bounded_receive_primitive(self: Any, primitive: Any) -> None:
    if getattr(self, "_guard_overflowed", False):
        return  # cut off: the abort is on its way; nothing more is kept
    if self.message is None:
        self._guard_bytes = 0  # a new message starts with this primitive
    received = getattr(self, "_guard_bytes", 0) + sum(
        len(data) for _, data in primitive.presentation_data_value_list)
    limit = limit_for(self.assoc)
    if received > limit:
        self._guard_overflowed = True
        self.message = None  # what was read of it can be freed now
        _report(self.assoc, received, limit)
        self.dul.event_queue.put(INVALID_PDU_EVENT)
        return
    self._guard_bytes = received
    _stock_receive_primitive(self, primitive)


def _report(assoc: Any, received: int, limit: int) -> None:
    requestor = assoc.requestor
    remote = requestor if assoc.is_acceptor else assoc.acceptor
    try:
        peer = f"{remote.address}:{remote.port}"
    except ValueError:  # pynetdicom: no address information set
        peer = "?"
    calling = str(requestor.ae_title).strip()
    event(log, "dicom_message_too_large", logging.WARNING, peer=peer, calling_ae=calling,
          bytes=received, limit=limit)
    told: TooLarge | None = getattr(getattr(assoc, "_server", None), "on_message_too_large",
                                    None)
    if told is not None:
        told(peer, calling, received, limit)


def install(default_limit: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    """Install the bound (idempotent); ``default_limit`` covers associations that have no
    server with a ``max_message_bytes`` of its own (those the process opens)."""
    global _default_limit
    if default_limit <= 0:
        raise ValueError(f"a DIMSE message bound must be more than 0 ({default_limit})")
    _default_limit = default_limit
    DIMSEServiceProvider.receive_primitive = (  # type: ignore[method-assign]
        _bounded_receive_primitive)
