"""What the broker calls to audit: one method per event. Each builds the DICOM audit message
and its syslog frame in the caller's thread, writes it to the spool (no network, no fsync,
thread-safe) and returns; the sender thread delivers it. A recording that fails is logged
and never reaches the caller. ``DisabledAuditTrail`` (``audit.enabled: false``) has the same
methods and does nothing."""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.audit import codes as c
from broker.audit import events as ev
from broker.audit import syslog
from broker.audit.message import AuditEvent, AuditSource, Participant, to_xml
from broker.audit.sender import Sender
from broker.audit.spool import Spool
from broker.audit.transport import StreamTransport, Transport, UdpTransport
from broker.config import AuditSettings, DatabaseSettings
from broker.logs import event, exception_site
from broker.net.tls import client_context

log = logging.getLogger("broker.audit")
TRANSPORTS = ("tls", "tcp", "udp")
#: connection refusals (their reason, as listeners report them) that are security alerts;
#: others (caps, timeouts, shutting down) are load, not identity, and are not audited
REFUSALS = {"address_not_allowed": "address not allowed",
            "tls_handshake": "TLS handshake failed",
            "calling_ae_not_allowed": "calling AE title not allowed",
            "sender_not_allowed": "HL7 sender not allowed"}


class AuditTrail:
    """The enabled trail (see the module's text); built by ``open_trail``."""

    enabled = True

    def __init__(self, spool: Spool, sender: Sender, local: ev.Local, source: AuditSource,
                 framing: syslog.Framing) -> None:
        self.spool = spool
        self.sender = sender
        self.local = local
        self.source = source
        self.framing = framing

    # -- lifecycle (app.py: first to start, last to stop) ---------------------------------
    def start(self) -> None:
        """Open the spool (what a previous run left is sent first) and start the sender."""
        waiting = self.spool.open()
        self.sender.start()
        event(log, "audit_trail_started", repository=self.sender.destination,
              transport=self.sender.transport.name, spool=str(self.spool.directory),
              spooled=waiting)

    def stop(self, grace: float = 5.0) -> None:
        """Deliver what waits for up to ``grace`` seconds; the rest stays spooled."""
        self.sender.stop(grace)
        event(log, "audit_trail_stopped", sent=self.sender.sent, spooled=self.spool.count)
        self.spool.close()

    def record(self, message: AuditEvent) -> None:
        """Spool one audit message (never raises)."""
        try:
            frame = syslog.message(to_xml(message, self.source), self.framing,
                                   syslog.severity(message.outcome), message.when)
            self.spool.put(frame)
        except Exception as exc:
            what = message.event_id.meaning if isinstance(message, AuditEvent) else "?"
            event(log, "audit_record_failed", logging.ERROR, audit_event=what,
                  **exception_site(exc))

    # -- events -------------------------------------------------------------------------
    def application_start(self) -> None:
        self.record(ev.application_activity(self.local, True, _now()))

    def application_stop(self) -> None:
        self.record(ev.application_activity(self.local, False, _now()))

    def user_authentication(self, user: str, peer: str, success: bool, *,
                            logout: bool = False, locked_out: bool = False,
                            detail: str = "") -> None:
        """A console or API sign-in (or sign-out); ``locked_out``: this failure made the
        address wait (a serious failure)."""
        outcome = c.SUCCESS if success else c.SERIOUS_FAILURE if locked_out else c.MINOR_FAILURE
        self.record(ev.user_authentication(self.local, user, peer, outcome, logout, _now(),
                                           detail))

    def query(self, calling_ae: str, peer: str, identifier: bytes, sop_class: str,
              transfer_syntax: str, success: bool = True) -> None:
        """A C-FIND: its identifier as received (bytes in ``transfer_syntax``)."""
        self.record(ev.query(self.local, calling_ae.strip(), peer, identifier, sop_class,
                             transfer_syntax, c.SUCCESS if success else c.MINOR_FAILURE,
                             _now()))

    def patient_record(self, action: str, patient: ev.PatientRef, sender: Participant) -> None:
        """A patient created ('C'), updated ('U') or deleted ('D') by ``sender``."""
        self.record(ev.patient_record(self.local, action, sender, patient, _now()))

    def order_record(self, action: str, patient: ev.PatientRef, order: ev.OrderRef,
                     sender: Participant) -> None:
        """An order created ('C'), updated ('U') or cancelled ('D') by ``sender``."""
        self.record(ev.order_record(self.local, action, sender, patient, order, _now()))

    def procedure_record(self, action: str, patient: ev.PatientRef,
                         studies: tuple[ev.StudyRef, ...], mpps_uid: str, status: str,
                         performer: Participant) -> None:
        """An MPPS created ('C') or updated ('U') by a modality."""
        self.record(ev.procedure_record(self.local, action, performer, patient, studies,
                                        mpps_uid, status, _now()))

    def security_alert(self, reason: str, peer: str, detail: str, *, listener: str,
                       user: str = "") -> None:
        """A peer refused: ``reason`` as the listeners name it (REFUSALS; others are not
        audited), ``detail`` their text, ``user`` the calling AE or HL7 sender if known."""
        what = REFUSALS.get(reason)
        if what is None:
            return
        self.record(ev.security_alert(self.local, c.NODE_AUTHENTICATION, peer,
                                      f"{listener}: {what}: {detail}", _now(), user))


class DisabledAuditTrail(AuditTrail):
    """``audit.enabled: false``: the same methods, doing nothing."""

    enabled = False

    def __init__(self) -> None:
        pass

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    start = stop = record = application_start = application_stop = _nothing
    user_authentication = query = patient_record = order_record = _nothing
    procedure_record = security_alert = _nothing


def open_trail(settings: AuditSettings, node: str, ae_title: str,
               database: DatabaseSettings) -> AuditTrail:
    """The trail the settings ask for (TLS contexts are built here: a bad file stops the
    start with the setting named)."""
    if not settings.enabled:
        return DisabledAuditTrail()
    transport: Transport
    if settings.transport == "udp":
        transport = UdpTransport(settings.host, settings.port)
    else:
        tls = dataclasses.replace(settings.tls, enabled=settings.transport == "tls")
        transport = StreamTransport(settings.host, settings.port, settings.timeout,
                                    client_context(tls, "audit.tls"), tls.server_hostname)
    spool = Spool(spool_directory(settings, database), settings.spool_max_bytes)
    sender = Sender(spool, transport, f"{settings.host}:{settings.port}",
                    backoff_base=settings.backoff_base, backoff_max=settings.backoff_max)
    host = socket.gethostname()
    local = ev.Local(node, ae_title, host, _os_user())
    return AuditTrail(spool, sender, local,
                      AuditSource(settings.audit_source_id or node, settings.enterprise_site_id),
                      syslog.Framing(settings.facility, host, "mwl-broker", str(os.getpid())))


def spool_directory(settings: AuditSettings, database: DatabaseSettings) -> Path:
    """``audit.spool_directory``, else ``audit-spool`` beside the SQLite file (the data
    folder, also when the database is PostgreSQL)."""
    if settings.spool_directory:
        return Path(settings.spool_directory)
    return Path(database.path).parent / "audit-spool"


def _now() -> datetime:
    return datetime.now(UTC)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
