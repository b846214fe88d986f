"""The pynetdicom patches: each replaced function is still the one its patch was written
against, the fixes stay with the speed-ups off, and apply() switches the speed-ups both ways."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator

import pynetdicom.association as assoc_mod
import pynetdicom.dimse as dimse_mod
import pynetdicom.dul as dul_mod
import pynetdicom.transport as transport_mod
import pytest

from broker.dicom import pynetdicom_patches
from broker.dicom.pynetdicom_patches import encoded, fixes, message_bound, pdu_bound


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
    assert transport_mod.AssociationSocket.recv is pdu_bound._bounded_recv
    assert dimse_mod.DIMSEServiceProvider.receive_primitive is (
        message_bound._bounded_receive_primitive)
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._stock_send_msg


@pytest.mark.usefixtures("restored")
def test_apply_is_idempotent_and_switches_both_ways() -> None:
    assert pynetdicom_patches.apply(fast_path=True) is True
    assert pynetdicom_patches.apply(fast_path=True) is True
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._send_msg
    pynetdicom_patches.apply(fast_path=False)
    pynetdicom_patches.apply(fast_path=False)
    assert dimse_mod.DIMSEServiceProvider.send_msg is encoded._stock_send_msg
    pynetdicom_patches.apply(fast_path=True)
    assert pynetdicom_patches.fast_path_on()
