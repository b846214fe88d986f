"""``serve`` freezes what start-up made, so pynetdicom's periodic full collection walks only
what came after (run in a process of its own: freezing the test process would keep every
later test's garbage)."""

from __future__ import annotations

import subprocess
import sys


def test_startup_objects_are_frozen_and_later_garbage_still_collected() -> None:
    code = (
        "import gc\n"
        "from broker.app import freeze_startup_objects\n"
        "frozen = freeze_startup_objects()\n"
        "assert frozen > 10000, frozen\n"
        "class Cycle:\n"
        "    pass\n"
        "a = Cycle(); a.me = a; del a\n"
        "assert gc.collect() >= 1, 'a cycle made after the freeze is collected'\n"
        "print(frozen)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 10000
