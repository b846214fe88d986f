"""``mwl-broker map``: the ingest path of ``serve`` as a dry run (same ACK, same effects,
nothing stored)."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from broker import cli
from broker.config.loading import load_settings
from broker.flows.hl7_in import Ingestor
from broker.mapping.schema import load_mappings
from broker.store.factory import open_store
from tests.support.db import Db
from tests.support.samples import order

CYRILLIC = "ИВАНОВ^ИВАН"


def site(tmp_path: Path) -> Path:
    """A configuration whose sender LEGACY sends ISO 8859-5 without saying so in MSH-18."""
    config = tmp_path / "broker.yaml"
    config.write_text(
        f"database:\n  path: {tmp_path / 'broker.sqlite'}\n"
        "hl7:\n  senders:\n    - application: LEGACY\n      charset: iso8859_5\n",
        encoding="utf-8")
    return config


def run_map(config: Path, message: Path) -> dict[str, object]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["map", "-c", str(config), str(message)])
    result: dict[str, object] = json.loads(out.getvalue())
    result["exit"] = code
    return result


def serve(config: Path, raw: bytes) -> str:
    """What ``serve``'s ingest path answers (its real writer and store)."""
    settings = load_settings(config)
    store = open_store(settings.database)
    mappings = load_mappings(settings.mappings.directory)
    ingestor = Ingestor(store.writer, lambda: mappings, settings.hl7, settings.mllp)
    store.writer.start()
    try:
        return asyncio.run(ingestor.handle(raw, "127.0.0.1:0")).code
    finally:
        store.writer.stop()


def patient_names(path: Path) -> list[str]:
    return [r[0] for r in Db(path).query("SELECT name FROM patients")]


def test_map_applies_the_senders_charset_override_like_serve(tmp_path: Path) -> None:
    config = site(tmp_path)
    raw = order(1, sending_application="LEGACY", patient_name=CYRILLIC).encode("iso8859_5")
    message = tmp_path / "orm.hl7"
    message.write_bytes(raw)
    dry = run_map(config, message)
    assert dry["charset"] == "iso8859_5" and dry["outcome"] == "AA" and dry["exit"] == 0
    assert CYRILLIC in json.dumps(dry["events"], ensure_ascii=False)
    assert Db(tmp_path / "broker.sqlite").tables() == set()  # a dry run stores nothing
    assert serve(config, raw) == "AA"
    assert patient_names(tmp_path / "broker.sqlite") == [CYRILLIC]


def test_map_meets_the_stored_data_and_changes_none_of_it(tmp_path: Path) -> None:
    """A resend of a stored message is a duplicate in map as in serve; map stores nothing."""
    config = site(tmp_path)
    raw = order(2).encode()
    assert serve(config, raw) == "AA"
    message = tmp_path / "orm.hl7"
    message.write_bytes(raw)
    dry = run_map(config, message)
    assert dry["outcome"] == "AA" and dry["duplicate"] is True
    changed = order(2, patient_name="OTHER^NAME").encode()
    message.write_bytes(changed)
    dry = run_map(config, message)
    assert dry["outcome"] == "AE" and dry["exit"] == 1  # same control ID, other content
    assert Db(tmp_path / "broker.sqlite").query("SELECT COUNT(*) FROM message_log") == [(1,)]


@pytest.mark.parametrize("text", [
    "MSH|^~\\&|RIS|HOSP|||20261122||ORM^O01|X1|P|9.9\r",  # a version serve refuses
    "MSH|^~\\&|RIS|HOSP|||20261122||ORM^O01|X2|T|2.3.1\r",  # a processing ID it refuses
])
def test_map_refuses_what_serve_refuses(tmp_path: Path, text: str) -> None:
    config = site(tmp_path)
    message = tmp_path / "bad.hl7"
    message.write_bytes(text.encode())
    dry = run_map(config, message)
    assert dry["outcome"] == serve(config, text.encode()) and dry["exit"] == 1
