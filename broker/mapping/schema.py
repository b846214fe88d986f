"""Loading and validating the mapping files; every error names its file and line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydicom.datadict import keyword_dict

from broker.hl7.path import PathError, parse_path
from broker.mapping.dicom_safe import keyword_vr
from broker.mapping.fhir_schema import read_fhir_blocks
from broker.mapping.fields import BACKSLASH_ERROR, Doc, FieldReader, YamlLoader, has_backslash
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
from broker.mapping.specs import FieldSpec, MappingSet, MessageMapping, OrderRule, StationRule
from broker.model.orders import OrderAction, StepStatus

KINDS = ("order", "patient_update", "patient_merge", "patient_id_change")
TOP_KEYS = ("sections", "messages", "tables", "order_control", "station_rules", "templates",
            "outbound", "fhir")
OUTBOUND_EVENTS = ("procedure_status", "completion")
RULE_KEYS = {"procedure_status": ("template", "order_status"),
             "completion": ("template", "require", "timeout", "on_timeout", "result_status")}
MESSAGE_KEYS = {"types", "kind", "patient", "prior", "procedure", "steps", "order_control",
                "study_uid", "group", "absent_steps"}


class MappingLoadError(ValueError):
    """The mapping set is invalid; ``errors`` are 'file:line: message' lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Builder(FieldReader):
    def __init__(self) -> None:
        super().__init__()
        self.order_control: dict[str, OrderRule] = {}
        self.station_rules: list[StationRule] = []
        self.messages: dict[str, MessageMapping] = {}
        self.templates: dict[str, Template] = {}
        self.outbound: dict[str, OutboundRule] = {}
        self._outbound_docs: list[tuple[Doc, str]] = []
        self._message_docs: list[tuple[Doc, str]] = []
        self._rule_docs: list[tuple[Any, str, int]] = []
        self.fhir_docs: list[tuple[Any, str, int]] = []  # read once the tables are

    # -- files ------------------------------------------------------------------------------
    def read_file(self, path: FsPath) -> None:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(name, 0, f"cannot read: {exc}")
            return
        loader = YamlLoader(text)
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
        if not isinstance(doc, Doc):
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
                    if isinstance(item, Doc):
                        self._message_docs.append((item, name))
                    else:
                        self.error(name, line, "each message mapping must be a mapping")
            elif key == "tables":
                self._read_tables(name, value, line)
            elif key == "fhir":
                self.fhir_docs.append((value, name, line))
            elif key == "order_control":
                self._read_order_control(name, value, line)
            elif key == "templates":
                self._read_templates(name, value, line)
            elif key == "outbound":
                if isinstance(value, Doc):
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
        if not isinstance(value, Doc):
            return self.error(file, line, "sections must map a name to field mappings")
        for name, body in value.items():
            if name in self.sections:
                self.error(file, value.lines[name], f"section {name!r} is defined twice")
            elif not isinstance(body, Doc):
                self.error(file, value.lines[name], f"section {name!r} must be a mapping")
            else:
                self.sections[name] = (body, file)

    def _read_tables(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, Doc):
            return self.error(file, line, "tables must map a table name to code: value pairs")
        for name, body in value.items():
            if name in self.tables:
                self.error(file, value.lines[name], f"table {name!r} is defined twice")
            elif not isinstance(body, Doc):
                self.error(file, value.lines[name], f"table {name!r} must be a mapping")
            else:
                self.tables[str(name)] = {str(k): "" if v is None else str(v)
                                          for k, v in body.items()}

    def _read_templates(self, file: str, value: Any, line: int) -> None:
        if not isinstance(value, Doc):
            return self.error(file, line, "templates must map a name to a list of segments")
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
                    if k not in RULE_KEYS[event_name] and isinstance(rule, Doc):
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
        if not isinstance(value, Doc):
            return self.error(file, line, "order_control must map 'ORC1_ORC5' to {action, status}")
        for key, rule in value.items():
            at = value.lines[key]
            if not isinstance(rule, Doc):
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

    def build_messages(self) -> None:
        for doc, file in self._message_docs:
            self._message(file, doc)
        for rule, file, line in self._rule_docs:
            self._station_rule(file, rule, line)

    def _message(self, file: str, doc: Doc) -> None:
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
            if not isinstance(steps_doc, Doc) or "fields" not in steps_doc:
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
        if not isinstance(rule, Doc) or not isinstance(rule.get("when"), dict) or not isinstance(
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
            elif has_backslash(keyword_vr(key), rule["set"][key]):
                self.error(file, rule.line, "station rule: " + BACKSLASH_ERROR.format(
                    keyword=key, vr=keyword_vr(key)))
        settings = {k: [str(x) for x in v] if isinstance(v, list) else str(v)
                    for k, v in rule["set"].items()}
        self.station_rules.append(StationRule(tuple(conditions), settings, f"{file}:{rule.line}"))


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
    fhir = read_fhir_blocks(builder, builder.fhir_docs)
    if not builder.order_control and any(m.kind == "order" for m in builder.messages.values()):
        builder.error(str(folder), 0, "order mappings need an order_control table")
    if builder.errors:  # a section used by several messages is reported once
        raise MappingLoadError(list(dict.fromkeys(builder.errors)))
    return MappingSet(builder.messages, builder.tables, builder.order_control,
                      builder.station_rules, [str(p) for p in files], builder.templates,
                      builder.outbound, fhir=fhir)


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
