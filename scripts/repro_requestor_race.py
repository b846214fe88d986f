"""Minimal reproduction of the pynetdicom 3.0.4 requestor race, on stock pynetdicom (none of
the broker's patches): several associations send C-ECHO after C-ECHO to a pynetdicom SCP in
the same process; a response the requestor's association reactor takes off the DIMSE queue
before send_c_echo() reads it is logged by pynetdicom as "Received unexpected C-ECHO-RSP" and
lost, and that send_c_echo() returns an empty Dataset after the DIMSE timeout.

    python scripts/repro_requestor_race.py [--seconds 30] [--associations 16]

Stops at the first lost response or after --seconds; prints whether the race happened.
See docs/pynetdicom-requestor-race.md.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import pynetdicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


class Unexpected(logging.Handler):
    """Counts pynetdicom's 'Received unexpected ... service message' warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Received unexpected" in record.getMessage():
            self.count += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--associations", type=int, default=16)
    args = parser.parse_args()
    unexpected = Unexpected()
    logging.getLogger("pynetdicom").addHandler(unexpected)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    scp = AE(ae_title="ECHOSCP")
    scp.add_supported_context(Verification)
    scp.maximum_associations = args.associations + 2
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_C_ECHO, lambda ev: 0x0000)])
    port = server.server_address[1]
    deadline = time.monotonic() + args.seconds
    stop = threading.Event()
    lost = [0]
    echoes = [0]
    lock = threading.Lock()

    def requestor() -> None:
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        ae.dimse_timeout = 2
        assoc = ae.associate("127.0.0.1", port, ae_title="ECHOSCP")
        if not assoc.is_established:
            return
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                status = assoc.send_c_echo()
                with lock:
                    echoes[0] += 1
                    if not status:  # no response: it was taken by the reactor
                        lost[0] += 1
                        stop.set()
        finally:
            if assoc.is_established:
                assoc.release()

    threads = [threading.Thread(target=requestor) for _ in range(args.associations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 10)
    server.shutdown()
    happened = lost[0] > 0 or unexpected.count > 0
    print(f"pynetdicom {pynetdicom.__version__}: {echoes[0]} C-ECHO on {args.associations} "
          f"associations, {lost[0]} without response, {unexpected.count} 'Received unexpected' "
          f"warnings: race {'HAPPENED' if happened else 'not seen'}")
    return 1 if happened else 0


if __name__ == "__main__":
    raise SystemExit(main())
