"""broker.audit.syslog: RFC 5424 headers as ITI-20 wants them, octet-counting frames."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from broker.audit.syslog import BOM, Framing, field, message, octet_counted, severity
from tests.support.audit import parse_syslog, split_octet_counted

XML = "<?xml version='1.0' encoding='utf-8'?>\n<AuditMessage>é</AuditMessage>".encode()
WHEN = datetime(2026, 5, 4, 3, 2, 1, 120034, tzinfo=UTC)


def test_header_fields() -> None:
    framing = Framing(10, "broker.example.org", "mwl-broker", "4242")
    parsed = parse_syslog(message(XML, framing, severity("0"), WHEN))
    assert parsed.pri == 85  # authpriv (10) × 8 + notice (5): "<85>" as PS3.15 A.7 says
    assert parsed.version == "1"
    assert parsed.timestamp == "2026-05-04T03:02:01.120034Z"
    assert (parsed.hostname, parsed.app_name, parsed.procid) == ("broker.example.org",
                                                                 "mwl-broker", "4242")
    assert parsed.msgid == "IHE+RFC-3881"
    assert parsed.structured_data == "-"
    assert parsed.msg == BOM + XML and parsed.xml == XML


def test_failures_are_warnings_and_the_facility_is_a_setting() -> None:
    assert severity("0") == 5
    assert [severity(o) for o in ("4", "8", "12")] == [4, 4, 4]
    parsed = parse_syslog(message(XML, Framing(13, "h", "a", "1"), severity("8"), WHEN))
    assert parsed.pri == 13 * 8 + 4


def test_timestamp_is_utc_whatever_zone_the_time_has() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=-5)))
    stamp = parse_syslog(message(XML, Framing(), 5, local)).timestamp
    assert stamp == "2026-05-04T03:02:01.120034Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)


def test_header_fields_keep_printable_ascii_within_their_limits() -> None:
    assert field("host name", 255) == "hostname"
    assert field("bröker", 48) == "brker"
    assert field("", 48) == "-" and field("   ", 48) == "-"
    assert field("x" * 300, 255) == "x" * 255
    parsed = parse_syslog(message(XML, Framing(10, "", "", ""), 5, WHEN))
    assert (parsed.hostname, parsed.app_name, parsed.procid) == ("-", "-", "-")


def test_octet_counting_counts_bytes_not_characters() -> None:
    one = message(XML, Framing(10, "h", "a", "1"), 5, WHEN)
    two = message("<AuditMessage>日本</AuditMessage>".encode(), Framing(), 4, WHEN)
    stream = octet_counted(one) + octet_counted(two)
    assert stream.startswith(b"%d <85>1 " % len(one))
    assert split_octet_counted(stream) == [one, two]
