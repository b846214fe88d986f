"""Prometheus metrics of one broker: a registry of its own (several brokers may share a process).

Components call the one-line hooks below on their hot paths (a counter increment each);
gauges that SQL answers (outbox depth …) are set by the scrape handler just before rendering.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Prometheus' text exposition format, version 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)

#: distinct values a label taken from the wire (a message type) may have; later ones: "other"
MAX_LABEL_VALUES = 64


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
        self.rejections = Counter("mwl_rejections", "Connections, frames, associations and "
                                  "requests refused, by listener and reason",
                                  ["listener", "reason"], registry=r)
        self._types: set[str] = set()

    # -- hooks (one call per event) ------------------------------------------------------
    def message_in(self, message_type: str, outcome: str, seconds: float) -> None:
        self.hl7_in.labels(self._bounded(message_type), outcome).inc()
        self.hl7_ack_seconds.observe(seconds)

    def message_out(self, message_type: str, outcome: str) -> None:
        self.hl7_out.labels(self._bounded(message_type), outcome).inc()

    def worklist_query(self, outcome: str, seconds: float) -> None:
        self.cfind.labels(outcome).inc()
        self.cfind_seconds.observe(seconds)

    def performed_step(self, status: str) -> None:
        self.mpps.labels(status).inc()

    def rejected(self, listener: str, reason: str) -> None:
        self.rejections.labels(listener, reason).inc()

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

    def render(self) -> bytes:
        text: bytes = generate_latest(self.registry)
        return text

    def _bounded(self, value: str) -> str:
        """A label value from the wire, kept to a bounded set so a sender cannot grow it."""
        value = value or "unknown"
        if value in self._types:
            return value
        if len(self._types) >= MAX_LABEL_VALUES or len(value) > 32:
            return "other"
        self._types.add(value)
        return value
