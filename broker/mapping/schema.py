"""Loading and validating the mapping files; every error names its file and line."""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict

from broker.hl7.path import Path, PathError, parse_path
from broker.mapping import names
from broker.mapping.dicom_safe import BACKSLASH_ALLOWED, keyword_vr
from broker.mapping.outbound import (
    COMPLETION_STATES,
    ON_TIMEOUT,
    PLACEHOLDER,
    REQUIREMENTS,
    OutboundRule,
    Template,
    placeholder_error,
    rule_problems,
    template_problems,
)
from broker.mapping.transforms import TRANSFORMS, VR_TRANSFORM, Fn
from broker.model.orders import OrderAction, StepStatus

KINDS = ("order", "patient_update", "patient_merge", "patient_id_change")
TOP_KEYS = ("sections", "messages", "tables", "order_control", "station_rules", "templates",
            "outbound")
OUTBOUND_EVENTS = ("procedure_status", "completion")
RULE_KEYS = {"procedure_status": ("template", "order_status"),
             "completion": ("template", "require", "timeout", "on_timeout", "result_status")}
MESSAGE_KEYS = {"types", "kind", "patient", "prior", "procedure", "steps", "order_control",
                "study_uid", "group", "absent_steps"}
FIELD_KEYS = {"path", "transform", "default", "value", "required", "scope", "unit"}
PATIENT_KEYWORDS = ("PatientID", "IssuerOfPatientID")


class MappingLoadError(ValueError):
    """The mapping set is invalid; ``errors`` are 'file:line: message' lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Doc(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    duplicate_keys: list[tuple[int, str]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Doc:
    loader.flatten_mapping(node)
    doc = _Doc()
    doc.line = node.start_mark.line + 1
    doc.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in doc:
            loader.duplicate_keys.append((key_node.start_mark.line + 1, str(key)))
        doc[key] = loader.construct_object(value_node, deep=True)
        doc.lines[key] = key_node.start_mark.line + 1
    return doc


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class UnitSpec:
    path: Path
    factors: dict[str, float]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    keyword: str
    vr: str
    multi: bool
    paths: tuple[Path, ...]
    transforms: tuple[tuple[str, Fn, Any], ...]
    structural: bool
    default: Any
    value: Any
    required: bool
    group_only: bool
    unit: UnitSpec | None
    where: str


@dataclass(frozen=True, slots=True)
class StationRule:
    when: tuple[tuple[str, Path | None, tuple[str, ...]], ...]
    set: dict[str, Any]
    where: str


@dataclass(frozen=True, slots=True)
class MessageMapping:
    types: tuple[str, ...]
    kind: str
    patient: tuple[FieldSpec, ...]
    prior: tuple[FieldSpec, ...]
    procedure: tuple[FieldSpec, ...]
    steps: tuple[FieldSpec, ...]
    step_segments: tuple[str, ...]
    group_segment: str
    order_code: Path | None
    order_status: Path | None
    study_uid_missing: str
    study_uid_seed: tuple[str, ...]
    absent_steps: str
    where: str


@dataclass(frozen=True, slots=True)
class OrderRule:
    action: OrderAction
    status: StepStatus


@dataclass
class MappingSet:
    messages: dict[str, MessageMapping]
    tables: dict[str, dict[str, str]]
    order_control: dict[str, OrderRule]
    station_rules: list[StationRule]
    files: list[str]
    templates: dict[str, Template] = field(default_factory=dict)
    outbound: dict[str, OutboundRule] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    def for_type(self, message_type: str) -> MessageMapping | None:
        return self.messages.get(message_type)


class _Builder:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.sections: dict[str, tuple[_Doc, str]] = {}
        self.tables: dict[str, dict[str, str]] = {}
        self.order_control: dict[str, OrderRule] = {}
        self.station_rules: list[StationRule] = []
        self.messages: dict[str, MessageMapping] = {}
        self.templates: dict[str, Template] = {}
        self.outbound: dict[str, OutboundRule] = {}
        self._outbound_docs: list[tuple[_Doc, str]] = []
        self._message_docs: list[tuple[_Doc, str]] = []
        self._rule_docs: list[tuple[Any, str, int]] = []

    def error(self, file: str, line: int, text: str) -> None:
        self.errors.append(f"{file}:{line}: {text}")

    def unknown_key(self, file: str, doc: _Doc, key: Any, allowed: Any, what: str) -> None:
        close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.error(file, doc.lines.get(key, doc.line), f"unknown {what} {key!r}{hint}")

    # -- files ------------------------------------------------------------------------------
    def read_file(self, path: FsPath) -> None:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(name, 0, f"cannot read: {exc}")
            return
        loader = _Loader(text)
        loader.duplicate_keys = []
        try:
            doc = loader.get_single_data()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 0
            self.error(name, line, f"YAML syntax: {getattr(exc, 'problem', exc)}")
            return
        finally:
            loader.dispose()
        for line, key in loader.duplicate_keys:
            self.error(name, line, f"duplicate key {key!r}")
        if doc is None:
            return
        if not isinstance(doc, _Doc):
            self.error(name, 1, "the file must be a mapping with keys " + ", ".join(TOP_KEYS))
            return
        for key, value in doc.items():
            line = doc.lines[key]
            if key == "sections":
                self._read_sections(name, value, line)
            elif key == "messages":
                if not isinstance(value, list):
                    self.error(name, line, "messages must be a list")
                    continue
                for item in value:
                    if isinstance(item, _Doc):
                        self._message_docs.append((item, name))
                    else:
                        self.error(name, line, "each message mapping must be a mapping")
            elif key == "tables":
                self._read_tables(name, value, line)
            elif key == "order_control":
                self._read_order_control(name, value, line)
            elif key == "templates":
                self._read_templates(name, value, line)
            elif key == "outbound":
                if isinstance(value, _Doc):
                    self._outbound_docs.append((value, name))
                else:
                    self.error(name, line, "outbound must map an event to {template: …}")
            elif key == "station_rules":
                if not isinstance(value, list):
                    self.error(name, line, "station_rules must be a list")
                    continue
                self._rule_docs += [(rule, name, line) for rule in value]
            else:
                self.unknown_key(name, doc, key, TOP_KEYS, "top-level key")

    def _read_sections(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, _Doc):
            self.error(file, line, "sections must map a name to field mappings")
            return
        for name, body in value.items():
            if name in self.sections:
                self.error(file, value.lines[name], f"section {name!r} is defined twice")
            elif not isinstance(body, _Doc):
                self.error(file, value.lines[name], f"section {name!r} must be a mapping")
            else:
                self.sections[name] = (body, file)

    def _read_tables(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, _Doc):
            self.error(file, line, "tables must map a table name to code: value pairs")
            return
        for name, body in value.items():
            if name in self.tables:
                self.error(file, value.lines[name], f"table {name!r} is defined twice")
            elif not isinstance(body, _Doc):
                self.error(file, value.lines[name], f"table {name!r} must be a mapping")
            else:
                self.tables[str(name)] = {str(k): "" if v is None else str(v)
                                          for k, v in body.items()}

    def _read_templates(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, _Doc):
            self.error(file, line, "templates must map a name to a list of segments")
            return
        for name, body in value.items():
            at = value.lines[name]
            if name in self.templates:
                self.error(file, at, f"template {name!r} is defined twice")
                continue
            if not isinstance(body, list) or not body:
                self.error(file, at, f"template {name!r} must be a list of [SEGMENT, {{n: text}}]")
                continue
            segments = []
            for index, seg in enumerate(body, start=1):
                if (not isinstance(seg, list) or len(seg) != 2 or not isinstance(seg[1], dict)
                        or not re.fullmatch(r"[A-Z][A-Z0-9]{2}", str(seg[0]))):
                    self.error(file, at, f"template {name!r} segment {index}: expected "
                               "[NAME, {field number: text}]")
                    continue
                fields = []
                for number, text in seg[1].items():
                    if not isinstance(number, int) or number < 1:
                        self.error(file, at, f"template {name!r} {seg[0]}: field {number!r} "
                                   "must be a number from 1")
                        continue
                    for placeholder in PLACEHOLDER.findall(str(text)):
                        problem = placeholder_error(placeholder)
                        if problem:
                            self.error(file, at, f"template {name!r} {seg[0]}-{number}: "
                                       f"{problem}")
                    fields.append((number, str(text)))
                segments.append((str(seg[0]), tuple(sorted(fields))))
            if not segments or segments[0][0] != "MSH":
                self.error(file, at, f"template {name!r} must start with MSH")
                continue
            msh = dict(segments[0][1])
            if 9 not in msh or 10 not in msh:
                self.error(file, at, f"template {name!r}: MSH-9 and MSH-10 are required")
                continue
            template = Template(str(name), tuple(segments), msh[9])
            for problem in template_problems(template):
                self.error(file, at, problem)
            self.templates[str(name)] = template

    def _read_outbound(self) -> None:
        for doc, file in self._outbound_docs:
            for event_name, rule in doc.items():
                at = doc.lines[event_name]
                if event_name not in OUTBOUND_EVENTS:
                    self.unknown_key(file, doc, event_name, OUTBOUND_EVENTS, "outbound event")
                    continue
                if not isinstance(rule, dict) or "template" not in rule:
                    self.error(file, at, f"outbound {event_name}: needs template:")
                    continue
                if rule["template"] not in self.templates:
                    self.error(file, at, f"outbound {event_name}: template "
                               f"{rule['template']!r} is not defined")
                    continue
                for k in rule:
                    if k not in RULE_KEYS[event_name] and isinstance(rule, _Doc):
                        self.unknown_key(file, rule, k, RULE_KEYS[event_name],
                                         f"outbound {event_name} key")
                statuses = rule.get("order_status", {}) or {}
                built = OutboundRule(str(rule["template"]),
                                     {str(k): str(v) for k, v in statuses.items()})
                if event_name == "completion":
                    self._completion_rule(file, at, rule, built)
                for problem in rule_problems(str(event_name), built):
                    self.error(file, at, problem)
                self.outbound[str(event_name)] = built

    def _completion_rule(self, file: str, at: int, rule: Any, built: OutboundRule) -> None:
        require = rule.get("require", ["committed", "available"])
        if not isinstance(require, list) or any(r not in REQUIREMENTS for r in require):
            self.error(file, at, "outbound completion: require must be a list of "
                       + " and ".join(REQUIREMENTS) + f", not {require!r}")
        else:
            built.require = tuple(str(r) for r in require)
        timeout = rule.get("timeout", 600)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            self.error(file, at, f"outbound completion: timeout must be seconds, not {timeout!r}")
        else:
            built.timeout = float(timeout)
        on_timeout = rule.get("on_timeout", "send_partial")
        if on_timeout not in ON_TIMEOUT:
            self.error(file, at, "outbound completion: on_timeout must be one of "
                       + ", ".join(ON_TIMEOUT) + f", not {on_timeout!r}")
        else:
            built.on_timeout = str(on_timeout)
        statuses = rule.get("result_status", {}) or {}
        for state, status in statuses.items():
            if state not in COMPLETION_STATES:
                self.error(file, at, f"outbound completion: unknown result_status state "
                           f"{state!r} (use {', '.join(COMPLETION_STATES)})")
            else:
                built.result_status[str(state)] = str(status)

    def _read_order_control(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, _Doc):
            self.error(file, line, "order_control must map 'ORC1_ORC5' to {action, status}")
            return
        for key, rule in value.items():
            at = value.lines[key]
            if not isinstance(rule, _Doc):
                self.error(file, at, f"order_control {key!r} must be {{action: …, status: …}}")
                continue
            for k in rule:
                if k not in ("action", "status"):
                    self.unknown_key(file, rule, k, ("action", "status"), "order_control key")
            try:
                action = OrderAction(str(rule.get("action", "")))
            except ValueError:
                self.error(file, at, f"order_control {key!r}: action must be one of "
                           + ", ".join(a.value for a in OrderAction))
                continue
            try:
                status = StepStatus(str(rule.get("status", "")).upper())
            except ValueError:
                self.error(file, at, f"order_control {key!r}: status must be one of "
                           + ", ".join(s.value for s in StepStatus))
                continue
            if not str(key).replace("_", "").isalnum():
                self.error(file, at, f"order_control key {key!r} must look like NW_SC or CA")
            if str(key) in self.order_control:
                self.error(file, at, f"order_control {key!r} is defined twice")
            self.order_control[str(key)] = OrderRule(action, status)

    # -- fields -----------------------------------------------------------------------------
    def fields(self, file: str, doc: Any, line: int, what: str) -> tuple[FieldSpec, ...]:
        """Compile a field block ({use: …, Keyword: spec, …}) into FieldSpecs."""
        if not isinstance(doc, _Doc):
            self.error(file, line, f"{what} must map DICOM keywords to HL7 paths")
            return ()
        merged: dict[str, tuple[Any, str, int]] = {}
        uses = doc.get("use", [])
        for name in [uses] if isinstance(uses, str) else uses or []:
            if name not in self.sections:
                close = difflib.get_close_matches(str(name), list(self.sections), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(file, doc.lines.get("use", doc.line), f"unknown section {name!r}{hint}")
                continue
            body, body_file = self.sections[name]
            for key, spec in body.items():
                merged[key] = (spec, body_file, body.lines[key])
        for key, spec in doc.items():
            if key != "use":
                merged[key] = (spec, file, doc.lines[key])
        out = []
        for keyword, (spec, f, ln) in merged.items():
            compiled = self.field(f, ln, str(keyword), spec)
            if compiled:
                out.append(compiled)
        return tuple(out)

    def field(self, file: str, line: int, keyword: str, spec: Any) -> FieldSpec | None:
        if keyword not in keyword_dict:
            close = difflib.get_close_matches(keyword, list(keyword_dict), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(file, line, f"{keyword!r} is not a DICOM keyword{hint}")
            return None
        tag = keyword_dict[keyword]
        vr, vm = dictionary_VR(tag), dictionary_VM(tag)
        if isinstance(spec, str | list):
            spec_doc = _Doc({"path": spec})
            spec_doc.line, spec_doc.lines = line, {"path": line}
            spec = spec_doc
        if not isinstance(spec, _Doc):
            self.error(file, line, f"{keyword}: expected a path, a list of paths or a mapping")
            return None
        for key in spec:
            if key not in FIELD_KEYS:
                self.unknown_key(file, spec, key, FIELD_KEYS, f"option of {keyword}")
        raw_paths = spec.get("path", [])
        raw_paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths or []
        paths: list[Path] = []
        for text in raw_paths:
            try:
                paths.append(parse_path(str(text)))
            except PathError as exc:
                self.error(file, spec.lines.get("path", line), f"{keyword}: {exc}")
        if "value" not in spec and not raw_paths:
            self.error(file, line, f"{keyword}: give a path or a constant value")
        transforms = self._transforms(file, spec.lines.get("transform", line), keyword,
                                      spec.get("transform"))
        needed = VR_TRANSFORM.get(vr)
        names = [t[0] for t in transforms]
        if raw_paths and needed and needed not in names and not (
                vr == "SQ" and names and names[0] == "code"):
            self.error(file, line, f"{keyword} has VR {vr}: add 'transform: {needed}'")
        unit = None
        if "unit" in spec:
            unit = self._unit(file, spec.lines["unit"], keyword, spec["unit"])
        for option in ("value", "default"):
            if option in spec and not _plain(spec[option]):
                self.error(file, spec.lines.get(option, line),
                           f"{keyword}: {option} must be text or a number (quote dates and "
                           f"times: '20240101'), or a list of them")
            elif option in spec and _has_backslash(vr, spec[option]):
                self.error(file, spec.lines.get(option, line), _BACKSLASH_ERROR.format(
                    keyword=keyword, vr=vr))
        scope = spec.get("scope", "any")
        if scope not in ("any", "group"):
            self.error(file, spec.lines.get("scope", line), f"{keyword}: scope is any or group")
        return FieldSpec(
            keyword=keyword, vr=vr, multi=vr == "SQ" or vm != "1", paths=tuple(paths),
            transforms=tuple(transforms),
            structural=bool(transforms) and TRANSFORMS[transforms[0][0]][1],
            default=spec.get("default"), value=spec.get("value"),
            required=bool(spec.get("required", False)), group_only=scope == "group",
            unit=unit, where=f"{file}:{line}")

    def _transforms(self, file: str, line: int, keyword: str,
                    spec: Any) -> list[tuple[str, Fn, Any]]:
        if spec is None:
            return []
        items = spec if isinstance(spec, list) else [spec]
        out: list[tuple[str, Fn, Any]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                name, param = item, None
            elif isinstance(item, dict) and len(item) == 1:
                name, param = next(iter(item.items()))
            else:
                self.error(file, line, f"{keyword}: a transform is a name or {{name: parameter}}")
                continue
            if name not in TRANSFORMS:
                close = difflib.get_close_matches(str(name), list(TRANSFORMS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(file, line, f"{keyword}: unknown transform {name!r}{hint}")
                continue
            fn, structural, kind = TRANSFORMS[name]
            if structural and i > 0:
                self.error(file, line, f"{keyword}: transform {name!r} must come first")
            if kind == "table" and str(param) not in self.tables:
                self.error(file, line, f"{keyword}: lookup table {param!r} is not defined")
            if kind == "int" and not isinstance(param, int):
                self.error(file, line, f"{keyword}: {name} needs a whole number")
            if kind == "names" and names.param_error(param):
                self.error(file, line, f"{keyword}: {names.param_error(param)}")
            if kind is None and param is not None:
                self.error(file, line, f"{keyword}: {name} takes no parameter")
            out.append((str(name), fn, param))
        return out

    def _unit(self, file: str, line: int, keyword: str, spec: Any) -> UnitSpec | None:
        if not isinstance(spec, dict) or "path" not in spec or not isinstance(
                spec.get("factors"), dict):
            self.error(file, line, f"{keyword}: unit needs a path and factors {{unit: factor}}")
            return None
        try:
            return UnitSpec(parse_path(str(spec["path"])),
                            {str(k): float(v) for k, v in spec["factors"].items()})
        except (PathError, TypeError, ValueError) as exc:
            self.error(file, line, f"{keyword}: unit: {exc}")
            return None

    # -- messages ---------------------------------------------------------------------------
    def build_messages(self) -> None:
        for doc, file in self._message_docs:
            self._message(file, doc)
        for rule, file, line in self._rule_docs:
            self._station_rule(file, rule, line)

    def _message(self, file: str, doc: _Doc) -> None:
        for key in doc:
            if key not in MESSAGE_KEYS:
                self.unknown_key(file, doc, key, MESSAGE_KEYS, "message mapping key")
        types = doc.get("types")
        types = [types] if isinstance(types, str) else types
        if not types or not all(isinstance(t, str) and "^" in t for t in types):
            self.error(file, doc.line, "types must list message types such as ORM^O01")
            return
        kind = doc.get("kind")
        if kind not in KINDS:
            self.error(file, doc.lines.get("kind", doc.line),
                       f"kind {kind!r} must be one of {', '.join(KINDS)}")
            return
        patient = self.fields(file, doc.get("patient"), doc.lines.get("patient", doc.line),
                              "patient")
        if not any(f.keyword == "PatientID" for f in patient) and "patient" in doc:
            self.error(file, doc.lines["patient"], "patient needs a PatientID mapping")
        prior: tuple[FieldSpec, ...] = ()
        if kind in ("patient_merge", "patient_id_change"):
            prior = self.fields(file, doc.get("prior"), doc.lines.get("prior", doc.line), "prior")
        procedure: tuple[FieldSpec, ...] = ()
        steps: tuple[FieldSpec, ...] = ()
        step_segments: tuple[str, ...] = ()
        order_code = order_status = None
        if kind == "order":
            procedure = self.fields(file, doc.get("procedure"),
                                    doc.lines.get("procedure", doc.line), "procedure")
            steps_doc = doc.get("steps")
            if not isinstance(steps_doc, _Doc) or "fields" not in steps_doc:
                self.error(file, doc.lines.get("steps", doc.line),
                           "steps needs foreach (segment) and fields")
            else:
                foreach = steps_doc.get("foreach", "OBR")
                step_segments = tuple([foreach] if isinstance(foreach, str) else foreach)
                steps = self.fields(file, steps_doc["fields"], steps_doc.lines["fields"], "steps")
            oc = doc.get("order_control", {"code": "ORC-1", "status": "ORC-5"})
            try:
                order_code = parse_path(str(oc.get("code", "ORC-1")))
                order_status = parse_path(str(oc.get("status", "ORC-5")))
            except (PathError, AttributeError) as exc:
                self.error(file, doc.lines.get("order_control", doc.line), f"order_control: {exc}")
        uid = doc.get("study_uid", {}) or {}
        missing = str(uid.get("missing", "generate")) if isinstance(uid, dict) else "?"
        if missing not in ("generate", "reject"):
            self.error(file, doc.lines.get("study_uid", doc.line),
                       "study_uid.missing must be generate or reject")
        seed = tuple(uid.get("seed", ["AccessionNumber", "RequestedProcedureID"])) if isinstance(
            uid, dict) else ()
        absent = str(doc.get("absent_steps", "cancel"))
        if absent not in ("cancel", "delete"):
            self.error(file, doc.lines.get("absent_steps", doc.line),
                       "absent_steps must be cancel or delete")
        mapping = MessageMapping(
            types=tuple(types), kind=kind, patient=patient, prior=prior, procedure=procedure,
            steps=steps, step_segments=step_segments, group_segment=str(doc.get("group", "ORC")),
            order_code=order_code, order_status=order_status, study_uid_missing=missing,
            study_uid_seed=seed, absent_steps=absent, where=f"{file}:{doc.line}")
        for t in types:
            if t in self.messages:
                self.error(file, doc.line,
                           f"{t} is mapped twice (also at {self.messages[t].where})")
            self.messages[t] = mapping

    def _station_rule(self, file: str, rule: Any, line: int) -> None:
        if not isinstance(rule, _Doc) or not isinstance(rule.get("when"), dict) or not isinstance(
                rule.get("set"), dict):
            self.error(file, getattr(rule, "line", line), "a station rule needs when: and set:")
            return
        conditions = []
        for key, wanted in rule["when"].items():
            values = tuple(str(v) for v in (wanted if isinstance(wanted, list) else [wanted]))
            path = None
            if "-" in str(key):
                try:
                    path = parse_path(str(key))
                except PathError as exc:
                    self.error(file, rule.line, f"station rule: {exc}")
                    continue
            elif key not in keyword_dict:
                self.error(file, rule.line, f"station rule: {key!r} is not a DICOM keyword")
                continue
            conditions.append((str(key), path, values))
        for key in rule["set"]:
            if key not in keyword_dict:
                self.error(file, rule.line, f"station rule: {key!r} is not a DICOM keyword")
            elif _has_backslash(keyword_vr(key), rule["set"][key]):
                self.error(file, rule.line, "station rule: " + _BACKSLASH_ERROR.format(
                    keyword=key, vr=keyword_vr(key)))
        settings = {k: [str(x) for x in v] if isinstance(v, list) else str(v)
                    for k, v in rule["set"].items()}
        self.station_rules.append(StationRule(tuple(conditions), settings, f"{file}:{rule.line}"))


_BACKSLASH_ERROR = ("{keyword}: a backslash separates values of a DICOM {vr}; write several "
                    "values as a YAML list")


def _has_backslash(vr: str, value: Any) -> bool:
    """A constant that would change its value multiplicity once stored."""
    if isinstance(value, list):
        return any(_has_backslash(vr, v) for v in value)
    return vr not in BACKSLASH_ALLOWED and "\\" in str(value)


def _plain(value: Any) -> bool:
    """Text, a number, or a list of them (YAML would turn 2024-01-01 into a date)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def load_mappings(directory: str | FsPath) -> MappingSet:
    """Load every *.yaml file of the folder; raises MappingLoadError listing all errors."""
    folder = FsPath(directory)
    files = sorted(p for p in folder.glob("*.y*ml") if p.is_file()) if folder.is_dir() else []
    builder = _Builder()
    if not files:
        builder.error(str(folder), 0, "no mapping files (*.yaml) found")
    for path in files:
        builder.read_file(path)
    builder.build_messages()
    builder._read_outbound()
    if not builder.order_control and any(m.kind == "order" for m in builder.messages.values()):
        builder.error(str(folder), 0, "order mappings need an order_control table")
    if builder.errors:  # a section used by several messages is reported once
        raise MappingLoadError(list(dict.fromkeys(builder.errors)))
    return MappingSet(builder.messages, builder.tables, builder.order_control,
                      builder.station_rules, [str(p) for p in files], builder.templates,
                      builder.outbound)


def describe(mappings: MappingSet) -> Mapping[str, Any]:
    """A summary for the console and the CLI."""
    return {
        "files": mappings.files,
        "messages": sorted(mappings.messages),
        "tables": sorted(mappings.tables),
        "order_control": {k: f"{v.action.value}/{v.status.value}"
                          for k, v in mappings.order_control.items()},
        "station_rules": len(mappings.station_rules),
    }
