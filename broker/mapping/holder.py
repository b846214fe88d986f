"""The mapping set in force; a reload replaces it only when the new set is valid."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from broker.logs import event
from broker.mapping.schema import MappingLoadError, MappingSet, describe, load_mappings

log = logging.getLogger("broker.mapping")


class MappingHolder:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._current = load_mappings(self.directory)
        self._lock = threading.Lock()
        self.last_errors: list[str] = []
        #: when the folder was last read again (SIGHUP), and whether that set went into force
        self.last_reload_at: float | None = None
        self.last_reload_ok: bool | None = None
        event(log, "mappings_loaded", directory=str(self.directory),
              messages=",".join(describe(self._current)["messages"]))

    def __call__(self) -> MappingSet:
        return self._current

    def reload(self) -> bool:
        """Validate the folder again; swap atomically if valid, else keep the running set."""
        with self._lock:
            self.last_reload_at = time.time()
            try:
                new = load_mappings(self.directory)
            except MappingLoadError as exc:
                self.last_errors = exc.errors
                self.last_reload_ok = False
                for line in exc.errors:
                    event(log, "mapping_rejected", logging.ERROR, error=line)
                event(log, "mappings_kept", logging.WARNING, reason="new set is invalid",
                      errors=len(exc.errors))
                return False
            self._current = new
            self.last_errors = []
            self.last_reload_ok = True
            event(log, "mappings_reloaded", directory=str(self.directory),
                  messages=",".join(describe(new)["messages"]))
            return True
