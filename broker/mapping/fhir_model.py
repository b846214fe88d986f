"""The FHIR R4 model fhirpathpy ships (element types, parents, choice types), read from its
files without importing fhirpathpy: its ``models`` module loads all four FHIR versions
(~7 MB) and its package the ANTLR parser (~5 MB), which only expressions outside the fast
subset need."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any


def folder() -> Path:
    """fhirpathpy's ``models/r4`` (found, not imported)."""
    spec = importlib.util.find_spec("fhirpathpy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fhirpathpy is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "r4"


@cache
def r4() -> dict[str, Any]:
    """What ``fhirpathpy.models.models["r4"]`` holds: one entry per JSON file."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(folder().glob("*.json"))}
