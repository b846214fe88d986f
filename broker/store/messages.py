"""The message log: every received HL7 message, its outcome and its acknowledgement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.store.repo import Repo

#: the accepted original of a sender's control ID (parameters: application, facility, ID)
ACCEPTED = ("SELECT id, ack, content_hash, received_at FROM message_log"
            " WHERE sender_application = ? AND sender_facility = ? AND control_id = ?"
            " AND outcome = 'AA' AND duplicate_of IS NULL ORDER BY id LIMIT 1")

#: (log id, stored ACK, content hash, received at) of an accepted message
Accepted = tuple[int, str, str, float]


def accepted_of(row: Any) -> Accepted | None:
    """An ``ACCEPTED`` row (or its columns at the end of a longer one) as a value."""
    if row is None or row[0] is None:
        return None
    return int(row[0]), str(row[1]), str(row[2]), float(row[3])


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
    replay_of: int | None = None  # a replay (re-processing) of this stored message
    replayed_by: str = ""  # who asked for the replay ('' for a message from the wire)
    replay_reason: str = ""


class MessageLog(Repo):
    """Rows of the message log; duplicates are found by sender and control ID."""

    def accepted_message(self, application: str, facility: str,
                         control_id: str) -> Accepted | None:
        """(log id, stored ACK, content hash, received at) of an accepted message with this
        sender and control ID."""
        row = self.conn.execute(ACCEPTED, (application, facility, control_id)).fetchone()
        return accepted_of(row)

    def log_message(self, r: MessageRecord) -> None:
        """The message's row (no result read: in PostgreSQL's pipeline it costs no round
        trip of its own)."""
        self.conn.execute(
            "INSERT INTO message_log (received_at, peer, sender_application, sender_facility,"
            " control_id, message_type, charset, outcome, duplicate_of, error, ack, patient_id,"
            " accession, content_hash, raw, replay_of, replayed_by, replay_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.received_at, r.peer, r.sender_application, r.sender_facility, r.control_id,
             r.message_type, r.charset, r.outcome, r.duplicate_of, r.error, r.ack, r.patient_id,
             r.accession, r.content_hash, r.raw, r.replay_of, r.replayed_by, r.replay_reason))
