"""Per-source-address connection caps: one peer address cannot take every slot of a listener.

Shared by the MLLP listener (asyncio) and the DICOM server (one thread per association), so
it is thread-safe; a slot is taken when a connection is accepted and given back when it ends.
"""

from __future__ import annotations

import threading


class PerAddressLimit:
    """At most ``per_address`` open connections from one source address (0: no cap)."""

    def __init__(self, per_address: int) -> None:
        if per_address < 0:
            raise ValueError(f"a per-address connection cap cannot be negative ({per_address})")
        self.per_address = per_address
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, address: str) -> bool:
        """Take a slot for ``address``; False (nothing taken) when it already holds its cap."""
        with self._lock:
            held = self._open.get(address, 0)
            if self.per_address and held >= self.per_address:
                return False
            self._open[address] = held + 1
            return True

    def release(self, address: str) -> None:
        """Give back a slot taken by :meth:`acquire` (a release without a slot is ignored)."""
        with self._lock:
            held = self._open.get(address, 0)
            if held <= 1:
                self._open.pop(address, None)
            else:
                self._open[address] = held - 1

    def held(self, address: str) -> int:
        """Connections open now from ``address``."""
        with self._lock:
            return self._open.get(address, 0)

    def addresses(self) -> dict[str, int]:
        """A copy of the open connections by address (for the console and tests)."""
        with self._lock:
            return dict(self._open)
