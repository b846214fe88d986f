"""Loading the ``fhir:`` block of a mapping file (FHIR R4 ServiceRequest → worklist), every
problem as file:line, like the HL7 mappings (broker.mapping.schema calls it)."""

from __future__ import annotations

import difflib
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict

from broker.mapping.fhir_model import r4
from broker.mapping.fhir_paths import compile_fast
from broker.mapping.fhir_specs import FHIR_ACTIONS, Compiled, FhirField, FhirMapping, FhirStatusRule
from broker.mapping.fhir_transforms import FHIR_TRANSFORMS, FHIR_VR_TRANSFORM
from broker.mapping.fields import BACKSLASH_ERROR, Doc, FieldReader, has_backslash
from broker.model.orders import StepStatus

FHIR_KEYS = ("servicerequest",)
SERVICE_REQUEST_KEYS = ("patient", "procedure", "steps", "status", "study_uid", "absent_steps")
FIELD_KEYS = ("path", "transform", "default", "value", "required")
#: ServiceRequest.status and .intent (required bindings of FHIR R4)
REQUEST_STATUS = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                  "unknown")
REQUEST_INTENT = ("proposal", "plan", "directive", "order", "original-order", "reflex-order",
                  "filler-order", "instance-order", "option")
#: resources an expression is tried on at load (a typo in a function name fails there, and
#: so does a %variable other than %patient, %encounter and %appointment)
_PROBE = ({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
           "subject": {"reference": "Patient/x"}, "identifier": [{"value": "1"}]},
          {"patient": {"resourceType": "Patient", "name": [{"family": "X"}]},
           "encounter": {"resourceType": "Encounter", "status": "in-progress"},
           "appointment": {"resourceType": "Appointment", "status": "booked"}})


def compile_expression(text: str) -> Compiled:
    """The FHIRPath expression compiled (and, outside the fast subset, tried once by
    fhirpathpy); raises ValueError saying why not."""
    fast = compile_fast(text)  # the same answers, without fhirpathpy's interpreter
    if fast is not None:  # the subset's grammar is FHIRPath's, its names the model's
        return fast
    from fhirpathpy import compile as compile_fhirpath  # the ANTLR parser: only if needed
    try:
        fn: Compiled = compile_fhirpath(text, r4())
        fn(*_PROBE)
    except Exception as exc:  # fhirpathpy raises its parser's and evaluator's own kinds
        raise ValueError(f"FHIRPath {text!r}: {str(exc).strip() or type(exc).__name__}"
                         ) from exc
    return fn


def read_fhir(reader: FieldReader, file: str, doc: Any, line: int) -> FhirMapping | None:
    if not isinstance(doc, Doc):
        reader.error(file, line, "fhir must be a mapping with key servicerequest")
        return None
    for key in doc:
        if key not in FHIR_KEYS:
            reader.unknown_key(file, doc, key, FHIR_KEYS, "fhir key")
    sr = doc.get("servicerequest")
    if not isinstance(sr, Doc):
        reader.error(file, doc.lines.get("servicerequest", doc.line),
                     "fhir.servicerequest must map patient, procedure, steps and status")
        return None
    for key in sr:
        if key not in SERVICE_REQUEST_KEYS:
            reader.unknown_key(file, sr, key, SERVICE_REQUEST_KEYS, "fhir.servicerequest key")
    blocks = {}
    for name in ("patient", "procedure", "steps"):
        blocks[name] = _fields(reader, file, sr.get(name), sr.lines.get(name, sr.line), name)
    if not any(f.keyword == "PatientID" for f in blocks["patient"]):
        reader.error(file, sr.lines.get("patient", sr.line), "patient needs a PatientID mapping")
    status = _status_table(reader, file, sr.get("status"), sr.lines.get("status", sr.line))
    uid = sr.get("study_uid", {}) or {}
    missing = str(uid.get("missing", "generate")) if isinstance(uid, dict) else "?"
    if missing not in ("generate", "reject"):
        at = uid.lines.get("missing", uid.line) if isinstance(uid, Doc) else sr.lines.get(
            "study_uid", sr.line)
        reader.error(file, at, "study_uid.missing must be generate or reject")
    seed = uid.get("seed", ["AccessionNumber", "PlacerOrderNumberImagingServiceRequest"]
                   ) if isinstance(uid, dict) else []
    for keyword in seed if isinstance(seed, list) else [seed]:
        if keyword not in keyword_dict:
            reader.error(file, sr.lines.get("study_uid", sr.line),
                         f"study_uid.seed: {keyword!r} is not a DICOM keyword")
    absent = str(sr.get("absent_steps", "cancel"))
    if absent not in ("cancel", "delete"):
        reader.error(file, sr.lines.get("absent_steps", sr.line),
                     "absent_steps must be cancel or delete")
    return FhirMapping(blocks["patient"], blocks["procedure"], blocks["steps"], status, missing,
                       tuple(str(s) for s in (seed if isinstance(seed, list) else [seed])),
                       absent, f"{file}:{sr.line}")


def _status_table(reader: FieldReader, file: str, doc: Any, line: int
                  ) -> dict[str, FhirStatusRule]:
    if not isinstance(doc, Doc):
        reader.error(file, line, "status must map 'status_intent' (active_order) or 'status' "
                     "(revoked) to {action, status}")
        return {}
    table: dict[str, FhirStatusRule] = {}
    for key, rule in doc.items():
        at = doc.lines[key]
        status, _, intent = str(key).partition("_")
        if status not in REQUEST_STATUS:
            reader.error(file, at, f"status {key!r}: {status!r} is not a ServiceRequest status "
                         f"({', '.join(REQUEST_STATUS)})")
        if intent and intent not in REQUEST_INTENT:
            reader.error(file, at, f"status {key!r}: {intent!r} is not a ServiceRequest intent "
                         f"({', '.join(REQUEST_INTENT)})")
        if not isinstance(rule, Doc):
            reader.error(file, at, f"status {key!r} must be {{action: …, status: …}}")
            continue
        for k in rule:
            if k not in ("action", "status"):
                reader.unknown_key(file, rule, k, ("action", "status"), "status rule key")
        action = str(rule.get("action", ""))
        if action not in FHIR_ACTIONS:
            reader.error(file, at, f"status {key!r}: action must be one of "
                         + ", ".join(FHIR_ACTIONS))
            continue
        try:
            step_status = StepStatus(str(rule.get("status", "SCHEDULED")).upper())
        except ValueError:
            reader.error(file, at, f"status {key!r}: status must be one of "
                         + ", ".join(s.value for s in StepStatus))
            continue
        table[str(key)] = FhirStatusRule(action, step_status)
    return table


def _fields(reader: FieldReader, file: str, doc: Any, line: int, what: str
            ) -> tuple[FhirField, ...]:
    if not isinstance(doc, Doc):
        reader.error(file, line, f"{what} must map DICOM keywords to FHIRPath expressions")
        return ()
    out = []
    for keyword, spec in doc.items():
        field = _field(reader, file, doc.lines[keyword], str(keyword), spec)
        if field is not None:
            out.append(field)
    return tuple(out)


def _field(reader: FieldReader, file: str, line: int, keyword: str, spec: Any
           ) -> FhirField | None:
    if keyword not in keyword_dict:
        close = difflib.get_close_matches(keyword, list(keyword_dict), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        reader.error(file, line, f"{keyword!r} is not a DICOM keyword{hint}")
        return None
    tag = keyword_dict[keyword]
    vr, vm = dictionary_VR(tag), dictionary_VM(tag)
    if isinstance(spec, str | list):
        spec = Doc({"path": spec})
        spec.line, spec.lines = line, {"path": line}
    if not isinstance(spec, Doc):
        reader.error(file, line, f"{keyword}: expected an expression, a list of them or a "
                     "mapping")
        return None
    for key in spec:
        if key not in FIELD_KEYS:
            reader.unknown_key(file, spec, key, FIELD_KEYS, f"option of {keyword}")
    texts = spec.get("path", [])
    texts = [texts] if isinstance(texts, str) else texts or []
    paths = []
    for text in texts:
        try:
            paths.append((str(text), compile_expression(str(text))))
        except ValueError as exc:
            reader.error(file, spec.lines.get("path", line), f"{keyword}: {exc}")
    if "value" not in spec and not texts:
        reader.error(file, line, f"{keyword}: give a path or a constant value")
    transforms = _transforms(reader, file, spec.lines.get("transform", line), keyword,
                             spec.get("transform"))
    needed = FHIR_VR_TRANSFORM.get(vr)
    if texts and needed and not (transforms and transforms[0][0] == needed):
        reader.error(file, line, f"{keyword} has VR {vr}: add 'transform: {needed}'")
    for option in ("value", "default"):
        if option in spec and has_backslash(vr, spec[option]):
            reader.error(file, spec.lines.get(option, line),
                         BACKSLASH_ERROR.format(keyword=keyword, vr=vr))
    return FhirField(keyword, vr, vr == "SQ" or vm != "1", tuple(paths), tuple(transforms),
                     spec.get("default"), spec.get("value"), bool(spec.get("required", False)),
                     f"{file}:{line}")


def _transforms(reader: FieldReader, file: str, line: int, keyword: str, spec: Any
                ) -> list[tuple[str, Any, Any]]:
    def check(name: str, param: Any, kind: str | None) -> str:
        table = param.get("systems") if kind == "dict" and isinstance(param, dict) else param
        if (kind == "table" or (kind == "dict" and table is not None)) and str(
                table) not in reader.tables:
            return f"lookup table {table!r} is not defined"
        return ""
    return reader.transform_list(file, line, keyword, spec, FHIR_TRANSFORMS, "FHIR transform",
                                 check)


def read_fhir_blocks(reader: FieldReader, docs: list[tuple[Any, str, int]]
                     ) -> FhirMapping | None:
    """The one ``fhir:`` block of the folder's files (None: the folder has none)."""
    found: FhirMapping | None = None
    for doc, file, line in docs:
        mapping = read_fhir(reader, file, doc, line)
        if found is not None:
            reader.error(file, line, f"fhir is defined twice (also at {found.where})")
        found = found or mapping
    return found
