"""The throwaway PostgreSQL of the tests (tests/support/postgres.py) against the real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.support import throwaway
from tests.support.postgres import SYSTEM_USER, PostgresCluster

ROOT = Path(__file__).resolve().parents[3]


def _uid(pid: int) -> int | None:
    """The real uid of a process, None when it has exited since it was listed (a backend of a
    connection another test closed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_session_cluster_answers_on_loopback(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url("postgres")
    assert url == f"postgresql://mwl@127.0.0.1:{postgres_cluster.port}/postgres"
    with psycopg.connect(url) as conn:
        version, user, addr = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_user, "
            "inet_server_addr()::text").fetchone() or (0, "", "")
    assert version >= 150000
    assert user == "mwl"
    assert addr == "127.0.0.1/32"
    assert postgres_cluster.psql("SHOW listen_addresses") == [("127.0.0.1",)]
    # the unix socket in the cluster's folder takes connections too
    with psycopg.connect(host=str(postgres_cluster.socket_dir), port=postgres_cluster.port,
                         user="mwl", dbname="postgres") as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_server_runs_unprivileged(postgres_cluster: PostgresCluster) -> None:
    pids = postgres_cluster.processes()
    assert len(pids) >= 4  # postmaster, checkpointer, background writer, walwriter, …
    expected = os.geteuid()
    if expected == 0:
        import pwd
        expected = pwd.getpwnam(SYSTEM_USER).pw_uid
        assert expected != 0
    uids = {pid: _uid(pid) for pid in pids}
    assert uids[pids[0]] == expected  # the postmaster itself
    assert {uid for uid in uids.values() if uid is not None} == {expected}
    assert postgres_cluster.data.stat().st_uid == expected
    assert postgres_cluster.data.stat().st_mode & 0o077 == 0


def test_postgres_url_is_a_fresh_database_of_its_own(postgres_url: str,
                                                     postgres_cluster: PostgresCluster) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    assert name.startswith("t_test_postgres_url_is_a_fresh")
    assert name in postgres_cluster.databases()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (0,)
        conn.execute("CREATE TABLE mine (a int)")
    # collation as in the SQLite store: byte order
    assert postgres_cluster.psql("SELECT 'B' < 'a', 'é' > 'z'", name) == [(True, True)]


def test_create_from_template_and_drop_with_sessions(postgres_cluster: PostgresCluster) -> None:
    postgres_cluster.create_database("infra_template")
    try:
        postgres_cluster.psql("CREATE TABLE t (a int); INSERT INTO t VALUES (7)",
                              "infra_template")
        url = postgres_cluster.create_database("infra_copy", template="infra_template")
        assert url.endswith("/infra_copy")
        assert postgres_cluster.psql("SELECT a FROM t", "infra_copy") == [(7,)]
        held = psycopg.connect(url)
        postgres_cluster.drop_database("infra_copy")  # ends the held session
        assert "infra_copy" not in postgres_cluster.databases()
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        postgres_cluster.drop_database("infra_copy")  # dropping what is gone is no error
    finally:
        postgres_cluster.drop_database("infra_template")
        postgres_cluster.drop_database("infra_copy")


def test_settings_for_tests_and_durable() -> None:
    with PostgresCluster({"work_mem": "8MB", "application_name": "it's mine"}) as fast:
        assert fast.psql("SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
                         " current_setting('max_connections'), current_setting('work_mem'),"
                         " current_setting('application_name')") == [
            ("off", "on", "200", "8MB", "it's mine")]
        if Path("/dev/shm").is_dir():  # no fsync: in memory
            assert fast.folder.parent == Path("/dev/shm")
    with PostgresCluster(durable=True) as durable:
        assert durable.psql("SELECT current_setting('fsync'), "
                            "current_setting('full_page_writes')") == [("on", "on")]
        assert durable.folder.parent == Path(tempfile.gettempdir())


def test_restart_immediate_keeps_committed_rows() -> None:
    with PostgresCluster() as cluster:
        port = cluster.port
        cluster.psql("CREATE TABLE acked (n int PRIMARY KEY)")
        with psycopg.connect(cluster.url()) as conn:
            for n in range(200):  # one transaction each, as acknowledged messages are
                with conn.transaction():
                    conn.execute("INSERT INTO acked VALUES (%s)", (n,))
        pending = psycopg.connect(cluster.url())
        pending.execute("INSERT INTO acked VALUES (-1)")  # never committed
        old_pid = cluster.pid
        cluster.restart("immediate")
        assert cluster.pid != old_pid
        assert cluster.port == port
        assert cluster.psql("SELECT count(*), min(n), max(n) FROM acked") == [(200, 0, 199)]
        with pytest.raises(psycopg.OperationalError):
            pending.execute("SELECT 1")
        pending.close()
        assert "database system was interrupted" in cluster.log_path.read_text()


def test_kill_then_start_recovers_committed_rows() -> None:
    with PostgresCluster() as cluster:
        cluster.psql("CREATE TABLE acked (n int); INSERT INTO acked VALUES (1), (2)")
        held = psycopg.connect(cluster.url())
        pids = [*cluster.processes(), held.info.backend_pid]
        cluster.kill()
        assert not cluster.running
        assert not any(throwaway.is_alive(p) for p in pids)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.url(), connect_timeout=2)
        cluster.start()
        assert cluster.psql("SELECT n FROM acked ORDER BY n") == [(1,), (2,)]


def test_stop_leaves_no_process_and_close_no_folder() -> None:
    cluster = PostgresCluster()
    cluster.start()
    with psycopg.connect(cluster.url()) as conn:
        pids = [*cluster.processes(), conn.info.backend_pid]
    assert len(pids) >= 5
    socket_file = cluster.socket_dir / f".s.PGSQL.{cluster.port}"
    assert socket_file.exists()
    cluster.stop()
    assert not cluster.running and cluster.processes() == []
    assert not any(throwaway.is_alive(p) for p in pids)
    assert _refused(cluster.port)
    assert not socket_file.exists()
    cluster.start()  # the data stays between a stop and a start
    assert cluster.running
    cluster.close()
    assert not cluster.folder.exists()


_CHILD = """
import os, signal, sys
from tests.support.postgres import PostgresCluster
cluster = PostgresCluster()
cluster.start()
print(cluster.pid, cluster.folder, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(how: str) -> tuple[int, Path]:
    done = subprocess.run([sys.executable, "-c", _CHILD, how], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    pid, folder = done.stdout.split()
    return int(pid), Path(folder)


def test_a_cluster_left_running_is_stopped_at_exit() -> None:
    pid, folder = _child("exit")  # ends without stop() or close()
    assert not throwaway.is_alive(pid)
    assert not folder.exists()


def test_a_cluster_of_a_killed_run_is_removed_by_the_next_one() -> None:
    pid, folder = _child("kill")  # SIGKILL: no atexit hook ran
    try:
        assert throwaway.is_alive(pid) and folder.exists()
        with PostgresCluster():
            assert not throwaway.is_alive(pid)
            assert not folder.exists()
    finally:
        if throwaway.is_alive(pid):
            os.kill(pid, signal.SIGKILL)
