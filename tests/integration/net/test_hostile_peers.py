"""A short live fuzz campaign (benchmarks/fuzz_live.py) against the real broker process:
the well-behaved clients all succeed, every HL7 frame is answered, memory stays bounded and
the broker exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks.fuzz_live import campaign_run


def test_short_fuzz_campaign(tmp_path: Path) -> None:
    results = asyncio.run(campaign_run(tmp_path, seconds=12, seed=3))
    assert results["errors"] == []
    clients = results["clients"]
    assert clients["valid ORM (must all be AA)"]["outcomes"].get("AA", 0) > 0
    assert clients["100 MB frame (AR, MiB sent before close)"]["outcomes"].get(
        "AR, then closed", 0) > 0
    assert results["rss_mb"]["largest_growth_during_a_100MB_input"] <= 32
    assert results["sigterm_exit_code"] == 0
