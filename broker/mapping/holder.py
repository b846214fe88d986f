"""The mapping set in force; a reload replaces it only when the new set is valid."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from broker.logs import event
from broker.mapping.schema import MappingLoadError, describe, load_mappings
from broker.mapping.specs import MappingSet

log = logging.getLogger("broker.mapping")

#: what a folder looked like: (file name, inode, size, modification time in ns) per file
Fingerprint = tuple[tuple[str, int, int, int], ...] | None


def fingerprint(directory: Path) -> Fingerprint:
    """The mapping files of the folder (as load_mappings sees them), None when it is missing."""
    if not directory.is_dir():
        return None
    try:
        entries = sorted(directory.glob("*.y*ml"))
    except OSError:
        return None
    seen = []
    for path in entries:
        try:
            st = os.stat(path)
        except OSError:  # removed while looking
            continue
        seen.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(seen)


class MappingHolder:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        #: the folder as it was when last read (a watcher compares against it)
        self.fingerprint = fingerprint(self.directory)
        self._current = load_mappings(self.directory)
        self._lock = threading.Lock()
        self.last_errors: list[str] = []
        #: when the folder was last read again (SIGHUP, file change …), whether that set went
        #: into force, and what asked for it
        self.last_reload_at: float | None = None
        self.last_reload_ok: bool | None = None
        self.last_reload_trigger = ""
        event(log, "mappings_loaded", directory=str(self.directory),
              messages=",".join(describe(self._current)["messages"]))

    def __call__(self) -> MappingSet:
        """The set in force: read it once per message, it may be replaced between messages."""
        return self._current

    def reload(self, trigger: str = "manual") -> bool:
        """Validate the folder again; swap atomically if valid, else keep the running set."""
        with self._lock:
            self.last_reload_at = time.time()
            self.last_reload_trigger = trigger
            self.fingerprint = fingerprint(self.directory)
            try:
                new = load_mappings(self.directory)
            except MappingLoadError as exc:
                self.last_errors = exc.errors
                self.last_reload_ok = False
                for line in exc.errors:
                    event(log, "mapping_rejected", logging.ERROR, trigger=trigger, error=line)
                event(log, "mappings_kept", logging.WARNING, reason="new set is invalid",
                      trigger=trigger, errors=len(exc.errors))
                return False
            self._current = new
            self.last_errors = []
            self.last_reload_ok = True
            event(log, "mappings_reloaded", trigger=trigger, directory=str(self.directory),
                  messages=",".join(describe(new)["messages"]))
            return True
