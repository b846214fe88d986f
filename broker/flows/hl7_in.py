"""The inbound HL7 path: decode → parse → map → store (one transaction) → acknowledgement."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.audit.records import record_ingest
from broker.audit.trail import AuditTrail, DisabledAuditTrail
from broker.config import Hl7Settings, MllpSettings
from broker.hl7 import charset
from broker.hl7.ack import Hl7Error, Hl7Reject, build_ack
from broker.hl7.message import Message, ParseError, parse
from broker.logs import event, exception_site
from broker.mapping.engine import map_message
from broker.mapping.specs import MappingSet
from broker.model.orders import DomainError, Event, OrderChange, PatientIdChange, PatientMerge
from broker.net.allow import SenderAllowList, host_of
from broker.store.errors import Conflict, StoreError
from broker.store.messages import MessageRecord
from broker.store.unit_of_work import JobRunner, UnitOfWork
from broker.workflow.orders import apply, apply_new_order, is_new_order, lock_keys

if TYPE_CHECKING:
    from broker.metrics import Metrics

log = logging.getLogger("broker.hl7")

#: before a message's changes: what queues the UPS state reports of what they moved
UpsWatch = Callable[[UnitOfWork, list[str]], Callable[[], int] | None]
#: DomainError kind → HL7 table 0357 code
DOMAIN_CODES = {"unknown": 204, "conflict": 205, "missing": 101, "invalid": 207}


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored message processed again at an operator's request (docs/hl7-interface.md,
    "Replay"): logged as a new row linked to ``of``; the duplicate rule does not apply."""

    of: int
    by: str
    reason: str


@dataclass(slots=True)
class Outcome:
    code: str
    ack: bytes
    control_id: str
    duplicate: bool = False
    message_type: str = ""
    charset: str = ""
    events: list[Event] = field(default_factory=list)
    warnings: tuple[Hl7Error, ...] = ()


class Ingestor:
    """Answers each inbound message with the bytes of its acknowledgement."""

    def __init__(self, writer: JobRunner, mappings: Callable[[], MappingSet],
                 hl7: Hl7Settings, mllp: MllpSettings, metrics: Metrics | None = None,
                 audit: AuditTrail | None = None, ups_watch: UpsWatch | None = None) -> None:
        """``ups_watch`` (broker.flows.ups.UpsService.watch) queues the UPS state reports of
        the workitems a message moves, in its transaction."""
        self.writer = writer
        self.mappings = mappings
        self.hl7 = hl7
        self.mllp = mllp
        self._overrides = {(s.application, s.facility): s.charset for s in hl7.senders
                           if s.charset}
        self.allowed_senders = SenderAllowList(
            ((s.application, s.facility, s.addresses) for s in hl7.allowed_senders),
            "hl7.allowed_senders")
        self.counts: dict[str, int] = {}
        self.metrics = metrics
        self.audit = audit or DisabledAuditTrail()
        self.ups_watch = ups_watch

    def _override_for(self, application: str, facility: str) -> str | None:
        return self._overrides.get((application, facility)) or self._overrides.get(
            (application, ""))

    async def handle(self, raw: bytes, peer: str, replay: Replay | None = None) -> Outcome:
        """``replay``: ``raw`` is a stored message (as it was, or edited) processed again;
        ``peer`` is then the address it first came from (the sender check applies)."""
        received = time.time()
        started = time.perf_counter()
        fields = charset.peek_msh(raw)
        app, fac = charset.msh_value(fields, 3), charset.msh_value(fields, 4)
        control_id = charset.msh_value(fields, 10)
        message: Message | None = None
        codec = "ascii"
        events: list[Event] = []
        warnings: list[Hl7Error] = []  # what the mapping changed: ERR severity W in the AA
        rejection: Hl7Reject | None = None
        try:
            self._check_sender(app, fac, peer)
            decoded = charset.decode(
                raw, aliases=self.hl7.charset_aliases, override=self._override_for(app, fac),
                sniff_utf8=self.hl7.sniff_utf8, fallbacks=tuple(self.hl7.fallback_charsets),
                msh=fields)
            codec = decoded.codec
            message = parse(decoded.text, codec)
            if decoded.note:
                event(log, "charset_adjusted", control_id=control_id, sender=app, peer=peer,
                      note=decoded.note)
            self._check_header(message)
            events = map_message(message, self.mappings(), warnings)
        except charset.CharsetError as exc:
            rejection = Hl7Reject("AE", Hl7Error(102, str(exc), "MSH-18"))
            message = _parse_for_ack(raw)
        except ParseError as exc:
            rejection = Hl7Reject("AR", Hl7Error(exc.code, exc.reason, exc.location))
            message = _parse_for_ack(raw)  # the MSH alone may still say whom to answer
        except Hl7Reject as exc:
            rejection = exc
            if message is None:  # refused before parsing: the MSH alone addresses the answer
                message = _parse_for_ack(raw)
        except Exception as exc:
            event(log, "mapping_failed", logging.ERROR, control_id=control_id, peer=peer,
                  **exception_site(exc))
            rejection = Hl7Reject("AE", Hl7Error(207, f"internal error while mapping: {exc}"))
        record = MessageRecord(
            received_at=received, peer=peer, sender_application=app, sender_facility=fac,
            control_id=control_id, message_type=message.message_type if message else "",
            charset=codec, outcome="", error="", ack="", raw=raw,
            content_hash=content_hash(raw))
        if replay is not None:
            record.replay_of, record.replayed_by, record.replay_reason = (
                replay.of, replay.by, replay.reason)
        _describe(record, events)
        try:
            try:
                code, ack_text, duplicate = await self.writer.run(
                    lambda uow: self._store(uow, record, message, events, rejection,
                                             tuple(warnings)))
            except Exception as exc:  # nothing was applied: log the message as rejected
                rejection = self._rejection_for(exc, events, control_id, peer)
                code, ack_text, duplicate = await self.writer.run(
                    lambda uow: self._store(uow, record, message, [], rejection))
        except StoreError as exc:
            code, duplicate = "AE", False
            ack_text = self._ack("AE", message, (Hl7Error(207, f"{exc}; resend later"),))
        record_ingest(self.audit, events, code, duplicate, control_id=control_id, sender=app,
                      facility=fac, peer=peer)
        ack = ack_text.encode(codec if message else "ascii", errors="replace")
        ms = round((time.perf_counter() - started) * 1000, 3)
        self.counts[code] = self.counts.get(code, 0) + 1
        if self.metrics is not None:
            self.metrics.message_in(record.message_type, code, time.perf_counter() - started,
                                    (app, fac) if replay is None else ("", ""))
        extra = {"replay_of": replay.of, "replayed_by": replay.by} if replay else {}
        event(log, "hl7_received", logging.INFO if code == "AA" else logging.WARNING,
              control_id=control_id, type=record.message_type, sender=app, facility=fac,
              peer=peer, outcome=code, duplicate=duplicate, ms=ms, **extra,
              **error_fields(ack_text))
        return Outcome(code, ack, control_id, duplicate, record.message_type, codec, events,
                       tuple(warnings))

    @staticmethod
    def _rejection_for(exc: Exception, events: list[Event], control_id: str,
                       peer: str) -> Hl7Reject:
        """The AE for a message whose effects could not be stored (it changes nothing)."""
        if isinstance(exc, DomainError):
            return Hl7Reject("AE", Hl7Error(DOMAIN_CODES.get(exc.kind, 207), exc.reason,
                                            _origin_of(events, exc.keyword)))
        if isinstance(exc, Conflict):
            return Hl7Reject("AE", Hl7Error(205, f"the message contradicts stored data: {exc}"))
        if isinstance(exc, StoreError):
            raise exc
        event(log, "store_job_failed", logging.ERROR, control_id=control_id, peer=peer,
              **exception_site(exc))
        return Hl7Reject("AE", Hl7Error(207, f"internal error while storing: {exc}"))

    def _check_sender(self, application: str, facility: str, peer: str) -> None:
        """AR unless MSH-3/MSH-4 and the source address are on ``hl7.allowed_senders``."""
        refusal = self.allowed_senders.refusal(application, facility, host_of(peer))
        if not refusal:
            return
        if self.metrics is not None:
            self.metrics.rejected("mllp", "sender_not_allowed")
        event(log, "hl7_sender_refused", logging.WARNING, sender=application,
              facility=facility, peer=peer, reason=refusal)
        self.audit.security_alert("sender_not_allowed", peer, refusal, listener="mllp",
                                  user=f"{application}|{facility}")
        raise Hl7Reject("AR", Hl7Error(207, f"{refusal} (hl7.allowed_senders)", "MSH-3"))

    def _check_header(self, message: Message) -> None:
        version = message.version
        if version not in self.hl7.accepted_versions:
            raise Hl7Reject("AR", Hl7Error(203, f"version {version!r} is not accepted "
                                           f"({', '.join(self.hl7.accepted_versions)})", "MSH-12"))
        processing = message.processing_id
        if processing not in self.hl7.accepted_processing_ids:
            raise Hl7Reject("AR", Hl7Error(
                202, f"processing ID {processing!r} is not accepted "
                f"({', '.join(self.hl7.accepted_processing_ids)})", "MSH-11"))

    def _ack(self, code: str, message: Message | None, errors: tuple[Hl7Error, ...]) -> str:
        return build_ack(code, message, errors=errors, application=self.mllp.application,
                         facility=self.mllp.facility)

    def _store(self, uow: UnitOfWork, record: MessageRecord, message: Message | None,
               events: list[Event], rejection: Hl7Reject | None,
               warnings: tuple[Hl7Error, ...] = ()) -> tuple[str, str, bool]:
        """Runs in the writer thread: duplicate check, apply, log; returns (code, ACK, dup).

        An accepted message's ``warnings`` go into its ACK (ERR, severity W) and its log row.

        A DomainError propagates: the writer rolls the job back and the caller logs the
        message as rejected in a job of its own.
        """
        uow = uow.at(record.received_at)
        # brokers sharing one database: one of them claims a control ID at a time, and the
        # events of one patient, order or study are applied in turn
        if uow.locks:
            uow.lock(f"hl7:{record.sender_application}|{record.sender_facility}|"
                     f"{record.control_id}", *lock_keys(events))
        log_ = uow.messages
        applied = False
        # UPS watchers: the states of the workitems this message may move, read before it
        watched = self.ups_watch(uow, _studies(events)) if (
            self.ups_watch is not None and rejection is None and events) else None
        if rejection is None and record.control_id and not record.replayed_by:
            sender = (record.sender_application, record.sender_facility, record.control_id)
            if is_new_order(events):
                # the usual NW: the duplicate check goes with the order (one statement where
                # the database chains inserts)
                order = events[0]
                assert isinstance(order, OrderChange)
                accepted = apply_new_order(uow.orders, order, sender)
                applied = accepted is None
            else:
                accepted = log_.accepted_message(*sender)
            if accepted is not None and accepted[2] == record.content_hash:
                record.outcome, record.ack, record.duplicate_of = "AA", accepted[1], accepted[0]
                log_.log_message(record)
                return "AA", accepted[1], True
            if accepted is not None:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(accepted[3]))
                rejection = Hl7Reject("AE", Hl7Error(
                    205, f"control ID {record.control_id!r} of {record.sender_application} was "
                    f"accepted on {when} for a different message; send a new control ID",
                    "MSH-10"))
        if rejection is None and not applied:
            for ev in events:
                apply(uow.orders, ev, cancel_started=self.hl7.cancel_started_steps)
        if watched is not None and rejection is None:
            watched()
        errors: tuple[Hl7Error, ...] = warnings
        code = "AA"
        if rejection is not None:
            code, errors = rejection.ack_code, rejection.errors
        record.outcome = code
        record.error = "; ".join(e.describe() for e in errors)
        record.ack = self._ack(code, message, errors)
        log_.log_message(record)
        return code, record.ack, False

    def oversize_ack(self, head: bytes, size: int) -> bytes:
        """AR for a frame past the size limit, addressed from whatever header arrived."""
        message = _parse_for_ack(head)
        text = self._ack("AR", message, (Hl7Error(
            100, f"frame exceeds the limit of {self.mllp.max_frame_bytes} bytes "
            f"(at least {size} received); connection closed"),))
        return text.encode("ascii", errors="replace")


def content_hash(raw: bytes) -> str:
    """A digest of the message that ignores MSH-7 (a resend may carry a new time stamp) and
    the kind of line ends, to tell a resend from a new message reusing a control ID."""
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    end = text.find(b"\r")
    header, rest = (text, b"") if end < 0 else (text[:end], text[end:])
    if header.startswith(b"MSH") and len(header) > 3:
        fields = header.split(header[3:4])
        if len(fields) > 6:
            fields[6] = b""
        header = header[3:4].join(fields)
    return hashlib.blake2b(header + rest, digest_size=16).hexdigest()


def error_fields(ack_text: str) -> dict[str, str]:
    """The table 0357 codes, conditions and locations of an acknowledgement's ERR segments,
    for the log line. Not the error texts: they may quote the message's values (patient
    data); those stay in the message log and in the acknowledgement."""
    if len(ack_text) < 5:
        return {}
    fs, cs = ack_text[3], ack_text[4]
    codes, conditions, places = [], [], []
    for line in ack_text.split("\r"):
        if not line.startswith("ERR" + fs):
            continue
        fields = line.split(fs) + [""] * 5
        erl = fields[2].split(cs) + [""] * 5
        cwe = fields[3].split(cs) + [""] * 2
        where = erl[0] + (f"-{erl[2]}" if erl[2] else "") + (f".{erl[4]}" if erl[4] else "")
        warning = fields[4] == "W"
        codes.append(cwe[0] + ("W" if warning else ""))
        conditions.append(("Warning: " if warning else "") + cwe[1])
        places.append(where or "-")
    if not codes:
        return {}
    return {"error_code": ",".join(codes), "error": "; ".join(conditions),
            "error_at": ",".join(places)}


def _parse_for_ack(raw: bytes) -> Message | None:
    """The message parsed losslessly as Latin-1, only to address an acknowledgement."""
    text = raw.decode("latin-1")
    end = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0), default=len(text))
    try:
        return parse(text[:end], "latin-1")
    except ParseError:
        return None


def _studies(events: list[Event]) -> list[str]:
    """The Study Instance UIDs of the orders a message changes."""
    return [ev.procedure.study_uid for ev in events
            if isinstance(ev, OrderChange) and ev.procedure.study_uid]


def _origin_of(events: list[Event], keyword: str) -> str:
    for ev in events:
        if keyword in ev.origin:
            return ev.origin[keyword]
    return ""


def _describe(record: MessageRecord, events: list[Event]) -> None:
    for ev in events:
        if isinstance(ev, OrderChange):
            record.patient_id = ev.patient.key.patient_id if ev.patient else ""
            record.accession = str(ev.procedure.attrs.get("AccessionNumber", ""))
        elif isinstance(ev, PatientMerge):
            record.patient_id = ev.surviving.key.patient_id
        elif isinstance(ev, PatientIdChange):
            record.patient_id = ev.patient.key.patient_id
        else:
            record.patient_id = ev.patient.key.patient_id
        break
