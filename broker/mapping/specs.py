"""What a loaded mapping set is: per message type, the fields and their paths and
transforms; tables, order control, station rules and outbound templates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from broker.hl7.path import Path
from broker.mapping.fhir_specs import FhirMapping
from broker.mapping.outbound import OutboundRule, Template
from broker.mapping.transforms import Fn
from broker.model.orders import OrderAction, StepStatus


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
    #: the mapped value is a path's text as it stands (no transform, unit or structure):
    #: the mapping engine's short way
    plain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", not self.transforms and self.unit is None
                           and not self.structural and self.value is None)



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
    #: FHIR R4 ServiceRequest → worklist (``fhir:`` in a mapping file), None when absent
    fhir: FhirMapping | None = None
    loaded_at: float = field(default_factory=time.time)

    def for_type(self, message_type: str) -> MessageMapping | None:
        return self.messages.get(message_type)
