"""The one UID pattern (PS3.5 9.1): dot-separated numbers without leading zeros, at most 64
characters."""

from __future__ import annotations

import re

UID_PATTERN = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
MAX_UID_LENGTH = 64


def is_uid(value: str) -> bool:
    """Whether ``value`` is a UID: the pattern and at most 64 characters."""
    return len(value) <= MAX_UID_LENGTH and UID_PATTERN.match(value) is not None
