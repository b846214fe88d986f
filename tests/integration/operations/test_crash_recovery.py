"""The crash suite's short variant (benchmarks/crash.py --quick): SIGKILL under HL7 and MPPS
load, restart, and count: nothing acknowledged lost, nothing applied twice, outbox delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks.crash import Config, crash_suite


def test_sigkill_under_hl7_and_mpps_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    cfg = Config.quick()
    results = asyncio.run(crash_suite(cfg, tmp_path))
    assert results["errors"] == []
    assert [k["phase"] for k in results["kills"]] == ["hl7", "mpps"]
    assert all(k["integrity"] == "ok" for k in results["kills"])
    assert results["hl7"]["acknowledged"] == cfg.messages
    assert results["mpps"]["outbox_delivered"] == 2 * cfg.procedures
    assert results["sigterm_exit_code"] == 0
