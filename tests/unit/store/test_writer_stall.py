"""What the stalled-writer alert reads from the writer's status: jobs waiting, and how long
the batch under way has taken."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from broker.store.sqlite.writer import SqliteWriter
from broker.store.unit_of_work import UnitOfWork


def test_a_stuck_batch_shows_as_busy_with_jobs_waiting(tmp_path: Path) -> None:
    writer = SqliteWriter(tmp_path / "w.sqlite", max_batch=1)
    writer.start()
    release = threading.Event()
    try:
        idle = writer.status()
        assert (idle["queued"], idle["busy_seconds"]) == (0, 0.0)

        def stuck(uow: UnitOfWork) -> None:
            release.wait(10)
        callers = [threading.Thread(target=writer.run_sync, args=(stuck,))]
        callers += [threading.Thread(target=writer.run_sync, args=(lambda uow: None,))
                    for _ in range(3)]
        callers[0].start()
        deadline = time.monotonic() + 5
        while writer.status()["busy_seconds"] < 0.2:
            assert time.monotonic() < deadline, writer.status()
            time.sleep(0.01)
        for caller in callers[1:]:
            caller.start()
        while writer.status()["queued"] < 3:
            assert time.monotonic() < deadline, writer.status()
            time.sleep(0.01)
        commits = writer.commits
        release.set()
        for caller in callers:
            caller.join(10)
        done = writer.status()
        assert done["queued"] == 0 and done["busy_seconds"] < 0.2
        assert done["commits"] >= commits + 4
    finally:
        release.set()
        writer.stop()
