"""``mwl-broker map order.json``: a FHIR Bundle or resource through the intake path as a dry
run: the events and worklist attributes it makes, or its OperationOutcome; nothing stored."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from broker import cli
from tests.support.fhir import appointment, encounter, order_bundle, patient, service_request


def run_map(tmp_path: Path, body: Any, name: str = "order.json") -> tuple[int, dict[str, Any]]:
    config = tmp_path / "broker.yaml"
    config.write_text(f"database:\n  path: {tmp_path / 'broker.sqlite'}\n", encoding="utf-8")
    source = tmp_path / name
    source.write_text(json.dumps(body) if not isinstance(body, str) else body, "utf-8")
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["map", "-c", str(config), str(source)])
    result: dict[str, Any] = json.loads(out.getvalue())
    return code, result


def test_a_bundle_prints_its_order_and_stores_nothing(tmp_path: Path) -> None:
    code, result = run_map(tmp_path, order_bundle(), "order.txt")  # found by its content
    assert code == 0
    assert result["outcome"]["type"] == "transaction-response"
    patient_write, order_write = result["writes"]
    assert patient_write["events"][0]["event"] == "patient_update"
    [event] = order_write["events"]
    assert (event["event"], event["action"], event["status"]) == ("order", "upsert",
                                                                  "SCHEDULED")
    assert event["patient"]["00100020"]["Value"] == ["FP1"]
    assert event["procedure"]["00080050"]["Value"] == ["FACC1"]
    assert event["steps"][0]["00400001"]["Value"] == ["CT01"]
    assert order_write["study_uid"] == event["procedure"]["0020000D"]["Value"][0]
    # nothing was kept: the same Bundle creates again
    code, again = run_map(tmp_path, order_bundle())
    assert [w["status"] for w in again["writes"]] == ["201 Created", "201 Created"]


def test_an_invalid_resource_prints_the_operation_outcome(tmp_path: Path) -> None:
    bad = service_request(subject="Patient/none")
    bad["intent"] = "wish"
    code, result = run_map(tmp_path, bad)
    assert code == 1 and result["writes"] == []
    assert result["outcome"]["issue"][0]["expression"] == ["ServiceRequest.intent"]
    code, result = run_map(tmp_path, patient())
    assert code == 0 and result["writes"][0]["status"] == "201 Created"
    code, result = run_map(tmp_path, "{broken")
    assert code == 1 and result["outcome"]["issue"][0]["code"] == "structure"


def test_a_dry_run_sees_the_bundles_encounter_and_appointment(tmp_path: Path) -> None:
    bundle = order_bundle()
    request = bundle["entry"][1]
    request["resource"]["encounter"] = {"reference": "urn:uuid:visit"}
    bundle["entry"] += [
        {"fullUrl": "urn:uuid:visit", "resource": encounter(visit="V42"),
         "request": {"method": "POST", "url": "Encounter"}},
        {"fullUrl": "urn:uuid:booking", "resource": appointment(request["fullUrl"]),
         "request": {"method": "POST", "url": "Appointment"}}]
    code, result = run_map(tmp_path, bundle)
    assert code == 0
    [event] = result["writes"][-1]["events"]  # the ServiceRequest is stored last
    assert event["procedure"]["00380010"]["Value"] == ["V42"]  # Admission ID
    assert event["procedure"]["00380300"]["Value"] == ["Ward 5, bed 2"]
    assert event["steps"][0]["00400001"]["Value"] == ["CT02"]  # the Appointment's station
    assert event["steps"][0]["00400003"]["Value"] == ["144500"]
