"""Differential conformance: DCMTK's example worklist served by wlmscpfs and, after
``mwl-broker import-worklist``, by the broker; every example query (and a few more that
exercise each matching rule) sent with DCMTK findscu to both, answers compared attribute by
attribute.

Deliberate differences (documented in docs and README):
- a requested key the item has no value for: wlmscpfs leaves it out of the response, the
  broker returns it empty (PS3.4 C.2.2.1.2: return keys come back, zero length if unknown);
  the comparison treats "absent" and "empty" alike;
- Scheduled Procedure Step Status: the broker tracks a status for every step (imported files
  without one become SCHEDULED), wlmscpfs returns what the file holds (nothing);
- the Specific Character Set of the answer (ISO_IR 192 from the broker by default);
- PN matching is case-insensitive in the broker, case-sensitive in wlmscpfs
  (the 'lowercase name' query below is expected to differ in exactly that way);
- UID list matching: wlmscpfs ignores a list of Study Instance UIDs and answers every
  item, the broker answers the listed studies only (PS3.4 C.2.2.2.2);
- patient-level attributes (Medical Alerts, Allergies …) are kept once per patient, as an
  ADT update would leave them: the example files give patient AV35674 different alerts in
  different files, the broker answers the last ones read for all three of its items.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BIN, BrokerProcess, free_port, wait_for_port
from tests.support.dicom_peers import DCMTK_EXAMPLES, comparable, dump_to_dicom, findscu

pytestmark = pytest.mark.peers

SPS = "(0040,0100) SQ\n(fffe,e000) -\n{items}(fffe,e00d) -\n(fffe,e0dd) -\n"
RETURN_ALL_SPS = ("(0008,0060) CS []\n(0040,0001) AE []\n(0040,0002) DA []\n"
                  "(0040,0003) TM []\n(0040,0009) SH []\n")
TOP = ("(0008,0050) SH []\n(0010,0010) PN []\n(0010,0020) LO []\n(0010,0030) DA []\n"
       "(0020,000d) UI []\n(0032,1060) LO []\n(0040,1001) SH []\n")


def extra_query(top: dict[str, str] | None = None, sps: dict[str, str] | None = None) -> str:
    """A dump with the usual return keys, some of them given a value to match."""
    lines = TOP
    for tag, value in (top or {}).items():
        lines = _set(lines, tag, value)
    items = RETURN_ALL_SPS
    for tag, value in (sps or {}).items():
        items = _set(items, tag, value)
    return lines + SPS.format(items=items)


def _set(dump: str, tag: str, value: str) -> str:
    out = []
    found = False
    for line in dump.splitlines():
        if line.startswith(tag):
            line = f"{line[:14]} [{value}]"
            found = True
        out.append(line)
    if not found:
        raise KeyError(tag)
    return "\n".join(out) + "\n"


EXTRA_QUERIES = {
    "patient_name_wildcard": extra_query({"(0010,0010) PN": "V*"}),
    "patient_id_single": extra_query({"(0010,0020) LO": "AV35674"}),
    "accession_single": extra_query({"(0008,0050) SH": "00000"}),
    "modality_single": extra_query(sps={"(0008,0060) CS": "MR"}),
    "station_single": extra_query(sps={"(0040,0001) AE": "AA32"}),
    "date_range": extra_query(sps={"(0040,0002) DA": "19951015-19960423"}),
    "date_open_start": extra_query(sps={"(0040,0002) DA": "-19951231"}),
    "date_and_time": extra_query(sps={"(0040,0002) DA": "19951015",
                                       "(0040,0003) TM": "080000-090000"}),
    "birth_date_single": extra_query({"(0010,0030) DA": "16780304"}),
    "uid_list": extra_query({"(0020,000d) UI": "1.2.276.0.7230010.3.2.101\\"
                                                "1.2.276.0.7230010.3.2.102"}),
    "description_wildcard": extra_query({"(0032,1060) LO": "EXAM?"}),
    "lowercase_name": extra_query({"(0010,0010) PN": "vivaldi*"}),
}
#: queries whose answers differ on purpose: (wlmscpfs count, broker count), or the keys
#: that alone differ
EXPECTED_COUNTS = {"lowercase_name": (0, 3), "uid_list": (10, 2)}
PATIENT_LEVEL_KEYS = {"MedicalAlerts", "Allergies"}
EXPECTED_KEY_DIFFERENCES = {"wlistqry1": PATIENT_LEVEL_KEYS, "wlistqry11": PATIENT_LEVEL_KEYS}


def normalise(item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in item.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            v = [normalise(x) for x in v]
        if v in ("", []) or k == "ScheduledProcedureStepStatus":
            continue
        out[k] = v
    return out


def answers(responses: list[Any], without: frozenset[str] = frozenset()) -> list[str]:
    items = [normalise(comparable(r)) for r in responses]
    return sorted(repr(sorted((k, v) for k, v in i.items() if k not in without))
                  for i in items)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, BrokerProcess]]:
    root = tmp_path_factory.mktemp("wlist")
    offis = root / "db" / "OFFIS"
    offis.mkdir(parents=True)
    (offis / "lockfile").touch()
    for dump in sorted((DCMTK_EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump")):
        dump_to_dicom(dump, offis / f"{dump.stem}.wl")
    port = free_port()
    wlm = subprocess.Popen(["wlmscpfs", "-dfp", str(root / "db"), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker = BrokerProcess(root)
    out = subprocess.run([str(BIN / "mwl-broker"), "import-worklist", str(root / "db"),
                          "-o", f"database.path={broker.db}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "10 worklist item(s) imported" in out.stdout
    try:
        wait_for_port(port)
        broker.start()
        yield port, broker
    finally:
        broker.stop()
        wlm.terminate()
        wlm.wait(10)


def queries(tmp: Path) -> list[tuple[str, Path]]:
    out = [(q.stem, dump_to_dicom(q, tmp / f"{q.stem}.dcm"))
           for q in sorted((DCMTK_EXAMPLES / "wlistqry").glob("*.dump"))]
    out += [(name, dump_to_dicom("", tmp / f"{name}.dcm", text))
            for name, text in EXTRA_QUERIES.items()]
    return out


def test_every_query_answers_like_wlmscpfs(peers: tuple[int, BrokerProcess],
                                           tmp_path: Path) -> None:
    wlm_port, broker = peers
    compared = 0
    differences = {}
    for name, query in queries(tmp_path):
        theirs, _ = findscu(wlm_port, "OFFIS", query, tmp_path / "a")
        ours, _ = findscu(broker.dicom_port, "MWLBROKER", query, tmp_path / "b")
        if answers(theirs) != answers(ours):
            differences[name] = (len(theirs), len(ours))
            ignored = frozenset(EXPECTED_KEY_DIFFERENCES.get(name, ()))
            if ignored:
                assert answers(theirs, ignored) == answers(ours, ignored), name
        compared += 1
    assert compared == 13 + len(EXTRA_QUERIES)
    assert set(differences) == set(EXPECTED_COUNTS) | set(EXPECTED_KEY_DIFFERENCES), differences
    for name, counts in EXPECTED_COUNTS.items():
        assert differences[name] == counts, name


def test_example_queries_really_match_something(peers: tuple[int, BrokerProcess],
                                                tmp_path: Path) -> None:
    """Guard against a comparison of two empty answers everywhere."""
    _, broker = peers
    counts = {}
    for name, query in queries(tmp_path):
        ours, _ = findscu(broker.dicom_port, "MWLBROKER", query, tmp_path / "b")
        counts[name] = len(ours)
    assert counts["wlistqry0"] == 10
    assert counts["wlistqry5"] == 6  # SPS Start Time 120000- with no date
    assert counts["patient_id_single"] == 3  # three items for AV35674
    assert counts["modality_single"] >= 1
    assert counts["date_range"] >= 2
    assert 0 < counts["uid_list"] <= 2
