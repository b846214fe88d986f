"""What the throwaway servers of the tests (PostgreSQL, HAProxy) share: a free loopback port,
liveness of a process, killing a process tree, and the clean-up of servers left behind by a
test run that was killed before its atexit hooks ran.

Each throwaway server lives in a temporary folder named ``mwl-<kind>-…`` holding an ``owner``
file (the pid and start time of the Python process that made it). A new server of the same
kind first removes the folders whose owner is gone, killing the server still running there.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

OWNER_FILE = "owner"


#: independent of the seeding of ``random`` by tests (hypothesis, pytest plugins)
_RANDOM = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port nothing listens on at the moment on 127.0.0.1, below the kernel's
    ephemeral range: a port the kernel hands out (bind to 0, an outgoing connection) could be
    taken by any client's connection before the caller binds it. Another process may still
    take it first: callers retry on a bind failure."""
    low = _ephemeral_range()[0]
    for _ in range(100):
        port = _RANDOM.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name in parentheses may hold spaces: the fields after it are fixed
    return text[text.rindex(")") + 2:].split()


def is_alive(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie has: the init of this machine reaps
    orphans a second or two after they exit)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and its children, as a crash of the machine would end them: the parent
    is stopped first so that it forks no new child meanwhile. Returns the pids killed."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except (ProcessLookupError, PermissionError):
        return []
    victims = [pid, *children(pid)]
    for victim in reversed(victims):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)
    return victims


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(is_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes still alive after {timeout}s: "
                               f"{[p for p in pids if is_alive(p)]}")
        time.sleep(0.02)


def make_folder(kind: str, base: Path | None = None) -> Path:
    """A fresh ``mwl-<kind>-…`` folder under ``base`` (default: the system's temporary folder)
    with its owner file."""
    folder = Path(tempfile.mkdtemp(prefix=f"mwl-{kind}-", dir=base))
    me = os.getpid()
    (folder / OWNER_FILE).write_text(f"{me} {start_time(me)}\n")
    return folder


def _owner_alive(folder: Path) -> bool:
    try:
        pid_text, started = (folder / OWNER_FILE).read_text().split()
    except (OSError, ValueError):
        # no owner file (yet): a folder being made right now, or not one of ours
        return True
    pid = int(pid_text)
    return is_alive(pid) and start_time(pid) == started


def reap_abandoned(kind: str, server_pids: Callable[[Path], list[int]],
                   base: Path | None = None) -> list[Path]:
    """Remove the ``mwl-<kind>-…`` folders under ``base`` whose owner process is gone, after
    killing the server processes ``server_pids(folder)`` names (each checked to be alive and
    to mention the folder on its command line, so a reused pid is left alone)."""
    removed = []
    for folder in Path(base or tempfile.gettempdir()).glob(f"mwl-{kind}-*"):
        if not folder.is_dir() or _owner_alive(folder):
            continue
        victims: list[int] = []
        for pid in server_pids(folder):
            if is_alive(pid) and str(folder) in command_line(pid):
                victims += kill_tree(pid)
        try:
            wait_gone(victims)
        except TimeoutError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
