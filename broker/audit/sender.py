"""The audit sender: one thread that empties the spool into the transport, oldest message
first, in batches; while the repository is unreachable it retries the same batch after
backoff_base × 2^attempts seconds (±20 % jitter, at most backoff_max), so order is kept and
nothing is skipped. Stopping lets it send what waits for a grace period; the rest stays in
the spool for the next start."""

from __future__ import annotations

import logging
import random
import threading
import time

from broker.audit.spool import Spool
from broker.audit.transport import MessageTooLarge, Transport, TransportError
from broker.logs import event, exception_site

log = logging.getLogger("broker.audit")
#: messages and bytes sent at once (then the repository's acknowledgement is awaited)
BATCH, BATCH_BYTES = 64, 256 * 1024


class Sender:
    def __init__(self, spool: Spool, transport: Transport, destination: str, *,
                 backoff_base: float = 1.0, backoff_max: float = 60.0) -> None:
        self.spool = spool
        self.transport = transport
        self.destination = destination
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.sent = 0
        self.failures = 0
        self._stopping = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="audit-sender", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Send what waits for at most ``grace`` seconds (not while the repository is
        down), then stop."""
        self._deadline = time.monotonic() + grace
        self._stopping.set()
        self.spool.wake()
        if self._thread is not None:
            self._thread.join(grace + 1.0)
            if self._thread.is_alive():  # blocked on the network: it ends on its timeout
                event(log, "audit_sender_abandoned", logging.WARNING,
                      repository=self.destination, spooled=self.spool.count)
            else:
                self.transport.close()
            self._thread = None

    def backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        return float(delay * random.uniform(0.8, 1.2))

    def _done(self) -> bool:
        return self._stopping.is_set() and (not self.spool.count or self.failures > 0
                                            or time.monotonic() >= self._deadline)

    def _run(self) -> None:
        while not self._done():
            try:
                self._turn()
            except Exception as exc:  # the spool's disk: never let the thread die
                self.failures += 1
                event(log, "audit_sender_failed", logging.ERROR, **exception_site(exc))
                self._stopping.wait(self.backoff(self.failures))

    def _turn(self) -> None:
        batch = self.spool.batch(BATCH, BATCH_BYTES)
        if not batch:
            if not self._stopping.is_set():
                self.spool.wait(1.0)
            return
        numbers = [n for n, _ in batch]
        try:
            self.transport.send([data for _, data in batch])
        except MessageTooLarge as exc:
            self.spool.remove(numbers[: exc.sent + 1])
            self.sent += exc.sent
            event(log, "audit_message_dropped", logging.ERROR, reason=str(exc),
                  transport=self.transport.name, detail="use audit.transport tls or tcp")
            return
        except TransportError as exc:
            self.spool.remove(numbers[: exc.sent])
            self.sent += exc.sent
            self.failures += 1
            delay = self.backoff(self.failures)
            event(log, "audit_repository_down", logging.WARNING, repository=self.destination,
                  transport=self.transport.name, error=str(exc), attempt=self.failures,
                  spooled=self.spool.count, retry_in_s=round(delay, 1))
            self._stopping.wait(delay)
            return
        self.spool.remove(numbers)
        self.sent += len(numbers)
        if self.failures:
            event(log, "audit_repository_up", repository=self.destination,
                  after_attempts=self.failures, spooled=self.spool.count)
            self.failures = 0
