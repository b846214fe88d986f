"""Found by the live fuzz campaign: every distinct pydicom warning text (invalid values sent
by peers) was kept for ever in the warnings registry, so memory grew with bad input."""

from __future__ import annotations

import logging
import sys
import warnings

from pydicom.dataelem import DataElement

from broker import logs


def test_pydicom_warnings_are_not_kept_per_text() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # Python's own default (pytest shows them all)
        try:
            logs.setup("WARNING")
            for i in range(50):
                DataElement(0x00100030, "DA", f"not-a-date-{i}")
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers[:], root.level = handlers, level
    registry = sys.modules["pydicom.valuerep"].__dict__.get("__warningregistry__", {})
    assert not [key for key in registry if "not-a-date-" in str(key)]
