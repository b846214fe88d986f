"""fhir.resources validation as OperationOutcome issues with FHIRPath expressions, and the
Bundle reading (entries, conditions, order, references)."""

from __future__ import annotations

import pytest

from broker.fhir.bundle import read_bundle
from broker.fhir.outcome import FhirError, Issue
from broker.fhir.requests import (
    Identifier,
    condition,
    dangling,
    digest,
    key_identifier,
    parse_identifier,
    rewrite_references,
)
from broker.fhir.validate import fhirpath, validate
from tests.support.fhir import order_bundle, patient, service_request


@pytest.mark.parametrize(("loc", "expected"), [
    (("code", "coding", 0, "system"), "ServiceRequest.code.coding[0].system"),
    (("_status", "extension", 1, "url"), "ServiceRequest.status.extension[1].url"),
    (("class_fhir", "code"), "ServiceRequest.class.code"),
    (("birthDate__ext",), "ServiceRequest.birthDate"),
    (("identifier", 2, "function-after[x]", "value"), "ServiceRequest.identifier[2].value"),
])
def test_pydantic_locations_become_fhirpath(loc: tuple[int | str, ...], expected: str) -> None:
    assert fhirpath("ServiceRequest", loc) == expected


def issues(resource: object, expected: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(FhirError) as info:
        validate(resource, expected)
    assert info.value.status == 400
    return [(i.code, i.expression) for i in info.value.issues]


def test_validation_names_each_element() -> None:
    sr = service_request()
    sr["code"]["coding"][0]["system"] = 5
    sr["status"] = "bogus"
    sr["bogus"] = 1
    del sr["subject"]
    assert sorted(issues(sr)) == [
        ("code-invalid", "ServiceRequest.status"), ("required", "ServiceRequest.subject"),
        ("structure", "ServiceRequest.bogus"), ("value", "ServiceRequest.code.coding[0].system")]
    bad = patient()
    bad["gender"] = "f"
    bad["birthDate"] = "1970-02-30x"
    assert sorted(issues(bad)) == [("code-invalid", "Patient.gender"),
                                   ("value", "Patient.birthDate")]
    assert issues([]) == [("structure", "")]
    assert issues({"resourceType": "Observation"}) == [("not-supported", "Observation")]
    assert issues(patient(), "ServiceRequest") == [("invalid", "Patient")]
    assert validate(patient()) == "Patient"


def test_issues_move_under_their_bundle_entry() -> None:
    error = FhirError(400, [Issue("value", "x", "Patient.name[0].given"),
                            Issue("value", "y", "Patient"), Issue("value", "z", ""),
                            Issue("value", "w", "Bundle.entry[0].request")])
    moved = error.at("Bundle.entry[3].resource")
    assert [i.expression for i in moved.issues] == [
        "Bundle.entry[3].resource.name[0].given", "Bundle.entry[3].resource",
        "Bundle.entry[3].resource", "Bundle.entry[0].request"]


def test_a_bundle_is_read_patients_first_with_its_conditions() -> None:
    bundle = order_bundle()
    bundle["entry"].reverse()
    kind, writes = read_bundle(bundle)
    assert kind == "transaction"
    first, second = writes
    assert not isinstance(first, FhirError) and not isinstance(second, FhirError)
    assert (first.type, first.index, first.if_none_exist) == (
        "Patient", 1, Identifier("urn:oid:1.2.826.0.1.99.1", "FP1"))
    assert (second.type, second.method, second.match) == (
        "ServiceRequest", "PUT", Identifier("urn:oid:1.2.826.0.1.99.2", "FPLC1"))
    assert second.where == "Bundle.entry[0].resource"


def test_bundle_faults() -> None:
    with pytest.raises(FhirError) as info:
        read_bundle({"resourceType": "Bundle", "type": "document"})
    assert info.value.issues[0].expression == "Bundle.type"
    bundle = order_bundle()
    bundle["entry"][0]["request"]["method"] = "DELETE"
    bundle["entry"][1]["request"]["url"] = "Patient"
    _, writes = read_bundle(bundle)
    assert [w.issues[0].expression for w in writes if isinstance(w, FhirError)] == [
        "Bundle.entry[0].request.method", "Bundle.entry[1].request.url"]


def test_identifiers_conditions_and_references() -> None:
    assert parse_identifier("s|v") == Identifier("s", "v")
    assert parse_identifier("|v") == Identifier("", "v")
    assert parse_identifier("v") == Identifier(None, "v")
    assert condition("identifier=urn%3Aoid%3A1.2|A", "x") == Identifier("urn:oid:1.2", "A")
    with pytest.raises(FhirError):
        condition("name=x", "If-None-Exist")
    with pytest.raises(FhirError):
        parse_identifier("s|")
    assert key_identifier(service_request()) == ("urn:oid:1.2.826.0.1.99.2", "FPLC1")
    assert key_identifier(patient()) == ("urn:oid:1.2.826.0.1.99.1", "FP1")
    assert key_identifier({"identifier": [{"value": "x"}]}) == ("", "x")
    sr = service_request(subject="urn:uuid:p")
    sr["basedOn"] = [{"reference": "urn:uuid:other"}]
    done = rewrite_references(sr, {"urn:uuid:p": "Patient/1"})
    assert done["subject"] == {"reference": "Patient/1"} and sr["subject"]["reference"] == (
        "urn:uuid:p")
    assert dangling(done, "ServiceRequest") == "ServiceRequest.basedOn[0]"
    assert digest({**patient(), "id": "a", "meta": {"versionId": "3"}}) == digest(patient())
    assert digest(patient("FP2")) != digest(patient())
