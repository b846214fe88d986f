"""SQL for completion: the instances an MPPS lists, storage commitment transactions,
instance availability notifications and the completion notice's state per MPPS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.model.instances import Facts, Instance
from broker.store.repo import MppsRow, Repo


@dataclass(slots=True)
class CommitmentRow:
    id: int
    transaction_uid: str
    mpps_fk: int
    archive: str
    state: str
    reason: str
    #: the broker that asked (several sharing one database)
    node: str = ""


@dataclass(slots=True)
class CompletionRow:
    mpps_fk: int
    state: str
    deadline: float
    detail: str


_COMMITMENT = "id, transaction_uid, mpps_fk, archive, state, reason, node"


class CompletionRepo(Repo):
    # -- MPPS ----------------------------------------------------------------------------------
    def mpps_by_pk(self, pk: int) -> MppsRow | None:
        row = self.conn.execute(
            "SELECT id, sop_instance_uid, status, dataset, unscheduled FROM mpps WHERE id = ?",
            (pk,)).fetchone()
        return MppsRow(row[0], row[1], row[2], json.loads(row[3]), bool(row[4])) if row else None

    def mpps_pk(self, sop_instance_uid: str) -> int | None:
        row = self.conn.execute("SELECT id FROM mpps WHERE sop_instance_uid = ?",
                                (sop_instance_uid,)).fetchone()
        return int(row[0]) if row else None

    def set_mpps_instances(self, mpps_pk: int, instances: list[Instance]) -> None:
        self.conn.execute("DELETE FROM mpps_instances WHERE mpps_fk = ?", (mpps_pk,))
        self.conn.executemany(
            "INSERT INTO mpps_instances (mpps_fk, sop_instance_uid, sop_class_uid,"
            " series_uid) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(mpps_pk, i.sop_instance_uid, i.sop_class_uid, i.series_uid) for i in instances])

    def mpps_instances(self, mpps_pk: int) -> list[Instance]:
        return [Instance(*r) for r in self.conn.execute(
            "SELECT sop_instance_uid, sop_class_uid, series_uid FROM mpps_instances"
            " WHERE mpps_fk = ? ORDER BY series_uid, sop_instance_uid", (mpps_pk,))]

    def mpps_of_instances(self, sop_instance_uids: list[str]) -> list[int]:
        found: set[int] = set()
        for start in range(0, len(sop_instance_uids), 500):
            chunk = sop_instance_uids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(
                f"SELECT DISTINCT mpps_fk FROM mpps_instances WHERE sop_instance_uid IN ({marks})",
                chunk))
        return sorted(found)

    def mpps_of_study(self, study_uid: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT ms.mpps_fk FROM mpps_steps ms JOIN steps s ON s.id = ms.step_fk"
            " JOIN procedures p ON p.id = s.procedure_fk WHERE p.study_uid = ?"
            " ORDER BY ms.mpps_fk", (study_uid,))]

    def procedure_of(self, column: str, value: str) -> int | None:
        """A procedure by ``study_uid`` or ``accession`` (a constant of the caller)."""
        if column not in ("study_uid", "accession"):
            raise ValueError(column)
        row = self.conn.execute(f"SELECT id FROM procedures WHERE {column} = ? ORDER BY id"
                                " LIMIT 1", (value,)).fetchone()
        return int(row[0]) if row else None

    def procedure_of_mpps(self, mpps_pk: int) -> int | None:
        row = self.conn.execute(
            "SELECT s.procedure_fk FROM mpps_steps ms JOIN steps s ON s.id = ms.step_fk"
            " WHERE ms.mpps_fk = ? ORDER BY s.id LIMIT 1", (mpps_pk,)).fetchone()
        return int(row[0]) if row else None

    def mpps_of_procedure(self, procedure_pk: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT ms.mpps_fk FROM mpps_steps ms JOIN steps s ON s.id = ms.step_fk"
            " WHERE s.procedure_fk = ? ORDER BY ms.mpps_fk", (procedure_pk,))]

    # -- storage commitment --------------------------------------------------------------------
    def new_commitment(self, transaction_uid: str, mpps_pk: int, archive: str,
                       timeout_at: float, instances: list[Instance], node: str = "") -> int:
        pk = int(self.conn.execute(
            "INSERT INTO commitments (transaction_uid, mpps_fk, archive, created_at, timeout_at,"
            " node) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (transaction_uid, mpps_pk, archive, self.now, timeout_at, node)).fetchone()[0])
        self.conn.executemany(
            "INSERT INTO commitment_instances (commitment_fk, sop_instance_uid,"
            " sop_class_uid) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(pk, i.sop_instance_uid, i.sop_class_uid) for i in instances])
        return pk

    def commitment(self, transaction_uid: str) -> CommitmentRow | None:
        row = self.conn.execute(f"SELECT {_COMMITMENT} FROM commitments WHERE transaction_uid = ?",
                                (transaction_uid,)).fetchone()
        return CommitmentRow(*row) if row else None

    def commitment_requested(self, transaction_uid: str, report_timeout: float) -> None:
        """The archive accepted the N-ACTION (the report may already have arrived): the wait
        for its report starts now."""
        self.conn.execute(
            "UPDATE commitments SET requested_at = COALESCE(requested_at, ?),"
            " timeout_at = CASE WHEN state = 'queued' THEN ? ELSE timeout_at END,"
            " state = CASE WHEN state = 'queued' THEN 'requested' ELSE state END"
            " WHERE transaction_uid = ?", (self.now, self.now + report_timeout, transaction_uid))

    def commitment_refused(self, transaction_uid: str, reason: str) -> None:
        self.conn.execute(
            "UPDATE commitments SET state = 'failed', reason = ?, reported_at = ?"
            " WHERE transaction_uid = ? AND state IN ('queued', 'requested')",
            (reason, self.now, transaction_uid))

    def commitment_reported(self, pk: int, committed: list[str], failed: dict[str, int]
                            ) -> tuple[int, int]:
        """Record the archive's answer per instance; returns (committed, failed) known now.
        An instance it reported on that was not in the request is ignored."""
        self.conn.executemany(
            "UPDATE commitment_instances SET state = 'committed', failure_reason = NULL"
            " WHERE commitment_fk = ? AND sop_instance_uid = ?", [(pk, u) for u in committed])
        self.conn.executemany(
            "UPDATE commitment_instances SET state = 'failed', failure_reason = ?"
            " WHERE commitment_fk = ? AND sop_instance_uid = ?",
            [(reason, pk, u) for u, reason in failed.items()])
        counts = dict(self.conn.execute(
            "SELECT state, COUNT(*) FROM commitment_instances WHERE commitment_fk = ?"
            " GROUP BY state", (pk,)).fetchall())
        n_failed, pending = int(counts.get("failed", 0)), int(counts.get("pending", 0))
        state = "failed" if n_failed else ("committed" if not pending else "requested")
        reason = ""
        if n_failed:
            reasons = sorted({f"0x{r:04X}" for r in failed.values()})
            reason = f"{n_failed} instance(s) not committed (Failure Reason {', '.join(reasons)})"
        self.conn.execute(
            "UPDATE commitments SET state = ?, reason = ?, reported_at = ?,"
            " requested_at = COALESCE(requested_at, ?) WHERE id = ?",
            (state, reason, self.now, self.now, pk))
        return int(counts.get("committed", 0)), n_failed

    def unreported_commitments(self) -> list[CommitmentRow]:
        """Requested, accepted by the archive, and no report yet."""
        return [CommitmentRow(*r) for r in self.conn.execute(
            f"SELECT {_COMMITMENT} FROM commitments WHERE state = 'requested' ORDER BY id")]

    def commitment_asked_again(self, pk: int) -> None:
        """Back to queued: its wait for a report starts again when the archive accepts."""
        self.conn.execute("UPDATE commitments SET state = 'queued' WHERE id = ?"
                          " AND state = 'requested'", (pk,))

    def commitment_instances(self, pk: int) -> list[Instance]:
        return [Instance(r[0], r[1]) for r in self.conn.execute(
            "SELECT sop_instance_uid, sop_class_uid FROM commitment_instances"
            " WHERE commitment_fk = ? ORDER BY sop_instance_uid", (pk,))]

    def overdue_commitments(self, now: float) -> list[CommitmentRow]:
        return [CommitmentRow(*r) for r in self.conn.execute(
            f"SELECT {_COMMITMENT} FROM commitments WHERE state = 'requested'"
            " AND timeout_at <= ? ORDER BY id", (now,))]

    def commitment_timed_out(self, pk: int) -> None:
        self.conn.execute(
            "UPDATE commitments SET state = 'timed_out', reason = 'no N-EVENT-REPORT before the"
            " timeout' WHERE id = ? AND state IN ('queued', 'requested')", (pk,))

    # -- instance availability -----------------------------------------------------------------
    def ian_exists(self, sop_instance_uid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM ian WHERE sop_instance_uid = ?",
                                 (sop_instance_uid,)).fetchone() is not None

    def insert_ian(self, sop_instance_uid: str, calling_ae: str, study_uid: str,
                   mpps_pk: int | None, procedure_pk: int | None, linked_by: str,
                   dataset: dict[str, Any]) -> int:
        row = self.conn.execute(
            "INSERT INTO ian (sop_instance_uid, calling_ae, study_uid, mpps_fk, procedure_fk,"
            " linked_by, dataset, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (sop_instance_uid, calling_ae, study_uid, mpps_pk, procedure_pk, linked_by,
             json.dumps(dataset, separators=(",", ":")), self.now)).fetchone()
        return int(row[0])

    def set_availability(self, ian_pk: int, study_uid: str,
                         rows: list[tuple[Instance, str, str]]) -> None:
        """(instance, availability, retrieve AE) of each instance the IAN lists."""
        self.conn.executemany(
            "INSERT INTO instance_availability (sop_instance_uid, sop_class_uid, series_uid,"
            " study_uid, availability, retrieve_ae, ian_fk, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sop_instance_uid) DO UPDATE SET"
            " availability = excluded.availability, retrieve_ae = excluded.retrieve_ae,"
            " ian_fk = excluded.ian_fk, updated_at = excluded.updated_at",
            [(i.sop_instance_uid, i.sop_class_uid, i.series_uid, study_uid, availability,
              retrieve_ae, ian_pk, self.now) for i, availability, retrieve_ae in rows])

    # -- what the completion rule looks at -----------------------------------------------------
    def facts(self, mpps_pk: int, available_statuses: tuple[str, ...]) -> Facts:
        facts = Facts()
        facts.instances, facts.series = self.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT series_uid) FROM mpps_instances WHERE mpps_fk = ?",
            (mpps_pk,)).fetchone()
        marks = ", ".join("?" * len(available_statuses)) or "''"
        facts.available, aes = self.conn.execute(
            "SELECT COUNT(*), " + self.dialect.string_agg("a.retrieve_ae", ",", distinct=True)
            + " FROM mpps_instances m"
            " JOIN instance_availability a ON a.sop_instance_uid = m.sop_instance_uid"
            f" WHERE m.mpps_fk = ? AND a.availability IN ({marks})",
            (mpps_pk, *available_statuses)).fetchone()
        facts.retrieve_aes = tuple(sorted({a for a in (aes or "").split(",") if a}))
        row = self.conn.execute(
            "SELECT id, state, reason, transaction_uid FROM commitments WHERE mpps_fk = ?"
            " ORDER BY id DESC LIMIT 1", (mpps_pk,)).fetchone()
        if row:
            facts.commitment_state, facts.commitment_reason = row[1], row[2]
            facts.transaction_uid = row[3]
            counts = dict(self.conn.execute(
                "SELECT state, COUNT(*) FROM commitment_instances WHERE commitment_fk = ?"
                " GROUP BY state", (row[0],)).fetchall())
            facts.committed, facts.failed = counts.get("committed", 0), counts.get("failed", 0)
        return facts

    # -- completion notices --------------------------------------------------------------------
    def start_completion(self, mpps_pk: int, deadline: float) -> None:
        self.conn.execute(
            "INSERT INTO completions (mpps_fk, deadline) VALUES (?, ?)"
            " ON CONFLICT(mpps_fk) DO NOTHING", (mpps_pk, deadline))

    def completion(self, mpps_pk: int) -> CompletionRow | None:
        row = self.conn.execute(
            "SELECT mpps_fk, state, deadline, detail FROM completions WHERE mpps_fk = ?",
            (mpps_pk,)).fetchone()
        return CompletionRow(*row) if row else None

    def decide_completion(self, mpps_pk: int, state: str, detail: str) -> None:
        self.conn.execute(
            "UPDATE completions SET state = ?, detail = ?, decided_at = ? WHERE mpps_fk = ?",
            (state, detail, self.now, mpps_pk))

    def overdue_completions(self, now: float) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT mpps_fk FROM completions WHERE state = 'waiting' AND deadline <= ?"
            " ORDER BY mpps_fk", (now,))]

    def next_deadline(self) -> float | None:
        row = self.conn.execute(
            "SELECT MIN(t) FROM (SELECT MIN(deadline) AS t FROM completions WHERE state ="
            " 'waiting' UNION ALL SELECT MIN(timeout_at) FROM commitments WHERE state ="
            " 'requested')").fetchone()
        return float(row[0]) if row and row[0] is not None else None
