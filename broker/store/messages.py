"""The message log: every received HL7 message, its outcome and its acknowledgement."""

from __future__ import annotations

from dataclasses import dataclass

from broker.store.repo import Repo


@dataclass(slots=True)
class MessageRecord:
    """What the message log keeps of one received message."""

    received_at: float
    peer: str
    sender_application: str
    sender_facility: str
    control_id: str
    message_type: str
    charset: str
    outcome: str
    error: str
    ack: str
    raw: bytes
    patient_id: str = ""
    accession: str = ""
    duplicate_of: int | None = None
    content_hash: str = ""


class MessageLog(Repo):
    """Rows of the message log; duplicates are found by sender and control ID."""

    def accepted_message(self, application: str, facility: str,
                         control_id: str) -> tuple[int, str, str, float] | None:
        """(log id, stored ACK, content hash, received at) of an accepted message with this
        sender and control ID."""
        row = self.conn.execute(
            "SELECT id, ack, content_hash, received_at FROM message_log"
            " WHERE control_id = ? AND sender_application = ? AND sender_facility = ?"
            " AND outcome = 'AA' AND duplicate_of IS NULL",
            (control_id, application, facility)).fetchone()
        return (int(row[0]), str(row[1]), str(row[2]), float(row[3])) if row else None

    def log_message(self, r: MessageRecord) -> None:
        """The message's row (no result read: in PostgreSQL's pipeline it costs no round
        trip of its own)."""
        self.conn.execute(
            "INSERT INTO message_log (received_at, peer, sender_application, sender_facility,"
            " control_id, message_type, charset, outcome, duplicate_of, error, ack, patient_id,"
            " accession, content_hash, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.received_at, r.peer, r.sender_application, r.sender_facility, r.control_id,
             r.message_type, r.charset, r.outcome, r.duplicate_of, r.error, r.ack, r.patient_id,
             r.accession, r.content_hash, r.raw))
