"""Speed-ups for pynetdicom 3.0.4 on the worklist's hot path (``dicom.fast_path``).

Measured on this project's 2-core machines (36-match worklist query, kept association):
stock pynetdicom with TCP_NODELAY ≈ 37 ms of server time; with these ≈ 2–3 ms. Logging of
every DIMSE message and identifier is switched off (pynetdicom formats each identifier with
``pretty_dataset()`` even when DEBUG is off: ≈ 0.14 ms a response); the wire speed-ups are in
``encoded``, the event-driven wake-ups in ``wakeups``. ``remove`` puts the stock code back
(the fixes stay).
"""

from __future__ import annotations

import logging
from typing import Any

import pynetdicom.association as _assoc_mod
import pynetdicom.dimse as _dimse
import pynetdicom.dimse_messages as _messages
import pynetdicom.dul as _dul_mod
import pynetdicom.fsm as _fsm
import pynetdicom.service_class as _service_class
from pynetdicom import _config

from broker.dicom.pynetdicom_patches import encoded, fixes, pdu_bound, reads, wakeups, writes

_FSM_ACTIONS = (("DT-1", "Sta6"), ("AR-7", "Sta8"))
_stock_actions = {name: _fsm.ACTIONS[name] for name, _ in _FSM_ACTIONS}
_stock_logging = (_config.LOG_HANDLER_LEVEL, _config.LOG_REQUEST_IDENTIFIERS,
                  _config.LOG_RESPONSE_IDENTIFIERS)
_stock_time: Any = vars(_assoc_mod)["time"]
_installed = False


def installed() -> bool:
    return _installed


def install() -> None:
    """Install the speed-ups (idempotent)."""
    global _installed
    if _installed:
        return
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    setattr(_service_class, "encode", encoded._encode)  # noqa: B010 - not exported
    for name, state in _FSM_ACTIONS:
        description, _, next_state = _stock_actions[name]
        _fsm.ACTIONS[name] = (description, writes.data_transfer_action(state),  # type: ignore[assignment]
                              next_state)
    _dimse.DIMSEServiceProvider.send_msg = encoded._send_msg  # type: ignore[method-assign]
    _messages.DIMSEMessage.message_to_primitive = (  # type: ignore[method-assign]
        encoded._message_to_primitive)
    _messages.DIMSEMessage.decode_msg = encoded._decode_msg  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider.__init__ = wakeups._dul_init  # type: ignore[method-assign]
    writes.install()
    reads.install()
    pdu_bound.use_reader(reads.read)
    fixes.use_idle(wakeups._idle_wait, wakeups._close_wake)
    _assoc_mod.Association.__init__ = wakeups._assoc_init  # type: ignore[method-assign]
    _assoc_mod.Association.kill = wakeups._kill  # type: ignore[method-assign]
    setattr(_assoc_mod, "time", wakeups._TimeShim())  # noqa: B010 - not exported
    _installed = True


def remove() -> None:
    """Put pynetdicom's own code back where the speed-ups replaced it (idempotent)."""
    global _installed
    if not _installed:
        return
    (_config.LOG_HANDLER_LEVEL, _config.LOG_REQUEST_IDENTIFIERS,
     _config.LOG_RESPONSE_IDENTIFIERS) = _stock_logging
    setattr(_service_class, "encode", encoded._stock_encode)  # noqa: B010 - not exported
    _fsm.ACTIONS.update(_stock_actions)
    _dimse.DIMSEServiceProvider.send_msg = encoded._stock_send_msg  # type: ignore[method-assign]
    _messages.DIMSEMessage.message_to_primitive = (  # type: ignore[method-assign]
        encoded._stock_to_primitive)
    _messages.DIMSEMessage.decode_msg = encoded._stock_decode_msg  # type: ignore[method-assign]
    _dul_mod.DULServiceProvider.__init__ = wakeups._stock_dul_init  # type: ignore[method-assign]
    writes.remove()
    reads.remove()
    pdu_bound.use_reader(None)
    fixes.use_stock_idle()
    _assoc_mod.Association.__init__ = wakeups._stock_assoc_init  # type: ignore[method-assign]
    _assoc_mod.Association.kill = wakeups._stock_kill  # type: ignore[method-assign]
    setattr(_assoc_mod, "time", _stock_time)  # noqa: B010 - not exported
    _installed = False
