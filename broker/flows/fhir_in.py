"""The FHIR intake path: validate → (one writer job) find, store, map, apply → answer.

A transaction Bundle is one job (all or nothing); a batch is a job per entry; a single
create or update is one job. Reads run as jobs too (the same store door, both databases)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.audit.records import record_ingest
from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.fhir.bundle import entry_of, error_entry, issues_of, read_bundle, response_bundle
from broker.fhir.outcome import CONFLICT, INVALID, NOT_FOUND, FhirError
from broker.fhir.requests import Identifier, Write
from broker.logs import event
from broker.mapping.specs import MappingSet
from broker.store.errors import Conflict, StoreError
from broker.store.fhir import FhirRow
from broker.store.unit_of_work import JobRunner, UnitOfWork
from broker.workflow.fhir_intake import Stored, UpsWatch, store, target

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.fhir")


class FhirIntake:
    def __init__(self, writer: JobRunner, mappings: Callable[[], MappingSet], *,
                 metrics: Metrics | None = None, audit: AuditTrail | None = None,
                 cancel_started: bool = False, ups_watch: UpsWatch | None = None,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.writer = writer
        self.mappings = mappings
        self.metrics = metrics
        self.audit = audit or DisabledAuditTrail()
        self.cancel_started = cancel_started
        self.ups_watch = ups_watch
        self.on_queued = on_queued

    def count(self, interaction: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.fhir_request(interaction, outcome)

    # -- writes -----------------------------------------------------------------------------
    def _store(self, uow: UnitOfWork, writes: list[Write], mappings: MappingSet
               ) -> list[Stored]:
        """Store writes in order; a fullUrl resolves to the id its entry gets."""
        targets = [target(uow, w) for w in writes]
        refs = {w.full_url: f"{w.type}/{t.logical_id}" for w, t in zip(writes, targets,
                                                                        strict=True)
                if w.full_url}
        out = []
        for write, where in zip(writes, targets, strict=True):
            write.refs = {**refs, **write.refs}
            # its faults name the element from the write's place (Bundle.entry[n].resource)
            out.append(store(uow, write, where, mappings, self.cancel_started,
                             self.ups_watch))
        return out

    async def _run(self, writes: list[Write], peer: str) -> list[Stored]:
        mappings = self.mappings()
        try:
            stored = await self.writer.run(lambda uow: self._store(uow, writes, mappings))
        except Conflict as exc:
            raise FhirError.one(CONFLICT, "conflict", f"the write contradicts stored data: "
                                f"{exc}") from exc
        except StoreError as exc:
            raise FhirError.one(503, "transient", f"{exc}; try again later") from exc
        self._after(stored, peer)
        return stored

    def _after(self, stored: list[Stored], peer: str) -> None:
        events = [e for s in stored if s.changed for e in s.events]
        record_ingest(self.audit, events, "AA", False, control_id="", sender="FHIR",
                      facility="", peer=peer)
        if any(s.queued for s in stored) and self.on_queued is not None:
            self.on_queued()
        for s in stored:
            event(log, "fhir_stored", type=s.row.resource_type, id=s.row.id,
                  version=s.row.version, created=s.created, changed=s.changed,
                  study_uid=s.row.study_uid)

    async def write(self, write: Write, peer: str) -> Stored:
        return (await self._run([write], peer))[0]

    async def bundle(self, bundle: dict[str, Any], peer: str, base: str,
                     collect: list[Stored] | None = None) -> dict[str, Any]:
        """The transaction-response or batch-response of a Bundle; a transaction with any
        fault raises it (nothing is stored). ``collect`` gets what each write did."""
        done = collect if collect is not None else []
        kind, writes = read_bundle(bundle)
        if kind == "transaction":
            issues = issues_of(writes)
            if issues:
                first = next(w for w in writes if isinstance(w, FhirError))
                raise FhirError(first.status, issues)
            ok = [w for w in writes if isinstance(w, Write)]
            stored = await self._run(ok, peer)
            done += stored
            answers = {w.index: entry_of(s.row, s.status, base)
                       for w, s in zip(ok, stored, strict=True)}
            return response_bundle(kind, [answers[i] for i in sorted(answers, key=_index)])
        entries: dict[int, dict[str, Any]] = {}
        refs: dict[str, str] = {}
        for n, w in enumerate(writes):
            if isinstance(w, FhirError):
                entries[_position(w, n)] = error_entry(w)
                continue
            w.refs = refs
            try:
                s = (await self._run([w], peer))[0]
                done.append(s)
            except FhirError as exc:
                entries[_index(w.index)] = error_entry(exc)
                continue
            if w.full_url:
                refs[w.full_url] = f"{s.row.resource_type}/{s.row.id}"
            entries[_index(w.index)] = entry_of(s.row, s.status, base)
        return response_bundle(kind, [entries[i] for i in sorted(entries)])

    # -- reads ------------------------------------------------------------------------------
    async def read(self, resource_type: str, logical_id: str) -> FhirRow:
        row = await self.writer.run(lambda uow: uow.fhir.get(resource_type, logical_id))
        if row is None:
            raise FhirError.one(NOT_FOUND, "not-found", f"{resource_type}/{logical_id[:64]} "
                                "is not known here")
        return row

    async def search(self, resource_type: str, identifier: Identifier | None,
                     reference: str = "") -> list[FhirRow]:
        def job(uow: UnitOfWork) -> list[FhirRow]:
            repo = uow.fhir
            if identifier is not None:
                rows = repo.by_identifier(resource_type, identifier.system, identifier.value)
                if reference:
                    rows = [r for r in rows if _references(r, reference)]
                return rows
            if reference:
                return repo.by_reference(resource_type, "subject", reference)
            raise FhirError.one(INVALID, "not-supported", "search needs identifier= (or "
                                "patient= / subject= for ServiceRequest)")
        rows: list[FhirRow] = await self.writer.run(job)
        return rows


def _references(row: FhirRow, reference: str) -> bool:
    return bool((row.resource.get("subject") or {}).get("reference") == reference)


def _index(index: int | None) -> int:
    return index if index is not None else 0


def _position(error: FhirError, fallback: int) -> int:
    """The entry an error belongs to, read back from its first expression."""
    for issue in error.issues:
        head = issue.expression.partition("]")[0]
        if head.startswith("Bundle.entry["):
            try:
                return int(head[13:])
            except ValueError:
                break
    return 100000 + fallback
