"""Changes to pynetdicom 3.0.4, applied once at start by the application: ``fixes`` (always)
and ``speedups`` (``dicom.fast_path``). :data:`REPLACED` names each pynetdicom function a
patch replaces (or relies on) with the sha256 of the source it was written against;
tests/unit/dicom/test_pynetdicom_patches.py fails when one differs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pynetdicom
import pynetdicom.association as _assoc_mod

from broker.dicom.pynetdicom_patches import (
    encoded,
    fixes,
    message_bound,
    pdu_bound,
    reads,
    speedups,
    wakeups,
    writes,
)
from broker.logs import event

log = logging.getLogger("broker.dicom")
SUPPORTED_VERSION = "3.0.4"

#: pynetdicom function → (its stock code, sha256 of the source the patch was written against)
REPLACED: dict[str, tuple[Callable[..., Any], str]] = {
    "dul.DULServiceProvider.run_reactor": (
        fixes._stock_run_reactor,
        "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"),
    "association.Association._serve_request": (
        fixes._stock_serve_request,
        "2f24c1759cdf6c8c433094f2a8dd8144f76f5547f03daed7b94e0f78bc12f877"),
    "association.Association.release": (
        fixes._stock_release,
        "c7d713502b77d70284320ac20245444b78f49a9d37b6a351d38e18344edaae43"),
    "transport.AssociationSocket.recv": (
        pdu_bound._original_recv,
        "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d"),
    "dimse.DIMSEServiceProvider.receive_primitive": (
        message_bound._stock_receive_primitive,
        "5f99c86b14a15cefa87d914cda3591ec4d636d4c53a982e945ec9c1828c6e43f"),
    "dsutils.encode (as service_class.encode)": (
        encoded._stock_encode,
        "0d29ffd5d358c45a6b20436a9a45ec4ea003631dd4323e827c87365624c71cf0"),
    "fsm.DT_1": (
        speedups._stock_actions["DT-1"][1],
        "82e5c5d4114534fa9ac86124c7c7ef11ff2b98bc73069372cbe413af9df19081"),
    "fsm.AR_7": (
        speedups._stock_actions["AR-7"][1],
        "9a8d68182bf5c9fd0762295535a20ef3b1f04d83f22d47dcd55a063dbf806d40"),
    "dimse.DIMSEServiceProvider.send_msg": (
        encoded._stock_send_msg,
        "a839cf2fb46976d9da29cf06fea41c04416b38d14fab612af12e5d869bd5b3f0"),
    "dimse_messages.DIMSEMessage.message_to_primitive": (
        encoded._stock_to_primitive,
        "f8f43d34e43450efa31bd308677b85b370f8ca7600c0e067e854f8095ce665ac"),
    "dul.DULServiceProvider.__init__": (
        wakeups._stock_dul_init,
        "c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0"),
    "association.Association.__init__": (
        wakeups._stock_assoc_init,
        "eb07516b8009ad8fa338201dea39578380fbf9f2c59fa5e368e20250eb97c4ea"),
    "association.Association.kill": (
        wakeups._stock_kill,
        "8f9713666a7f4cffd840899f023090e9786668945a7c844f99d7a834077c3972"),
    "dimse_messages.DIMSEMessage.decode_msg": (
        encoded._stock_decode_msg,
        "f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284"),
    "dul.DULServiceProvider.send_pdu": (
        writes._stock_send_pdu,
        "7cbce5da8594124e9e70c790a68df640d21df11af4220783e752bc607de8dde6"),
    "dul.DULServiceProvider._send": (
        writes._stock_send,
        "a850a7919e68484ef6751ee7a199b3ba4a911b5cbf0c2928bf796c55539254d4"),
    "transport.AssociationSocket.ready": (
        reads._stock_ready.fget,
        "3eb58e3d39dc076df7a04c804ca183ffd3f4d1b34361039e9e6f11de3d45579c"),
    "transport.AssociationSocket.close": (
        reads._stock_close,
        "c726c8db53813d551475b8b4560634708a64c50bfe818fd2d1df1c06bdeec099"),
    # not replaced, relied on: its loop's poll sleep is what wakeups waits on instead
    "association.Association._run_reactor": (
        _assoc_mod.Association._run_reactor,
        "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"),
}
_fixed = False


def apply(fast_path: bool,
          max_message_bytes: int = message_bound.DEFAULT_MAX_MESSAGE_BYTES) -> bool:
    """Install the fixes and, with ``fast_path``, the speed-ups (without it, remove them);
    idempotent. True when the speed-ups are on; False, with a warning, on a pynetdicom other
    than the one the patches were written against (it then runs unchanged)."""
    global _fixed
    if pynetdicom.__version__ != SUPPORTED_VERSION:
        if not _fixed:
            event(log, "dicom_patches_unavailable", logging.WARNING,
                  found=pynetdicom.__version__, needs=SUPPORTED_VERSION)
            _fixed = True
        return False
    fixes.apply(max_message_bytes)
    was = speedups.installed()
    if fast_path:
        speedups.install()
    else:
        speedups.remove()
    if not _fixed or was != fast_path:
        event(log, "dicom_patches_applied", pynetdicom=pynetdicom.__version__,
              fast_path=fast_path)
    _fixed = True
    return fast_path


def fast_path_on() -> bool:
    """Whether the speed-ups are installed (a handler may then yield pre-encoded datasets)."""
    return speedups.installed()
