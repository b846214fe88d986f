"""Prometheus metrics of one broker: a registry of its own (several brokers may share a process).

Components call the one-line hooks below on their hot paths (a counter increment each);
gauges that SQL answers (outbox depth …) are set by the scrape handler just before rendering.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from broker.net.certs import Certificate

#: Prometheus' text exposition format, version 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)

#: distinct values a label taken from the wire (a message type) may have; later ones: "other"
MAX_LABEL_VALUES = 64
#: the ``after_minutes`` of ``mwl_steps_not_started`` (an alert rule picks one)
LATE_STEP_MINUTES = (15, 30, 60, 120, 240)
LISTENERS = ("mllp", "dicom", "admin")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.hl7_in = Counter("mwl_hl7_messages_in", "HL7 messages received, by type and "
                              "acknowledgement code (AA, AE, AR)", ["type", "outcome"],
                              registry=r)
        self.hl7_ack_seconds = Histogram("mwl_hl7_ack_seconds", "From a message's arrival to "
                                         "its acknowledgement being ready (stored)",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.hl7_out = Counter("mwl_hl7_messages_out", "HL7 messages sent from the outbox, by "
                               "type and outcome (delivered, dead, retry)", ["type", "outcome"],
                               registry=r)
        self.cfind = Counter("mwl_cfind", "Modality worklist C-FIND requests, by outcome "
                             "(done, cancelled, refused, failed)", ["outcome"], registry=r)
        self.cfind_seconds = Histogram("mwl_cfind_seconds", "Time to answer a worklist C-FIND",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.associations = Gauge("mwl_dicom_associations_active",
                                  "DICOM associations open now", registry=r)
        self.mpps = Counter("mwl_mpps", "MPPS N-CREATE / N-SET accepted by the status they set "
                            "(refused: answered with a failure status)", ["status"], registry=r)
        self.outbox_depth = Gauge("mwl_outbox_depth", "Outbox messages waiting to be delivered",
                                  registry=r)
        self.outbox_oldest_age = Gauge("mwl_outbox_oldest_age_seconds",
                                       "Age of the oldest message waiting in the outbox",
                                       registry=r)
        self.dead_letters = Gauge("mwl_outbox_dead_letters",
                                  "Outbox messages refused by their destination (dead letters)",
                                  registry=r)
        self.nodes_alive = Gauge("mwl_cluster_nodes_alive", "Brokers sharing this database and"
                                 " seen within the last 10 s", registry=r)
        self.lane_owner = Gauge("mwl_outbox_lane_owned", "1 for each outbox lane this broker"
                                " owns now (0: another broker, or nobody, owns it)", ["lane"],
                                registry=r)
        self.fhir_requests = Counter("mwl_fhir_requests", "FHIR requests at /fhir, by "
                                     "interaction (transaction, batch, create, update, read, "
                                     "search, capabilities) and outcome (HTTP status class: 2xx,"
                                     " 4xx, 5xx)", ["interaction", "outcome"], registry=r)
        self.rejections = Counter("mwl_rejections", "Connections, frames, associations and "
                                  "requests refused, by listener and reason",
                                  ["listener", "reason"], registry=r)
        self.outbox_destination_depth = Gauge(
            "mwl_outbox_destination_depth", "Outbox messages waiting to be delivered, by "
            "destination", ["destination"], registry=r)
        self.outbox_destination_oldest_age = Gauge(
            "mwl_outbox_destination_oldest_age_seconds", "Age of the oldest message waiting "
            "for a destination (0: none waits)", ["destination"], registry=r)
        self.outbox_destination_dead = Gauge(
            "mwl_outbox_destination_dead_letters", "Outbox messages refused by a destination "
            "(dead letters), by destination", ["destination"], registry=r)
        self.commitments_timed_out = Gauge(
            "mwl_storage_commitments_timed_out", "Storage commitment requests whose report "
            "did not come before their timeout, in the last hour", registry=r)
        self.completions_overdue = Gauge(
            "mwl_completions_overdue", "Completion notices still waiting after their "
            "deadline", registry=r)
        self.steps_not_started = Gauge(
            "mwl_steps_not_started", "Scheduled steps (no MPPS) whose start time passed at "
            "least after_minutes ago, and at most 12 hours ago", ["after_minutes"],
            registry=r)
        self.hl7_last_message = Gauge(
            "mwl_hl7_last_message_timestamp_seconds", "Unix time of the last HL7 message from "
            "each sender (MSH-3, MSH-4) seen", ["application", "facility"], registry=r)
        self.listener_up = Gauge("mwl_listener_up", "1 when the listener is bound and serving",
                                 ["listener"], registry=r)
        self.writer_up = Gauge("mwl_store_writer_up", "1 when the store writer's threads run "
                               "and take work", registry=r)
        self.writer_queued = Gauge("mwl_store_writer_queued_jobs", "Jobs waiting for the store "
                                   "writer", registry=r)
        self.writer_busy = Gauge("mwl_store_writer_busy_seconds", "How long the writer has been"
                                 " on its current batch or fsync (0: idle)", registry=r)
        self.writer_commits = Counter("mwl_store_writer_commits", "Transactions the store "
                                      "writer committed", registry=r)
        self.cert_expiry = Gauge(
            "mwl_tls_certificate_expiry_timestamp_seconds", "notAfter (Unix time) of the "
            "certificate each TLS listener or outbound connection presents, read at start",
            ["kind", "name", "file"], registry=r)
        self.upstream_up = Gauge("mwl_upstream_up", "1 when the last poll of the upstream "
                                 "worklist succeeded (0: the broker answers from its copy)",
                                 ["upstream"], registry=r)
        self.upstream_last_success = Gauge(
            "mwl_upstream_last_success_timestamp_seconds", "Unix time of the upstream "
            "worklist's last good poll", ["upstream"], registry=r)
        self.upstream_items = Gauge("mwl_upstream_items", "Requested procedures mirrored "
                                    "from the upstream worklist", ["upstream"], registry=r)
        self._seen: dict[str, set[str]] = {}
        self._commits_seen = 0
        self._last_message: dict[tuple[str, str], float] = {}

    # -- hooks (one call per event) ------------------------------------------------------
    def message_in(self, message_type: str, outcome: str, seconds: float,
                   sender: tuple[str, str] = ("", "")) -> None:
        self.hl7_in.labels(self._bounded(message_type), outcome).inc()
        self.hl7_ack_seconds.observe(seconds)
        if any(sender):
            self._sender_seen(self._sender(*sender), time.time())

    def message_out(self, message_type: str, outcome: str) -> None:
        self.hl7_out.labels(self._bounded(message_type), outcome).inc()

    def worklist_query(self, outcome: str, seconds: float) -> None:
        self.cfind.labels(outcome).inc()
        self.cfind_seconds.observe(seconds)

    def performed_step(self, status: str) -> None:
        self.mpps.labels(status).inc()

    def fhir_request(self, interaction: str, outcome: str) -> None:
        self.fhir_requests.labels(interaction, outcome).inc()

    def rejected(self, listener: str, reason: str) -> None:
        self.rejections.labels(listener, reason).inc()

    def upstream_polled(self, upstream: str, up: bool, items: int | None = None,
                        at: float | None = None) -> None:
        self.upstream_up.labels(upstream).set(1 if up else 0)
        if items is not None:
            self.upstream_items.labels(upstream).set(items)
        if at is not None:
            self.upstream_last_success.labels(upstream).set(at)

    # -- scrape ----------------------------------------------------------------------------
    def count_associations(self, active: Callable[[], int]) -> None:
        """Read the number of open associations at each scrape."""
        self.associations.set_function(lambda: float(active()))

    def set_outbox(self, depth: int, oldest_age: float, dead: int) -> None:
        self.outbox_depth.set(depth)
        self.outbox_oldest_age.set(oldest_age)
        self.dead_letters.set(dead)

    def set_cluster(self, alive: int, lanes: dict[str, bool]) -> None:
        """Brokers alive, and for each lane whether this one owns it."""
        self.nodes_alive.set(alive)
        for lane, owned in lanes.items():
            self.lane_owner.labels(self._bounded(lane)).set(1 if owned else 0)

    def set_destinations(self, stats: Mapping[str, tuple[int, float, int]]) -> None:
        """(depth, oldest age, dead letters) of each destination, those not given dropped."""
        gauges = (self.outbox_destination_depth, self.outbox_destination_oldest_age,
                  self.outbox_destination_dead)
        merged: dict[str, tuple[int, float, int]] = {}
        for name, (depth, age, dead) in stats.items():
            label = self._bounded(name, "destination")  # "other": those past the bound
            was = merged.get(label, (0, 0.0, 0))
            merged[label] = (was[0] + depth, max(was[1], age), was[2] + dead)
        for gauge in gauges:
            gauge.clear()
        for label, values in merged.items():
            for gauge, value in zip(gauges, values, strict=True):
                gauge.labels(label).set(value)

    def set_workflow(self, commitments_timed_out: int, completions_overdue: int,
                     steps_not_started: Mapping[int, int]) -> None:
        self.commitments_timed_out.set(commitments_timed_out)
        self.completions_overdue.set(completions_overdue)
        for minutes in LATE_STEP_MINUTES:
            self.steps_not_started.labels(str(minutes)).set(steps_not_started.get(minutes, 0))

    def seed_senders(self, last: Iterable[tuple[str, str, float]]) -> None:
        """Senders' last message times from the message log (at start: senders seen before
        this process), unless a message of this process set a later one."""
        for application, facility, at in last:
            if not (application or facility):
                continue
            labels = self._sender(application, facility)
            if at > self._last_message.get(labels, 0.0):
                self._sender_seen(labels, at)

    def _sender_seen(self, labels: tuple[str, str], at: float) -> None:
        self._last_message[labels] = at
        self.hl7_last_message.labels(*labels).set(at)

    def set_listeners(self, up: Mapping[str, bool]) -> None:
        for name in LISTENERS:
            self.listener_up.labels(name).set(1 if up.get(name) else 0)

    def set_writer(self, alive: bool, status: Mapping[str, Any]) -> None:
        """From the writer's health row: alive, and its counters (``BatchWriter.status()``)."""
        self.writer_up.set(1 if alive else 0)
        self.writer_queued.set(status.get("queued", 0))
        self.writer_busy.set(status.get("busy_seconds", 0.0))
        commits = int(status.get("commits", 0))
        if commits > self._commits_seen:
            self.writer_commits.inc(commits - self._commits_seen)
        self._commits_seen = max(self._commits_seen, commits)

    def set_certificates(self, certificates: Iterable[Certificate]) -> None:
        """The expiry of each certificate the broker presents (read at start)."""
        for c in certificates:
            self.cert_expiry.labels(c.kind, c.name, c.file).set(c.not_after)

    def render(self) -> bytes:
        text: bytes = generate_latest(self.registry)
        return text

    def _bounded(self, value: str, kind: str = "type", longest: int = 32) -> str:
        """A label value from the wire, kept to a bounded set (of its ``kind``) so a sender
        cannot grow it."""
        value = value or "unknown"
        seen = self._seen.setdefault(kind, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES or len(value) > longest:
            return "other"
        seen.add(value)
        return value

    def _sender(self, application: str, facility: str) -> tuple[str, str]:
        """(application, facility) labels of a sender, a bounded set of pairs."""
        if max(len(application), len(facility)) > 64 \
                or self._bounded(f"{application}|{facility}", "sender", 129) == "other":
            return "other", "other"
        return application, facility
