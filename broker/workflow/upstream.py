"""One poll of an upstream worklist applied to the store (inside one write transaction):
new items are placed, changed ones replace their procedure and step set, items missing from
``remove_after`` polls in a row have their unperformed steps CANCELED. Only procedures of
this source are touched: an item whose Study Instance UID or accession number another source
holds (HL7, FHIR, UPS Push, another upstream) is skipped."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from broker.model.orders import OrderChange, StepStatus
from broker.store.unit_of_work import UnitOfWork
from broker.workflow.orders import FINAL, PERFORMED, apply_order, lock_keys


@dataclass(slots=True)
class PollOutcome:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    #: (Study Instance UID, the source that holds it: '' for HL7 and the rest)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: items of this source held now
    items: int = 0


def by_study(orders: list[OrderChange]) -> list[OrderChange]:
    """One order per requested procedure: an SCP answers one item per scheduled step, so
    answers that share a Study Instance UID are the steps of one procedure."""
    groups: dict[str, OrderChange] = {}
    for order in orders:
        uid = order.procedure.study_uid
        held = groups.get(uid)
        if held is None:
            groups[uid] = order
            continue
        known = {s.sps_id for s in held.procedure.steps}
        held.procedure.steps.extend(s for s in order.procedure.steps if s.sps_id not in known)
    return list(groups.values())


def digest(order: OrderChange) -> str:
    """What the item holds, so an unchanged one costs no write."""
    patient = order.patient
    body: list[Any] = [patient.key.patient_id, patient.key.issuer, patient.attrs] if patient else []
    body += [order.procedure.attrs, [s.attrs for s in order.procedure.steps],
             order.status.value]
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def apply_poll(uow: UnitOfWork, source: str, orders: list[OrderChange],
               remove_after: int) -> PollOutcome:
    """Mirror one complete answer of upstream ``source`` (all its items, by study)."""
    outcome = PollOutcome()
    if uow.locks:
        uow.lock(*lock_keys(list(orders)))
    repo = uow.upstream
    known = repo.items(source)
    present: set[str] = set()
    for order in orders:
        order.procedure.generated_uid = False  # derived from the accession: stable per item
        uid = order.procedure.study_uid
        accession = str(order.procedure.attrs.get("AccessionNumber", ""))
        holders = repo.holders(uid, accession)
        other = next((h for h in holders if h.source != source), None)
        if other is not None:
            outcome.skipped.append((uid, other.source))
            continue
        present.add(uid)
        item_digest = digest(order)
        item = known.get(uid)
        if holders and item is not None and item.digest == item_digest:
            repo.seen(source, uid, item_digest)  # missed_polls back to 0
            outcome.unchanged += 1
            continue
        if holders:
            row = uow.orders.procedure_by_uid(uid)
            if row is not None:  # replace: what the upstream dropped goes
                for keyword in row.attrs.keys() - order.procedure.attrs.keys():
                    order.procedure.attrs[keyword] = ""
            outcome.updated += 1
        else:
            outcome.added += 1
        apply_order(uow.orders, order)
        if not holders:
            placed = uow.orders.procedure_by_uid(uid)
            assert placed is not None
            repo.set_source(placed.id, source)
        repo.seen(source, uid, item_digest)
    for uid, item in known.items():
        if uid in present:
            continue
        missed = item.missed_polls + 1
        if missed < remove_after:
            repo.missed(source, uid, missed)
            continue
        _cancel(uow, source, uid)
        repo.forget(source, uid)
        outcome.removed += 1
    outcome.items = len(known.keys() | present) - outcome.removed
    return outcome


def _cancel(uow: UnitOfWork, source: str, study_uid: str) -> None:
    """CANCELED for the steps of a mirrored procedure that no modality has performed."""
    if not any(h.source == source and h.study_uid == study_uid
               for h in uow.upstream.holders(study_uid, "")):
        return  # purged by retention meanwhile, or another source's
    found = uow.orders.procedure_with_steps(study_uid)
    if found is None:
        return
    _, steps = found
    uow.orders.set_steps_status([s.id for s in steps if s.status not in PERFORMED
                                 and s.status not in FINAL], StepStatus.CANCELED)
