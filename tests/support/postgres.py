"""A throwaway PostgreSQL cluster for the tests and benchmarks: the real server (the newest
``/usr/lib/postgresql/*/bin``) in a temporary folder, on a free port of 127.0.0.1, its unix
socket in that folder, superuser ``mwl`` with trust authentication (the socket and 127.0.0.1
only).

The data folder is a copy of one ``initdb``'d template per process (initdb takes most of a
second; a copy and a start about a tenth), made in the C locale (byte-order comparisons, as
the SQLite store has) with UTF-8 and data checksums. Clusters without fsync live in /dev/shm
(copying the 40 MB template to the disk took up to a second while other tests wrote to it);
``durable`` ones in the temporary folder, on the disk.

initdb and postgres refuse to run as root: as root, they run as the unprivileged system user
``mwltest`` (created if missing) and the folder belongs to it.

The postmaster is this process's child (``postgres -D``, not ``pg_ctl start``): the init of
this machine reaps orphans only a second or two after they exit, and while the killed
postmaster of ``pg_ctl start`` is an unreaped zombie its pid in ``postmaster.pid`` makes the
next start refuse ("another postmaster running"). ``stop``/``restart`` send the
signals ``pg_ctl stop -m smart|fast|immediate`` sends. A cluster left running by a test run
that ended without its atexit hooks (SIGKILL) is killed by the next run's first cluster
(tests/support/throwaway.py).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from tests.support import throwaway

SUPERUSER = "mwl"
#: the unprivileged system user the server runs as when the tests run as root
SYSTEM_USER = "mwltest"
#: ``pg_ctl stop -m`` modes and the signal each sends to the postmaster
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

Setting = str | int | float | bool

#: settings for tests: no fsync (a process crash loses nothing, a machine crash may), commits
#: written to the kernel before they return (``synchronous_commit = off`` would lose the last
#: commits of a ``restart("immediate")`` or a ``kill()``: keep it on wherever a test counts
#: acknowledged rows)
TEST_SETTINGS: dict[str, Setting] = {
    "fsync": False,
    "synchronous_commit": True,
    "full_page_writes": False,
    "max_connections": 200,
    "shared_buffers": "16MB",
    "jit": False,
    "timezone": "UTC",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}
#: what ``durable=True`` changes: a commit reaches the disk before it returns
DURABLE_SETTINGS: dict[str, Setting] = {
    "fsync": True, "synchronous_commit": True, "full_page_writes": True}

_HBA = """\
# written by tests/support/postgres.py: trust on the socket and 127.0.0.1 only
local   all           all                  trust
host    all           all    127.0.0.1/32  trust
local   replication   all                  trust
host    replication   all    127.0.0.1/32  trust
"""
_CONF = "mwl_test.conf"
_KIND = "pg"
_SHM = Path("/dev/shm")


def default_base(durable: bool) -> Path | None:
    """Where a cluster's folder goes: /dev/shm (memory) unless it is durable or there is no
    /dev/shm; None: the system's temporary folder."""
    if not durable and _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


def _reap_abandoned(base: Path | None) -> None:
    for where in {base, _SHM if _SHM.is_dir() else None, None}:
        throwaway.reap_abandoned(_KIND, _postmaster_pids, where)


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (``MWL_PG_BIN`` overrides)."""
    override = os.environ.get("MWL_PG_BIN")
    if override:
        return Path(override)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)])
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError("no PostgreSQL server installed (bash scripts/install-system-deps.sh)")


def _system_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None when this process is not root (it runs as us)."""
    if os.geteuid() != 0:
        return None
    for _ in range(20):
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pass
        # another test process may be adding it at the same moment: then useradd fails, and
        # the user is there at the next look
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], capture_output=True, check=False)
        time.sleep(0.05)
    raise RuntimeError(f"could not create the system user {SYSTEM_USER}")


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _env(folder: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(folder), "LC_ALL": "C", "LANG": "C"}


def _check_reachable(folder: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for parent in folder.parents:
        mode = parent.stat()
        if not (mode.st_mode & 0o001 or mode.st_uid == user.pw_uid):
            raise PermissionError(f"{SYSTEM_USER} cannot reach {folder}: {parent} is closed "
                                  "to others (use a base folder under /tmp)")


def _conf_value(value: Setting) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _postmaster_pids(folder: Path) -> list[int]:
    try:
        return [int((folder / "data" / "postmaster.pid").read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


_templates: dict[tuple[Path, int | None], Path] = {}
_templates_lock = threading.Lock()


def _template(postgres_bin: Path, user: pwd.struct_passwd | None) -> Path:
    """This process's initdb'd data folder, made at the first call (removed at exit)."""
    key = (postgres_bin, None if user is None else user.pw_uid)
    with _templates_lock:
        if key in _templates:
            return _templates[key]
        base = default_base(durable=False)
        _reap_abandoned(base)
        folder = throwaway.make_folder(f"{_KIND}-template", base)
        atexit.register(shutil.rmtree, folder, True)
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        data = folder / "data"
        done = subprocess.run(
            [str(postgres_bin / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--data-checksums", "--no-sync", "--no-instructions"],
            cwd=folder, env=_env(folder), capture_output=True, text=True, check=False,
            **_as_user(user))
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        (data / "pg_hba.conf").write_text(_HBA)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude '{_CONF}'\n")
        _templates[key] = data
        return data


class _Guard:
    """Kills the postmaster and removes the folder when the cluster is collected or the
    interpreter exits without ``close()``; holds no reference to the cluster."""

    def __init__(self, folder: Path, keep_folder: bool) -> None:
        self.folder = folder
        self.keep_folder = keep_folder
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # an immediate shutdown (the postmaster reaps its children), a kill if it hangs
            proc.send_signal(STOP_SIGNALS["immediate"])
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                victims = throwaway.kill_tree(proc.pid)
                proc.wait()
                with contextlib.suppress(TimeoutError):
                    throwaway.wait_gone(victims, 5.0)
        if not self.keep_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


class PostgresCluster:
    """A PostgreSQL server of its own in a temporary folder (see the module's docstring).

    ``settings`` are added to (and override) ``TEST_SETTINGS``, after ``DURABLE_SETTINGS``
    when ``durable``. Its folder is made under ``base`` (default: ``default_base(durable)``).
    The cluster is not started by the constructor: ``start()`` or ``with``.
    """

    def __init__(self, settings: Mapping[str, Setting] | None = None, *, durable: bool = False,
                 base: Path | None = None, keep_folder: bool = False) -> None:
        self.bin = bin_dir()
        self._user = _system_user()
        if base is None:
            base = default_base(durable)
        _reap_abandoned(base)
        self.folder = throwaway.make_folder(_KIND, base)
        self._guard = _Guard(self.folder, keep_folder)
        self._finalizer = weakref.finalize(self, self._guard)
        _check_reachable(self.folder, self._user)
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.socket_dir = self.folder
        self.durable = durable
        self.settings: dict[str, Setting] = {**TEST_SETTINGS,
                                             **(DURABLE_SETTINGS if durable else {}),
                                             **(settings or {})}
        self.port = throwaway.free_port()
        if len(str(self.folder / f".s.PGSQL.{self.port}")) > 107:
            raise ValueError(f"unix socket path too long under {self.folder}")

    # -- life cycle ------------------------------------------------------------------------

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._guard.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def processes(self) -> list[int]:
        """The live postmaster and its children (backends, checkpointer, …)."""
        pid = self.pid
        return [] if pid is None else [pid, *throwaway.children(pid)]

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (a copy of the template at the first start, the data as it was
        left at the next ones) and wait until it accepts connections."""
        if self.running:
            return
        if not self.data.exists():
            template = _template(self.bin, self._user)
            # cp -a keeps the owner (mwltest) and the 0700 mode postgres insists on
            subprocess.run(["cp", "-a", str(template), str(self.data)], check=True)
            if self.durable:
                os.sync()
        for _attempt in range(5):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._write_conf()
            with open(self.log_path, "ab") as log:
                self._guard.proc = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.data)], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=_env(self.folder),
                    start_new_session=True, **_as_user(self._user))
            try:
                self.wait_ready(timeout)
                return
            except RuntimeError:
                with open(self.log_path, "rb") as log:
                    log.seek(offset)
                    told = log.read().decode(errors="replace")
                if "could not bind" not in told and "could not create" not in told:
                    raise
                self.port = throwaway.free_port()  # taken meanwhile by someone else
        raise RuntimeError(f"PostgreSQL found no free port:\n{self.log_tail()}")

    def _write_conf(self) -> None:
        lines = ["# written by tests/support/postgres.py at each start",
                 "listen_addresses = '127.0.0.1'", f"port = {self.port}",
                 f"unix_socket_directories = {_conf_value(str(self.socket_dir))}"]
        lines += [f"{name} = {_conf_value(value)}" for name, value in self.settings.items()]
        conf = self.data / _CONF
        conf.write_text("\n".join(lines) + "\n")
        if self._user is not None:
            os.chown(conf, self._user.pw_uid, self._user.pw_gid)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections (it may be recovering from a crash)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(f"PostgreSQL is not running (exit {code}):\n"
                                   f"{self.log_tail()}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2, autocommit=True
                                     ) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"PostgreSQL not ready after {timeout}s: {exc}\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server as ``pg_ctl stop -m mode`` does (smart, fast, immediate); kill it
        if it has not stopped after ``timeout`` seconds. The data stays for ``start()``."""
        sig = STOP_SIGNALS[mode]
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._guard.proc = None

    def restart(self, mode: str = "immediate", timeout: float = 30.0) -> None:
        """``pg_ctl restart -m mode``: stop (immediate: no checkpoint, crash recovery at the
        start) and start again on the same port; returns when it accepts connections."""
        self.stop(mode, timeout)
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash of its machine would (committed
        rows survive: the next ``start()`` recovers them from the WAL)."""
        proc = self.proc
        if proc is None:
            return
        victims = throwaway.kill_tree(proc.pid)
        proc.wait()
        throwaway.wait_gone(victims)
        self._guard.proc = None

    def close(self) -> None:
        """Stop the server and remove its folder (unless ``keep_folder``)."""
        try:
            self.stop()
        finally:
            self._finalizer()

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<PostgresCluster 127.0.0.1:{self.port} {self.folder} {state}>"

    # -- databases ---------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, query: str, dbname: str = "postgres",
             params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run ``query`` in autocommit on a fresh connection; the rows it returns, if any.
        Without ``params`` a text of several statements may be given."""
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query.encode(), params)
            while cur.nextset():  # the rows of the last statement that returns any
                pass
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template``, which nobody may be connected to,
        or of template1); returns its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending the sessions still connected to it."""
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def databases(self) -> list[str]:
        return [row[0] for row in self.psql(
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")]
