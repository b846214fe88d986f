"""The one UID pattern."""

from __future__ import annotations

import pytest

from broker.model.uid import is_uid


@pytest.mark.parametrize("value", ["0", "1.2.840.10008.1.1", "2.25." + "9" * 58])
def test_uids(value: str) -> None:
    assert is_uid(value)


@pytest.mark.parametrize("value", ["", "1.02", "1..2", ".1", "1.", "1.2a", "2.25." + "9" * 60])
def test_not_uids(value: str) -> None:
    assert not is_uid(value)
