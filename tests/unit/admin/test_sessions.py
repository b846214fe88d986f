"""Console sessions (idle and absolute expiry, revocation) and the per-address count of
failed credentials, on a clock the test moves."""

from __future__ import annotations

from broker.admin.sessions import SessionStore
from broker.admin.throttle import FailureLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_ids_are_random_and_unknown_ones_refused() -> None:
    store = SessionStore(60, 3600, Clock())
    first, second = store.create(), store.create()
    assert first != second and len(first) >= 43
    assert store.check(first) and store.check(second)
    assert not store.check("") and not store.check(first + "x")


def test_idle_session_expires_and_use_keeps_it_alive() -> None:
    clock = Clock()
    store = SessionStore(60, 3600, clock)
    used, idle = store.create(), store.create()
    for _ in range(5):
        clock.now += 50
        assert store.check(used)
    assert not store.check(idle)
    clock.now += 60
    assert not store.check(used)
    assert len(store) == 0


def test_absolute_age_ends_a_session_in_use() -> None:
    clock = Clock()
    store = SessionStore(60, 200, clock)
    sid = store.create()
    for _ in range(3):
        clock.now += 50
        assert store.check(sid)
    clock.now += 50
    assert not store.check(sid)


def test_revoked_session_is_refused() -> None:
    store = SessionStore(60, 3600, Clock())
    sid = store.create()
    assert store.revoke(sid) and not store.check(sid)
    assert not store.revoke(sid)


def test_store_is_bounded() -> None:
    store = SessionStore(60, 3600, Clock(), max_sessions=3)
    ids = [store.create() for _ in range(5)]
    assert len(store) == 3
    assert [store.check(s) for s in ids] == [False, False, True, True, True]


def test_failures_lock_an_address_for_the_rest_of_the_window() -> None:
    clock = Clock()
    limit = FailureLimit(3, 300, clock)
    assert [limit.failed("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert limit.retry_after("10.0.0.1") == 300
    assert limit.retry_after("10.0.0.2") == 0
    clock.now += 100.5
    assert limit.retry_after("10.0.0.1") == 200
    clock.now += 200
    assert limit.retry_after("10.0.0.1") == 0


def test_failures_slide_out_of_the_window() -> None:
    clock = Clock()
    limit = FailureLimit(3, 300, clock)
    limit.failed("a")
    clock.now += 200
    limit.failed("a")
    clock.now += 150  # the first failure is out of the window now
    assert not limit.failed("a")
    assert limit.retry_after("a") == 0
    assert limit.failed("a")
    assert limit.retry_after("a") == 150  # when the failure at +200 leaves the window


def test_tracked_addresses_are_bounded() -> None:
    limit = FailureLimit(2, 300, Clock(), max_addresses=2)
    for address in ("a", "b", "c"):
        limit.failed(address)
        limit.failed(address)
    assert [limit.retry_after(a) for a in ("a", "b", "c")] == [0, 300, 300]
