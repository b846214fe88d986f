"""``mwl-broker doctor``: checks of an installation, one line each (OK, WARN or FAIL) with what
to do about it. Nothing is changed: the database is opened read-only and ports are only bound
for a moment (and a DICOM listener is sent a C-ECHO)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from broker.cli.doctor_findings import FAIL, OK, WARN, Finding
from broker.cli.doctor_postgres import check_postgres
from broker.cli.port_owner import port_owner
from broker.config import ConfigError, Settings
from broker.config.checks import check
from broker.net.exposure import open_listeners
from broker.store.schema import MIGRATIONS
from broker.store.sqlite.connection import SYNCHRONOUS
from broker.store.sqlite.health import UnreadableDatabase, inspect

MIB = 1 << 20
DISK_FAIL_BYTES = 100 * MIB
DISK_WARN_BYTES = 1024 * MIB
PROBE_TIMEOUT = 3.0


def diagnose(load: Callable[[], Settings]) -> Iterator[Finding]:
    """Every check, in order; stops after the settings when they cannot be loaded."""
    try:
        settings = load()
        check(settings)
        if settings.database.synchronous.upper() not in SYNCHRONOUS:
            raise ConfigError(f"database.synchronous {settings.database.synchronous!r} must be "
                              f"one of {', '.join(SYNCHRONOUS)}")
    except (ConfigError, OSError) as exc:
        yield Finding(FAIL, "settings", f"{exc}")
        return
    yield Finding(OK, "settings", "loaded and valid")
    yield check_mappings(settings.mappings.directory)
    if settings.database.url:
        yield from check_postgres(settings.database.url, settings.database.connect_timeout)
    else:
        yield from check_database(Path(settings.database.path),
                                  settings.database.busy_timeout_ms)
        yield check_disk(Path(settings.database.path))
    yield from check_ports(settings)
    yield from check_exposure(settings)
    yield from check_destinations(settings)


def check_mappings(directory: str) -> Finding:
    from broker.mapping.schema import MappingLoadError, describe, load_mappings

    try:
        summary = describe(load_mappings(directory))
    except MappingLoadError as exc:
        shown = exc.errors[:10]
        more = f"\n… and {len(exc.errors) - len(shown)} more" if len(exc.errors) > 10 else ""
        return Finding(FAIL, "mappings", f"{len(exc.errors)} error(s) in {directory} (fix them;"
                       " `mwl-broker check-mappings` lists them all):\n" + "\n".join(shown)
                       + more)
    return Finding(OK, "mappings", f"{directory}: {len(summary['files'])} file(s), messages "
                   + ", ".join(summary["messages"]))


def check_database(path: Path, busy_timeout_ms: int) -> Iterator[Finding]:
    """The file opens, its schema version fits this broker, it is intact and in WAL mode."""
    if not path.exists():
        yield _missing_database(path)
        return
    try:
        found = inspect(path, busy_timeout_ms)
    except UnreadableDatabase as exc:
        yield Finding(FAIL, "database", f"{path} cannot be read: {exc}; " + (
            "restore a backup (made with `mwl-broker backup`) or move the file away "
            "to start empty" if exc.damaged else "check its owner and permissions"))
        return
    yield Finding(OK, "database", f"{path} opens ({path.stat().st_size} bytes)")
    yield _schema(found.schema_version)
    for problems, pragma, name in ((found.quick_problems, "quick_check", "quick_check"),
                                   (found.problems, "integrity_check", "integrity")):
        yield _integrity(problems, path, pragma, name)
    mode = found.journal_mode
    yield (Finding(OK, "wal", "journal mode WAL") if mode == "wal" else Finding(
        WARN, "wal", f"journal mode {mode.upper()}; `mwl-broker serve` switches it to WAL"))


def _missing_database(path: Path) -> Finding:
    folder = _existing_folder(path.parent)
    if os.access(folder, os.W_OK | os.X_OK):
        return Finding(WARN, "database", f"{path} does not exist yet; `mwl-broker serve` "
                       "creates it (or set database.path to the existing one)")
    return Finding(FAIL, "database", f"{path} does not exist and {folder} is not writable by "
                   f"uid {os.getuid()}: create the folder for the broker's user, or set "
                   "database.path")


def _schema(version: int) -> Finding:
    newest = len(MIGRATIONS)
    if version == newest:
        return Finding(OK, "schema", f"version {version} (current)")
    if version < newest:
        return Finding(WARN, "schema", f"version {version}; the broker migrates it to "
                       f"{newest} when it starts (make a backup first: `mwl-broker backup`)")
    return Finding(FAIL, "schema", f"version {version} is newer than this broker ({newest}): "
                   "install the broker version that wrote it")


def _integrity(problems: list[str], path: Path, pragma: str, name: str) -> Finding:
    if not problems:
        return Finding(OK, name, f"PRAGMA {pragma}: ok")
    return Finding(FAIL, name, f"PRAGMA {pragma} on {path} found damage; stop the broker "
                   "and restore the latest backup:\n" + "\n".join(problems))


def check_disk(path: Path) -> Finding:
    folder = _existing_folder(path.parent)
    usage = shutil.disk_usage(folder)
    free = f"{usage.free // MIB} MiB free of {usage.total // MIB} MiB in {folder}"
    if usage.free < DISK_FAIL_BYTES:
        return Finding(FAIL, "disk", f"{free}: the database cannot grow; free some space")
    if usage.free < DISK_WARN_BYTES:
        return Finding(WARN, "disk", f"{free}: less than {DISK_WARN_BYTES // MIB} MiB left")
    return Finding(OK, "disk", free)


def _existing_folder(folder: Path) -> Path:
    folder = folder.absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def listeners(settings: Settings) -> list[tuple[str, str, int]]:
    """(setting prefix, host, port) of every listener the broker would open."""
    out = [("mllp", settings.mllp.host, settings.mllp.port),
           ("dicom", settings.dicom.host, settings.dicom.port)]
    admin = settings.admin
    if getattr(admin, "enabled", True):
        out.append(("admin", admin.host, admin.port))
    return out


def check_ports(settings: Settings) -> Iterator[Finding]:
    seen: dict[int, str] = {}
    for label, host, port in listeners(settings):
        name = f"{label} port"
        if port == 0:
            yield Finding(OK, name, "0: the system picks a free port at start")
            continue
        if port in seen:
            yield Finding(FAIL, name, f"{label}.port and {seen[port]}.port are both {port}; "
                          "give each listener its own port")
            continue
        seen[port] = label
        yield _port(settings, label, host, port)


def _port(settings: Settings, label: str, host: str, port: int) -> Finding:
    name, where = f"{label} port", f"{host}:{port}"
    problem = _bind_error(host, port)
    if problem is None:
        return Finding(OK, name, f"{where} is free")
    if problem.errno == errno.EACCES:
        return Finding(FAIL, name, f"{where} cannot be bound: permission denied; ports below "
                       "1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it) or choose "
                       f"{label}.port 1024 or above")
    if problem.errno == errno.EADDRNOTAVAIL:
        return Finding(FAIL, name, f"{host} is not an address of this machine; correct "
                       f"{label}.host")
    if problem.errno != errno.EADDRINUSE:
        return Finding(FAIL, name, f"{where} cannot be bound: {problem}")
    owner = port_owner(port)
    if owner is not None:
        if "mwl-broker" in owner.command or "broker.cli" in owner.command:
            return Finding(WARN, name, f"{where} is in use by a running broker ({owner}); "
                           "stop it before starting another, or choose another "
                           f"{label}.port")
        return Finding(FAIL, name, f"{where} is in use by another program ({owner}); stop it "
                       f"or choose another {label}.port")
    answer = _probe(settings, label, port)
    return Finding(WARN if answer else FAIL, name, f"{where} is in use" + (
        f" and {answer} (by a running broker?)" if answer else
        " by a process this user cannot see") + f"; stop it or choose another {label}.port"
        + ("" if answer else " (run doctor as root to see which process)"))


def _bind_error(host: str, port: int) -> OSError | None:
    """Bind (and release) like the broker does; the error, or None when the port is free."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, str(exc))
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def _probe(settings: Settings, label: str, port: int) -> str:
    """What a listener that this user cannot identify answers: '' when nothing useful."""
    if label == "dicom":
        from broker.dicom import pynetdicom_patches
        from broker.dicom.client import QueryFailed, WorklistClient

        pynetdicom_patches.apply(settings.dicom.fast_path)
        try:
            with WorklistClient("127.0.0.1", port, called=settings.dicom.ae_title,
                                calling="MWLDOCTOR", timeout=PROBE_TIMEOUT) as client:
                if client.echo() == 0:
                    return f"answers C-ECHO as {settings.dicom.ae_title}"
        except (QueryFailed, OSError, AssertionError):
            return ""
        return ""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT):
            return "accepts connections"
    except OSError:
        return ""


def check_exposure(settings: Settings) -> Iterator[Finding]:
    """A WARN for each listener open to every network (all interfaces, no allow-list)."""
    exposed = open_listeners(settings)
    for listener in exposed:
        yield Finding(WARN, "exposure", listener.describe())
    if not exposed:
        yield Finding(OK, "exposure", "mllp and dicom listen on one interface or have an "
                      "allow-list")


def check_destinations(settings: Settings) -> Iterator[Finding]:
    """Each system the broker sends to has a host name that resolves."""
    targets = [(f"outbound {d.name}", "outbound.destinations", d.host, d.port)
               for d in settings.outbound.destinations]
    archive = getattr(settings, "storage_commitment", None)
    if archive is not None and archive.ae_title:
        targets.append((f"archive {archive.ae_title}", "storage_commitment.host", archive.host,
                        archive.port))
    if not settings.outbound.destinations:
        yield Finding(OK, "outbound", "no destinations: status updates are not sent "
                      "(outbound.destinations)")
    for name, setting, host, port in targets:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            yield Finding(FAIL, name, f"host {host!r} cannot be resolved ({exc.strerror}); "
                          f"correct {setting} or the DNS / /etc/hosts entry")
            continue
        yield Finding(OK, name, f"{host}:{port} resolves to {infos[0][4][0]}")


def report(findings: Iterator[Finding], write: Callable[[str], object] = print) -> int:
    """Print each finding; 1 when any failed, else 0."""
    failed = False
    counts = {OK: 0, WARN: 0, FAIL: 0}
    for finding in findings:
        write(finding.line())
        counts[finding.status] += 1
        failed |= finding.status == FAIL
    write(f"# {counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s)")
    return 1 if failed else 0
