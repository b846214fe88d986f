"""Waiting in a test for something the broker does in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``predicate`` on the running loop until it holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
