"""Reading mapping YAML: documents that remember their lines, and one field's spec (paths,
transforms, default or constant, unit), each problem reported as file:line."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import yaml
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict

from broker.hl7.path import Path, PathError, parse_path
from broker.mapping import names
from broker.mapping.dicom_safe import BACKSLASH_ALLOWED
from broker.mapping.specs import FieldSpec, UnitSpec
from broker.mapping.transforms import TRANSFORMS, VR_TRANSFORM, Fn

FIELD_KEYS = {"path", "transform", "default", "value", "required", "scope", "unit"}


class Doc(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class YamlLoader(yaml.SafeLoader):
    duplicate_keys: list[tuple[int, str]]


def _construct_mapping(loader: YamlLoader, node: yaml.MappingNode) -> Doc:
    loader.flatten_mapping(node)
    doc = Doc()
    doc.line = node.start_mark.line + 1
    doc.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in doc:
            loader.duplicate_keys.append((key_node.start_mark.line + 1, str(key)))
        doc[key] = loader.construct_object(value_node, deep=True)
        doc.lines[key] = key_node.start_mark.line + 1
    return doc


YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class FieldReader:
    """Collects errors, and the sections and tables the fields of a message refer to."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.sections: dict[str, tuple[Doc, str]] = {}
        self.tables: dict[str, dict[str, str]] = {}

    def error(self, file: str, line: int, text: str) -> None:
        self.errors.append(f"{file}:{line}: {text}")

    def unknown_key(self, file: str, doc: Doc, key: Any, allowed: Any, what: str) -> None:
        close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.error(file, doc.lines.get(key, doc.line), f"unknown {what} {key!r}{hint}")

    def fields(self, file: str, doc: Any, line: int, what: str) -> tuple[FieldSpec, ...]:
        """Compile a field block ({use: …, Keyword: spec, …}) into FieldSpecs."""
        if not isinstance(doc, Doc):
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
            spec_doc = Doc({"path": spec})
            spec_doc.line, spec_doc.lines = line, {"path": line}
            spec = spec_doc
        if not isinstance(spec, Doc):
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
            elif option in spec and has_backslash(vr, spec[option]):
                self.error(file, spec.lines.get(option, line), BACKSLASH_ERROR.format(
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
        def check(name: str, param: Any, kind: str | None) -> str:
            if kind == "table" and str(param) not in self.tables:
                return f"lookup table {param!r} is not defined"
            if kind == "names" and names.param_error(param):
                return str(names.param_error(param))
            return ""
        return self.transform_list(file, line, keyword, spec, TRANSFORMS, "transform", check)

    def transform_list(self, file: str, line: int, keyword: str, spec: Any,
                       registry: dict[str, tuple[Any, bool, str | None]], label: str,
                       check: Callable[[str, Any, str | None], str]
                       ) -> list[tuple[str, Any, Any]]:
        """A field's ``transform:`` (a name, {name: parameter}, or a list of them) read
        against ``registry`` (name → function, must come first, parameter kind); ``check``
        says what is wrong with a parameter of its kind ('' when nothing)."""
        if spec is None:
            return []
        out: list[tuple[str, Any, Any]] = []
        for i, item in enumerate(spec if isinstance(spec, list) else [spec]):
            if isinstance(item, str):
                name, param = item, None
            elif isinstance(item, dict) and len(item) == 1:
                name, param = next(iter(item.items()))
            else:
                self.error(file, line, f"{keyword}: a transform is a name or {{name: parameter}}")
                continue
            if name not in registry:
                close = difflib.get_close_matches(str(name), list(registry), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(file, line, f"{keyword}: unknown {label} {name!r}{hint}")
                continue
            fn, structural, kind = registry[name]
            if structural and i > 0:
                self.error(file, line, f"{keyword}: transform {name!r} must come first")
            problem = check(str(name), param, kind)
            if problem:
                self.error(file, line, f"{keyword}: {problem}")
            if kind == "int" and not isinstance(param, int):
                self.error(file, line, f"{keyword}: {name} needs a whole number")
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


BACKSLASH_ERROR = ("{keyword}: a backslash separates values of a DICOM {vr}; write several "
                    "values as a YAML list")


def has_backslash(vr: str, value: Any) -> bool:
    """A constant that would change its value multiplicity once stored."""
    if isinstance(value, list):
        return any(has_backslash(vr, v) for v in value)
    return vr not in BACKSLASH_ALLOWED and "\\" in str(value)


def _plain(value: Any) -> bool:
    """Text, a number, or a list of them (YAML would turn 2024-01-01 into a date)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float) and not isinstance(value, bool)
