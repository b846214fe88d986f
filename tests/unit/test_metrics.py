"""The gauges the alert rules read: bounded label sets, series that go when their subject
goes, a sender's time that only moves forward, the writer's commit counter."""

from __future__ import annotations

import time

from broker.metrics import MAX_LABEL_VALUES, Metrics


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


LAST = "mwl_hl7_last_message_timestamp_seconds"


def test_senders_are_a_bounded_set() -> None:
    m = Metrics()
    for n in range(MAX_LABEL_VALUES + 5):
        m.message_in("ORM^O01", "AA", 0.001, (f"APP{n}", "HOSP"))
    m.message_in("ORM^O01", "AA", 0.001, ("A" * 65, "HOSP"))
    m.message_in("ORM^O01", "AR", 0.001, ("", ""))  # no MSH-3/4: no sender
    names = {s.labels["application"] for f in m.registry.collect() if f.name == LAST
             for s in f.samples}
    assert len(names) == MAX_LABEL_VALUES + 1 and "other" in names and "" not in names
    assert sample(m, LAST, application="APP0", facility="HOSP") is not None
    assert sample(m, LAST, application=f"APP{MAX_LABEL_VALUES}", facility="HOSP") is None


def test_the_message_log_never_moves_a_sender_back() -> None:
    m = Metrics()
    before = time.time()
    m.message_in("ORM^O01", "AA", 0.001, ("RIS", "HOSP"))
    m.seed_senders([("RIS", "HOSP", before - 100), ("LAB", "", before - 50), ("", "", 1.0)])
    assert sample(m, LAST, application="RIS", facility="HOSP") >= before  # type: ignore[operator]
    assert sample(m, LAST, application="LAB", facility="") == before - 50
    assert sample(m, LAST, application="", facility="") is None


def test_destinations_gone_from_the_outbox_lose_their_series() -> None:
    m = Metrics()
    m.set_destinations({"ris": (3, 40.0, 1), "archive": (0, 0.0, 2)})
    assert sample(m, "mwl_outbox_destination_depth", destination="ris") == 3
    assert sample(m, "mwl_outbox_destination_oldest_age_seconds", destination="ris") == 40
    assert sample(m, "mwl_outbox_destination_dead_letters", destination="archive") == 2
    m.set_destinations({"ris": (0, 0.0, 0)})
    assert sample(m, "mwl_outbox_destination_dead_letters", destination="ris") == 0
    assert sample(m, "mwl_outbox_destination_dead_letters", destination="archive") is None


def test_destinations_past_the_bound_add_up_as_other() -> None:
    m = Metrics()
    many = {f"d{n}": (1, float(n), 1) for n in range(MAX_LABEL_VALUES + 3)}
    m.set_destinations(many)
    assert sample(m, "mwl_outbox_destination_depth", destination="other") == 3
    assert sample(m, "mwl_outbox_destination_oldest_age_seconds",
                  destination="other") == MAX_LABEL_VALUES + 2  # the oldest of them


def test_writer_commits_count_up_from_its_status() -> None:
    m = Metrics()
    m.set_writer(True, {"commits": 5, "queued": 2, "busy_seconds": 0.5})
    m.set_writer(True, {"commits": 9, "queued": 0, "busy_seconds": 0.0})
    assert sample(m, "mwl_store_writer_commits_total") == 9
    assert sample(m, "mwl_store_writer_queued_jobs") == 0
    m.set_writer(False, {})
    assert sample(m, "mwl_store_writer_up") == 0
    assert sample(m, "mwl_store_writer_commits_total") == 9


def test_listeners_not_reported_are_down() -> None:
    m = Metrics()
    m.set_listeners({"admin": True, "mllp": True})
    assert [sample(m, "mwl_listener_up", listener=n) for n in ("mllp", "dicom", "admin")] == [
        1, 0, 1]
