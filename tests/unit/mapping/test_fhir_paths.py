"""The fast FHIRPath subset gives what fhirpathpy gives, and leaves the rest to it; the R4
model read from fhirpathpy's files is fhirpathpy's; loading the shipped mappings needs no
fhirpathpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from broker.mapping.fhir_model import r4
from broker.mapping.fhir_paths import compile_fast
from broker.mapping.schema import load_mappings
from tests.support.fhir import appointment, encounter, patient, service_request

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


def resources() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(ServiceRequest, the mapping's variables) pairs."""
    plain = service_request(study_uid="1.2.3")
    odd = service_request()
    odd["identifier"][0]["type"]["coding"].append({"code": "ACSN"})  # two codes: no match
    odd["code"] = {"coding": [{"code": "a"}, {"code": "b", "display": "B"}]}
    odd["note"] = [{"text": "x"}, {"authorString": "y"}, {"text": "z"}]
    del odd["performer"]
    bare = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/1"}}
    many = patient()
    many["name"].append({"use": "nickname", "family": "N", "given": ["A", "B"]})
    many["identifier"].append({"system": "s", "value": "v"})
    visit, booking = encounter(), appointment("ServiceRequest/1")
    visit["identifier"].insert(0, {"system": "s", "value": "old"})  # not the official one
    booking["participant"].insert(0, {"actor": {"display": "nurse"}, "status": "accepted"})
    empty = {"patient": {"resourceType": "Patient"}, "encounter": {"resourceType": "Encounter"},
             "appointment": {"resourceType": "Appointment"}}
    return [(plain, {**empty, "patient": patient(), "encounter": encounter(),
                     "appointment": appointment("ServiceRequest/1")}),
            (odd, {**empty, "patient": many, "encounter": visit, "appointment": booking}),
            (bare, empty)]


def expressions() -> list[str]:
    fhir = load_mappings(MAPPINGS).fhir
    assert fhir is not None
    shipped = {t for block in (fhir.patient, fhir.procedure, fhir.steps) for f in block
               for t, _ in f.paths}
    return sorted(shipped | {"note.text", "code.coding.code", "code.coding.first().display",
                             "%patient.name.given", "identifier.where(system='s').value",
                             "%encounter.location.location.display", "%appointment.start",
                             "subject.reference", "meta.versionId",
                             "identifier.where(type.coding.code.exists()).value",
                             "%patient.name.where(given.exists()).family",
                             "note.where(authorString.exists()).text"})


@pytest.mark.parametrize("text", expressions())
def test_the_fast_subset_agrees_with_fhirpathpy(text: str) -> None:
    fast = compile_fast(text)
    assert fast is not None, text
    slow = compile_fhirpath(text, models["r4"])
    for resource, env in resources():
        assert fast(resource, env) == slow(resource, env), (text, resource)


@pytest.mark.parametrize("text", [
    "occurrence", "extension.value", "identifier.exists()", "identifier[0].value", "foo",
    "identifier.where(value.exists(x))", "identifier.where(value.empty())",
    "identifier.where(foo.exists())",
    "code.coding.where(code = 'a' or code = 'b')", "%other.name", "status = 'active'",
    "performer.where(type='Device'", "'a'.b"])
def test_the_rest_is_left_to_fhirpathpy(text: str) -> None:
    assert compile_fast(text) is None


def test_the_model_read_from_the_files_is_fhirpathpys() -> None:
    assert r4() == models["r4"]


def test_loading_the_shipped_mappings_imports_no_fhirpathpy() -> None:
    """Its parser (ANTLR) and four FHIR models cost ~12 MB of every broker's memory."""
    code = ("import sys; from pathlib import Path; from broker.mapping.schema import "
            f"load_mappings; m = load_mappings(Path({str(MAPPINGS)!r})); assert m.fhir; "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in "
            "('fhirpathpy', 'antlr4')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=MAPPINGS.parent)
    assert out.stdout.strip() == "[]"
