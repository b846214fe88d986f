"""Every resource validated with fhir.resources (R4B models, which are FHIR R4 compatible)
before anything is stored, plus the required bindings the models leave to the caller; a
pydantic location becomes a FHIRPath expression (``ServiceRequest.code.coding[0].system``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.fhir.outcome import INVALID, FhirError, Issue

#: the resources /fhir takes (ServiceRequest and Patient make orders; the rest are kept)
TAKEN = ("Patient", "ServiceRequest", "Encounter", "Appointment", "Coverage")
#: required bindings fhir.resources does not check (element → allowed codes)
CODES: dict[str, dict[str, tuple[str, ...]]] = {
    "ServiceRequest": {
        "status": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                   "unknown"),
        "intent": ("proposal", "plan", "directive", "order", "original-order", "reflex-order",
                   "filler-order", "instance-order", "option"),
        "priority": ("routine", "urgent", "asap", "stat"),
    },
    "Patient": {"gender": ("male", "female", "other", "unknown")},
}
REQUIRED = {"ServiceRequest": ("status", "intent", "subject")}
PYDANTIC_CODES = {"missing": "required", "extra_forbidden": "structure"}


def fhirpath(resource_type: str, loc: Sequence[int | str]) -> str:
    """A pydantic error location as FHIRPath: list positions become ``[n]``; the models'
    Python names go back to FHIR's (``class_fhir`` → ``class``, ``birthDate__ext`` →
    ``birthDate``)."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part)
        if name.startswith("_") and len(name) > 1:
            name = name[1:]  # the primitive's extension element: the element itself
        name = name.removesuffix("__ext").removesuffix("_fhir")
        if name.startswith("function-") or name.endswith("]"):
            continue  # pydantic's own validator names
        out += f".{name}"
    return out


def validate(resource: Any, expected: str | None = None) -> str:
    """The resource's type, once fhir.resources and the required bindings accept it; raises
    FhirError (400) naming each element at fault from the resource's type."""
    if not isinstance(resource, dict):
        raise FhirError.one(INVALID, "structure", "a resource must be a JSON object")
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not kind:
        raise FhirError.one(INVALID, "required", "resourceType is missing", "resourceType")
    if expected is not None and kind != expected:
        raise FhirError.one(INVALID, "invalid", f"the body is a {kind}, this URL takes a "
                            f"{expected}", kind)
    if kind not in TAKEN and kind != "Bundle":
        raise FhirError.one(INVALID, "not-supported", f"{kind} is not taken here (only "
                            f"{', '.join(TAKEN)})", kind)
    # imported at the first resource, not at start-up: the R4B models and pydantic cost
    # ~0.3 s and ~20 MB, which a broker taking no FHIR does not need
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    issues = []
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            issues.append(Issue(PYDANTIC_CODES.get(err["type"], "value"),
                                str(err["msg"]), fhirpath(kind, err["loc"])))
    for element in REQUIRED.get(kind, ()):
        if resource.get(element) in (None, "", [], {}) and not any(
                i.expression == f"{kind}.{element}" for i in issues):
            issues.append(Issue("required", f"{kind}.{element} is required (1..1)",
                                f"{kind}.{element}"))
    for element, allowed in CODES.get(kind, {}).items():
        value = resource.get(element)
        if isinstance(value, str) and value not in allowed:
            issues.append(Issue("code-invalid", f"{value!r} is not a code of {kind}."
                                f"{element} ({', '.join(allowed)})", f"{kind}.{element}"))
    if issues:
        raise FhirError(INVALID, issues)
    return kind
