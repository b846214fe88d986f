"""The pynetdicom patches: each replaced function is still the one its patch was written
against, the fixes stay with the speed-ups off, and apply() switches the speed-ups both ways."""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Iterator

import pynetdicom.association as assoc_mod
import pynetdicom.dimse as dimse_mod
import pynetdicom.dimse_messages as dimse_messages
import pynetdicom.dul as dul_mod
import pynetdicom.transport as transport_mod
import pytest

from broker.dicom import pynetdicom_patches
from broker.dicom.pynetdicom_patches import (
    encoded,
    fixes,
    message_bound,
    pdu_bound,
    reads,
    writes,
)


@pytest.mark.parametrize("name", sorted(pynetdicom_patches.REPLACED))
def test_replaced_pynetdicom_function_is_the_one_patched(name: str) -> None:
    stock, digest = pynetdicom_patches.REPLACED[name]
    source = inspect.getsource(stock)
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"pynetdicom's {name} differs from the code broker/dicom/pynetdicom_patches was "
        "written against: read the patch again, then update its digest in REPLACED")


@pytest.fixture
def restored() -> Iterator[None]:
    yield
    pynetdicom_patches.apply(fast_path=True)


@pytest.mark.usefixtures("restored")
def test_fixes_stay_with_the_speedups_off() -> None:
    assert pynetdicom_patches.apply(fast_path=False) is False
    assert not pynetdicom_patches.fast_path_on()
    assert dul_mod.DULServiceProvider.run_reactor is fixes._run_reactor
    assert assoc_mod.Association._serve_request is fixes._serve_request
    assert assoc_mod.Association.release is fixes._release
    assert transport_mod.AssociationSocket.recv is pdu_bound._bounded_recv
    assert dimse_mod.DIMSEServiceProvider.receive_primitive is (
        message_bound._bounded_receive_primitive)
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._stock_send_msg
    assert dimse_messages.DIMSEMessage.decode_msg is encoded._stock_decode_msg
    assert dul_mod.DULServiceProvider.send_pdu is writes._stock_send_pdu
    assert dul_mod.DULServiceProvider._send is writes._stock_send
    assert vars(transport_mod.AssociationSocket)["ready"] is reads._stock_ready
    assert transport_mod.AssociationSocket.close is reads._stock_close
    assert pdu_bound._read is pdu_bound._stock_read


@pytest.mark.usefixtures("restored")
def test_apply_is_idempotent_and_switches_both_ways() -> None:
    assert pynetdicom_patches.apply(fast_path=True) is True
    assert pynetdicom_patches.apply(fast_path=True) is True
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._send_msg
    assert dimse_messages.DIMSEMessage.decode_msg is encoded._decode_msg
    assert dul_mod.DULServiceProvider.send_pdu is writes._send_pdu
    assert pdu_bound._read is reads.read
    pynetdicom_patches.apply(fast_path=False)
    pynetdicom_patches.apply(fast_path=False)
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._stock_send_msg
    pynetdicom_patches.apply(fast_path=True)
    assert pynetdicom_patches.fast_path_on()


def test_release_of_an_association_whose_reactor_ended_returns() -> None:
    """Stock release spins for ever waiting for a reactor that has ended to pause."""
    from pynetdicom import AE

    assoc = assoc_mod.Association(AE(), "requestor")
    assoc.is_established = True  # as the peer's abort found it, its thread already gone
    done = threading.Event()
    thread = threading.Thread(target=lambda: (assoc.release(), done.set()), daemon=True)
    thread.start()
    assert done.wait(5), "release() still waiting for a reactor that has ended"
    assert assoc._reactor_checkpoint.is_set(), "the reactor's checkpoint is open again"
