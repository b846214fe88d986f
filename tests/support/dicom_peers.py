"""Helpers for tests that talk to DCMTK: query files, findscu runs, response comparison."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

DCMTK_EXAMPLES = Path("/usr/share/doc/dcmtk/examples")


def dump_to_dicom(dump: Path | str, out: Path, text: str | None = None) -> Path:
    """dump2dcm a DCMTK dump file (or the given dump text) into a DICOM file."""
    if text is not None:
        src = out.with_suffix(".dump")
        src.write_text(text)
        dump = src
    subprocess.run(["dump2dcm", "-q", str(dump), str(out)], check=True, timeout=30)
    return out


def findscu(port: int, called: str, query: Path, out_dir: Path, *, calling: str = "FINDSCU",
            timeout: float = 60) -> tuple[list[Dataset], str]:
    """Run ``findscu -W`` once; the response identifiers and findscu's output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.run(
        ["findscu", "-W", "-X", "-od", str(out_dir), "-aet", calling, "-aec", called,
         "127.0.0.1", str(port), str(query)],
        capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"findscu failed: {proc.stdout}{proc.stderr}"
    responses = [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]
    return responses, proc.stdout + proc.stderr


def comparable(ds: Dataset) -> dict[str, Any]:
    """A response as plain values, without the character set (each SCP answers in its own)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag in (0x00080005,) or elem.tag.group == 0x0002:
            continue
        if elem.VR == "SQ":
            out[elem.keyword or str(elem.tag)] = [comparable(item) for item in elem.value]
        elif elem.value is None or elem.value == "":
            out[elem.keyword or str(elem.tag)] = ""
        elif elem.VM > 1:
            out[elem.keyword or str(elem.tag)] = [str(v).strip() for v in elem.value]
        else:
            out[elem.keyword or str(elem.tag)] = str(elem.value).strip()
    return out


def key(item: dict[str, Any]) -> str:
    return repr(sorted(item.items()))
