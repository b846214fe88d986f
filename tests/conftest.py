"""Shared fixtures: real broker processes and in-process brokers on loopback ports, a
throwaway PostgreSQL cluster with a fresh database per test."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support")

from broker.app import Broker  # noqa: E402
from broker.dicom import pynetdicom_patches  # noqa: E402
from tests.support import broker as support_broker  # noqa: E402
from tests.support.broker import BrokerProcess, make_settings, running  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

#: the main DICOM tests, run with dicom.fast_path on ("fast") and off ("stock")
BOTH_DICOM_PATHS = ("tests/integration/worklist/test_mwl_scp.py",
                    "tests/integration/worklist/test_dicom_server.py",
                    "tests/integration/mpps_in/test_mpps_scp.py",
                    "tests/integration/completion/test_stgcmt_ian.py")
ROOT = Path(__file__).resolve().parent.parent
#: ``MWL_TEST_BACKEND=postgresql``: every integration and end-to-end test runs its brokers
#: on a database of its own on the session's PostgreSQL (through MWL_DATABASE_URL, which
#: every broker, in process or not, takes as its database.url); SQLite otherwise
BACKEND = os.environ.get("MWL_TEST_BACKEND", "sqlite")
ON_POSTGRES = BACKEND == "postgresql"
DATABASE_TESTS = ("tests/integration/", "tests/e2e/")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    path = metafunc.definition.path.resolve().relative_to(ROOT).as_posix()
    if path in BOTH_DICOM_PATHS:
        # the DICOM wire path does not depend on the store: on PostgreSQL, the fast one only
        paths, ids = ([True], ["fast"]) if ON_POSTGRES else ([True, False], ["fast", "stock"])
        metafunc.parametrize("dicom_fast_path", paths, ids=ids, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def dicom_fast_path(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The pynetdicom patches as the application applies them at start: the fixes always,
    the speed-ups unless the test runs on stock pynetdicom (a module-scoped broker of such a
    test asks for this fixture, to be started once per value)."""
    fast: bool = getattr(request, "param", True)
    support_broker.DICOM_FAST_PATH = fast
    pynetdicom_patches.apply(fast)
    try:
        yield fast
    finally:
        support_broker.DICOM_FAST_PATH = True


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """An in-process broker (same code as ``serve``) on an ephemeral port."""
    async with running(make_settings(tmp_path, idle_timeout=5.0, shutdown_grace=2.0)) as b:
        yield b


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the session, started by the first test that asks for it.
    Tests that stop, restart or kill a server start a ``PostgresCluster`` of their own."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster, request: pytest.FixtureRequest
                 ) -> Iterator[str]:
    """The URL of a database of this test's own on the session's cluster (dropped after it,
    with the sessions still connected to it)."""
    if not postgres_cluster.running:  # a test stopped it after all: serve the next ones
        postgres_cluster.start()
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40].strip("_")
    name = f"t_{stem}_{secrets.token_hex(3)}"
    url = postgres_cluster.create_database(name)
    try:
        yield url
    finally:
        if postgres_cluster.running:
            postgres_cluster.drop_database(name)





def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="SQLite only (MWL_TEST_BACKEND=postgresql)")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def module_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """On PostgreSQL: a database of the module's own for brokers that module-wide fixtures
    start (each test gets its own on top, by database_backend)."""
    path = Path(str(request.node.path)).resolve().relative_to(ROOT).as_posix()
    if not ON_POSTGRES or not path.startswith(DATABASE_TESTS):
        yield
        return
    cluster = request.getfixturevalue("postgres_cluster")
    saved = os.environ.get("MWL_DATABASE_URL")
    os.environ["MWL_DATABASE_URL"] = cluster.create_database(f"m_{secrets.token_hex(4)}")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MWL_DATABASE_URL", None)
        else:
            os.environ["MWL_DATABASE_URL"] = saved


@pytest.fixture(autouse=True)
def database_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[str]:
    """The backend this test's brokers use (a fresh PostgreSQL database per test)."""
    path = Path(str(request.node.path)).resolve().relative_to(ROOT).as_posix()
    if not ON_POSTGRES or not path.startswith(DATABASE_TESTS) \
            or request.node.get_closest_marker("sqlite_only"):
        monkeypatch.delenv("MWL_DATABASE_URL", raising=False)
        yield "sqlite"
        return
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("MWL_DATABASE_URL", url)
    yield "postgresql"
