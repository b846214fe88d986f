"""What a FHIR write asks for: the resource, how it names its target (logical id, a
conditional identifier) and where it sits in its Bundle; identifier search parameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from broker.fhir.outcome import INVALID, FhirError

#: the order the entries of a Bundle are stored in (what others reference comes first)
ORDER = {"Patient": 0, "Coverage": 1, "Encounter": 2, "Appointment": 3, "ServiceRequest": 4}


@dataclass(frozen=True, slots=True)
class Identifier:
    """``system|value`` (``system`` None: any system; '' : none)."""

    system: str | None
    value: str

    def __str__(self) -> str:
        return self.value if self.system is None else f"{self.system}|{self.value}"


def parse_identifier(text: str, where: str = "identifier") -> Identifier:
    system, bar, value = text.partition("|")
    if not bar:
        system, value = "", text
        if not value:
            raise FhirError.one(INVALID, "invalid", f"{where}: give system|value", where)
        return Identifier(None, value)
    if not value:
        raise FhirError.one(INVALID, "invalid", f"{where}: {text!r} has no value", where)
    return Identifier(system, value)


def condition(query: str, where: str) -> Identifier:
    """``identifier=system|value`` (If-None-Exist, a conditional URL): the identifier."""
    name, eq, value = query.partition("=")
    if name != "identifier" or not eq:
        raise FhirError.one(INVALID, "not-supported", f"{where}: only identifier=system|value "
                            f"is supported, not {query[:80]!r}", where)
    return parse_identifier(unquote(value), where)


@dataclass(slots=True)
class Write:
    """One resource to store (a Bundle entry, or the body of a POST/PUT)."""

    resource: dict[str, Any]
    method: str = "POST"
    logical_id: str = ""  # PUT Type/id
    match: Identifier | None = None  # conditional update (PUT Type?identifier=…)
    if_none_exist: Identifier | None = None  # conditional create
    full_url: str = ""
    index: int | None = None  # position in the Bundle
    refs: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.resource.get("resourceType", ""))

    @property
    def where(self) -> str:
        """FHIRPath of the resource in its request (``Bundle.entry[2].resource``)."""
        return self.type if self.index is None else f"Bundle.entry[{self.index}].resource"


def key_identifier(resource: dict[str, Any]) -> tuple[str, str]:
    """The identifier a resource is known by (a repost of it finds the stored one): for an
    order its placer number (type PLAC), else its accession number (ACSN); for a patient
    its MR; else the first identifier with a value."""
    idents = [i for i in resource.get("identifier", []) or []
              if isinstance(i, dict) and i.get("value")]
    for code in ("PLAC", "ACSN", "MR"):
        for ident in idents:
            codes = [c.get("code") for c in (ident.get("type") or {}).get("coding", []) or []]
            if code in codes:
                return str(ident.get("system") or ""), str(ident["value"])
    if idents:
        return str(idents[0].get("system") or ""), str(idents[0]["value"])
    return "", ""


def digest(resource: dict[str, Any]) -> str:
    """A digest of the canonical JSON of the resource without its id and meta."""
    content = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def rewrite_references(value: Any, refs: dict[str, str]) -> Any:
    """``reference`` values naming another entry's fullUrl replaced by ``Type/id``."""
    if isinstance(value, dict):
        out = {k: rewrite_references(v, refs) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in refs:
            out["reference"] = refs[ref]
        return out
    if isinstance(value, list):
        return [rewrite_references(v, refs) for v in value]
    return value


def dangling(value: Any, path: str) -> str:
    """FHIRPath of the first ``urn:uuid:``/``urn:oid:`` reference left unresolved ('' none)."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref.startswith(("urn:uuid:", "urn:oid:")):
            return path
        for k, v in value.items():
            found = dangling(v, f"{path}.{k}")
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = dangling(v, f"{path}[{i}]")
            if found:
                return found
    return ""
