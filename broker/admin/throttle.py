"""Failed credentials counted per source address: past ``max_failures`` within ``window``
seconds the address is refused until its oldest counted failure leaves the window."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: addresses tracked at most; the one tracked longest is forgotten to make room
MAX_ADDRESSES = 10000


class FailureLimit:
    def __init__(self, max_failures: int, window: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` may try again (0: it may try now)."""
        times = self._recent(address, self.clock())
        if times is None or len(times) < self.max_failures:
            return 0
        return max(1, math.ceil(times[0] + self.window - self.clock()))

    def failed(self, address: str) -> bool:
        """Count a failure; True when ``address`` must now wait."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None:
            while len(self._failures) >= self.max_addresses:
                self._failures.pop(next(iter(self._failures)))
            times = self._failures[address] = deque(maxlen=self.max_failures)
        times.append(now)
        return len(times) == self.max_failures

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times
