"""Mirrored upstream worklist items: which source holds a procedure, each item's digest and
how many polls in a row missed it."""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.repo import Repo


@dataclass(slots=True)
class Holder:
    """The procedure that holds a Study Instance UID or an accession number, and its source
    ('' : HL7, UPS Push, FHIR or an import)."""

    procedure_fk: int
    study_uid: str
    source: str


@dataclass(slots=True)
class ItemRow:
    study_uid: str
    digest: str
    missed_polls: int


class UpstreamRepo(Repo):
    def holders(self, study_uid: str, accession: str) -> list[Holder]:
        """Procedures with this Study Instance UID, or this accession number (when given)."""
        rows = self.conn.execute(
            "SELECT id, study_uid, source FROM procedures WHERE study_uid = ?"
            " OR (accession = ? AND accession != '') ORDER BY id",
            (study_uid, accession)).fetchall()
        return [Holder(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def set_source(self, procedure_fk: int, source: str) -> None:
        self.conn.execute("UPDATE procedures SET source = ? WHERE id = ?",
                          (source, procedure_fk))

    def items(self, source: str) -> dict[str, ItemRow]:
        rows = self.conn.execute(
            "SELECT study_uid, digest, missed_polls FROM upstream_items WHERE source = ?",
            (source,)).fetchall()
        return {str(r[0]): ItemRow(str(r[0]), str(r[1]), int(r[2])) for r in rows}

    def seen(self, source: str, study_uid: str, digest: str) -> None:
        self.conn.execute(
            "INSERT INTO upstream_items (source, study_uid, digest, missed_polls, last_seen_at)"
            " VALUES (?, ?, ?, 0, ?) ON CONFLICT (source, study_uid) DO UPDATE SET"
            " digest = excluded.digest, missed_polls = 0, last_seen_at = excluded.last_seen_at",
            (source, study_uid, digest, self.now))

    def missed(self, source: str, study_uid: str, polls: int) -> None:
        self.conn.execute("UPDATE upstream_items SET missed_polls = ? WHERE source = ?"
                          " AND study_uid = ?", (polls, source, study_uid))

    def forget(self, source: str, study_uid: str) -> None:
        self.conn.execute("DELETE FROM upstream_items WHERE source = ? AND study_uid = ?",
                          (source, study_uid))

    def count(self, source: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM upstream_items WHERE source = ?",
                                (source,)).fetchone()
        return int(row[0])
