"""The DICOM listener's acceptor: TCP_NODELAY, the address allow-list, TLS handshakes off the
accepting thread, and the per-address connection caps and negotiation deadline."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from broker.dicom.admission import Admission, cut, refuse_busy
from broker.dicom.pynetdicom_patches import message_bound
from broker.net.allow import AddressAllowList
from broker.net.tls import handshake_reason

#: (reason, peer, detail) of a connection refused before any association
Refused = Callable[[str, str, str], None]
_Request = socket.socket | tuple[bytes, socket.socket]


class NoDelayServer(ThreadedAssociationServer):
    """Accepts associations with TCP_NODELAY set, so a response's PDUs are not held back.

    Connections from addresses not on ``allowed_addresses`` are closed at once. With TLS the
    handshake runs in the connection's own thread, bounded by ``handshake_timeout``, so a slow
    or failing client never holds the acceptor up; a failure is reported to ``on_refused``.
    ``admission`` caps the connections of one address (checked at accept, slot given back when
    the association thread ends) and cuts those without a whole A-ASSOCIATE-RQ by their
    deadline (checked by the acceptor between accepts, every poll interval).
    """

    handshake_timeout: float = 10.0
    #: listen backlog (socketserver's default is 5: 64 modalities connecting at once saw
    #: SYNs dropped and connections delayed by TCP retransmission for tens of seconds)
    request_queue_size = 128
    allowed_addresses: AddressAllowList | None = None
    on_refused: Refused | None = None
    admission: Admission | None = None
    #: read by broker.dicom.pynetdicom_patches.message_bound for the associations of this server
    max_message_bytes: int = message_bound.DEFAULT_MAX_MESSAGE_BYTES
    on_message_too_large: message_bound.TooLarge | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: _Request, client_address: Any) -> bool:
        allowed = self.allowed_addresses
        if allowed is not None and not allowed.allows(str(client_address[0])):
            self._refused("address_not_allowed", client_address,
                          f"address not in {allowed.setting}")
            return False
        admission = self.admission
        if admission is None or admission.admit(request, client_address) is not None:
            return True
        refuse_busy(request)
        self._refused("per_address_cap", client_address,
                      f"{admission.held(str(client_address[0]))} connections open from this "
                      f"address (dicom.max_associations_per_address "
                      f"{admission.limit.per_address}); A-ASSOCIATE-RJ local-limit-exceeded")
        return False

    def process_request(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread for it: its slot is given back here
            self._release(request)
            raise

    def process_request_thread(self, request: _Request,
                               client_address: tuple[str, int] | str) -> None:
        if isinstance(request, ssl.SSLSocket):
            blocking = request.gettimeout()
            try:
                request.settimeout(self.handshake_timeout)
                request.do_handshake()
                request.settimeout(blocking)
            except (OSError, ValueError) as exc:
                conn = self.admission.connection(request) if self.admission else None
                if conn is None or not conn.cut:  # a cut one was reported already
                    self._refused("tls_handshake", client_address, handshake_reason(exc))
                self._release(request)
                self.shutdown_request(request)
                return
        try:
            super().process_request_thread(request, client_address)
        finally:
            conn = self.admission.connection(request) if self.admission else None
            if conn is not None and (conn.assoc is None or conn.assoc.ident is None):
                self._release(request)  # no association thread took the slot over

    def attach(self, request: _Request, assoc: Any) -> None:
        """Hand the slot of ``request`` to its association: given back when its thread ends."""
        admission = self.admission
        conn = admission.connection(request) if admission is not None else None
        if admission is None or conn is None:
            return
        conn.assoc = assoc
        run = assoc.run

        def run_then_release() -> None:
            try:
                run()
            finally:
                admission.release(conn)

        assoc.run = run_then_release

    def service_actions(self) -> None:
        super().service_actions()
        admission = self.admission
        if admission is None:
            return
        for conn in admission.overdue():
            self._refused("negotiation_timeout", conn.peer,
                          f"no whole A-ASSOCIATE-RQ within {admission.negotiation_timeout:g} s "
                          "of connecting (dicom.negotiation_timeout)")
            cut(conn.request)

    def _release(self, request: _Request) -> None:
        conn = self.admission.connection(request) if self.admission else None
        if self.admission is not None and conn is not None:
            self.admission.release(conn)

    def _refused(self, reason: str, address: Any, detail: str) -> None:
        if self.on_refused is not None:
            peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            self.on_refused(reason, peer, detail)


class AdmittedRequestHandler(RequestHandler):
    """pynetdicom's handler, handing the connection's slot to the association it creates."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        if isinstance(self.server, NoDelayServer):
            self.server.attach(self.request, assoc)
        return assoc
