"""Which process listens on a TCP port (Linux /proc, like ``ss -ltnp``); None when unknown."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from broker.cli.redact import redact_command

LISTEN = "0A"


@dataclass(frozen=True)
class PortOwner:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.command}"


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """Socket inodes of the TCP listeners on ``port`` (any address, IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1],
                                                               16) == port:
                inodes.add(fields[9])
    return inodes


def port_owner(port: int, proc: Path = Path("/proc")) -> PortOwner | None:
    """The process holding a listener on ``port``, if this user may see it."""
    targets = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not targets:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return PortOwner(int(entry.name), _command(entry))
            except OSError:
                continue
    return None


def _command(entry: Path) -> str:
    try:
        raw = (entry / "cmdline").read_bytes()
    except OSError:
        return "?"
    # shown to whoever runs doctor: an ``-o admin.token=…`` of the broker's command line is not
    return redact_command([part.decode(errors="replace") for part in raw.split(b"\0") if part])
