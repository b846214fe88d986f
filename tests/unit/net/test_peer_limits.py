"""The per-source-address connection cap."""

from __future__ import annotations

import threading

import pytest

from broker.net.peer_limits import PerAddressLimit


def test_cap_is_per_address() -> None:
    limit = PerAddressLimit(2)
    assert limit.acquire("10.0.0.1") and limit.acquire("10.0.0.1")
    assert not limit.acquire("10.0.0.1")
    assert limit.acquire("10.0.0.2")  # another address is still served
    limit.release("10.0.0.1")
    assert limit.acquire("10.0.0.1")
    assert limit.addresses() == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_zero_means_no_cap_and_release_forgets_the_address() -> None:
    limit = PerAddressLimit(0)
    for _ in range(500):
        assert limit.acquire("10.0.0.1")
    for _ in range(500):
        limit.release("10.0.0.1")
    limit.release("10.0.0.1")  # a release without a slot is ignored
    assert limit.held("10.0.0.1") == 0 and limit.addresses() == {}


def test_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        PerAddressLimit(-1)


def test_threads_never_exceed_the_cap() -> None:
    limit = PerAddressLimit(5)
    granted: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        ok = limit.acquire("10.0.0.9")
        with lock:
            granted.append(ok)

    threads = [threading.Thread(target=take) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert granted.count(True) == 5 and limit.held("10.0.0.9") == 5
