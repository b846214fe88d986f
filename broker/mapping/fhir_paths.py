"""A fast evaluator for the FHIRPath the mappings mostly use (member navigation,
``first()``, ``where(a.b = 'text')``, ``where(a.b.exists())``, from the resource or a
variable of ``VARIABLES``),
with FHIRPath's semantics for that subset; anything else (and any choice-type element such as
``occurrence``) is left to fhirpathpy. Measured: a ServiceRequest's mapping cost ~1.2 ms in
fhirpathpy, most of the intake's CPU."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from broker.mapping.fhir_model import r4

_NAME = r"[A-Za-z][A-Za-z0-9]*"
_PATH = rf"{_NAME}(?:\.{_NAME})*"
_STEP = re.compile(rf"({_NAME})|first\(\)|where\(({_PATH})\s*=\s*'([^'\\]*)'\)"
                   rf"|where\(({_PATH})\.exists\(\)\)")
MODEL = r4()
_TYPES: dict[str, str] = MODEL["path2Type"]
_PARENTS: dict[str, str] = MODEL["type2Parent"]
_CHOICES = MODEL["choiceTypePaths"]
_BACKBONES = frozenset(path.rsplit(".", 1)[0] for path in _TYPES)
Step = tuple[str, Any]
Fast = Callable[[Any, dict[str, Any]], list[Any]]
#: the mapping's variables (``%patient`` …) and the resource type each one holds
VARIABLES = {"patient": "Patient", "encounter": "Encounter", "appointment": "Appointment"}


def _split(text: str) -> list[str] | None:
    """The expression's steps at top-level dots (None: parentheses do not balance)."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "." and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts if depth == 0 and not quoted else None


def child_type(parent: str, name: str) -> str | None:
    """The type of element ``name`` of type (or backbone path) ``parent`` from the R4
    model; None for a choice type ([x]) or an element the model does not know."""
    kind: str | None = parent
    while kind is not None:
        path = f"{kind}.{name}"
        if path in _CHOICES:
            return None
        if path in _TYPES:
            found = _TYPES[path]
            return path if found in ("BackboneElement", "Element") and path in _BACKBONES \
                else found
        if path in _BACKBONES:
            return path
        kind = _PARENTS.get(kind)
    return None


def _steps(parts: list[str], root: str) -> list[Step] | None:
    steps: list[Step] = []
    kind: str | None = root
    for part in parts:
        m = _STEP.fullmatch(part.strip())
        if m is None or kind is None:
            return None
        if m[1]:
            kind = child_type(kind, m[1])
            if kind is None:
                return None
            steps.append(("member", m[1]))
        elif part.strip() == "first()":
            steps.append(("first", None))
        else:
            names = (m[2] or m[4]).split(".")
            inner: str | None = kind
            for name in names:
                inner = child_type(inner, name) if inner is not None else None
            if inner is None:
                return None
            steps.append(("where", (names, m[3])) if m[2] else ("exists", names))
    return steps


def _members(items: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict) and name in item:
            value = item[name]
            if isinstance(value, list):
                out.extend(v for v in value if v is not None)
            elif value is not None:
                out.append(value)
    return out


def _navigate(items: list[Any], names: list[str]) -> list[Any]:
    for name in names:
        items = _members(items, name)
    return items


def compile_fast(text: str, root: str = "ServiceRequest") -> Fast | None:
    """The expression (on a ``root`` resource; ``%patient``: a Patient, ``%encounter``,
    ``%appointment``) as a plain Python function, None when it is outside the subset."""
    parts = _split(text.strip())
    if not parts:
        return None
    variable = None
    if parts[0].startswith("%") and parts[0][1:] in VARIABLES:
        variable, root = parts[0][1:], VARIABLES[parts[0][1:]]
        parts = parts[1:]
    steps = _steps(parts, root) if parts else None
    if not steps or steps[0][0] != "member":
        return None

    def evaluate(resource: Any, env: dict[str, Any]) -> list[Any]:
        root = env.get(variable) if variable else resource
        items: list[Any] = [root] if root is not None else []
        for kind, arg in steps:
            if kind == "member":
                items = _members(items, arg)
            elif kind == "first":
                items = items[:1]
            elif kind == "exists":
                items = [i for i in items if _navigate([i], arg)]
            else:
                names, literal = arg
                items = [i for i in items if _navigate([i], names) == [literal]]
            if not items:
                return []
        return items
    return evaluate
