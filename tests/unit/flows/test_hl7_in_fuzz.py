"""Fuzz properties of the inbound HL7 path: the MLLP framer on any bytes in any chunks, the
decoder on any bytes, the parser on any text, and the mapping engine (then the order workflow
on a real SQLite store) on mutated valid messages: nothing raises but its documented error."""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.hl7 import charset
from broker.hl7.ack import Hl7Reject, build_ack
from broker.hl7.message import ParseError, parse
from broker.hl7.mllp import Frame, Framer, Garbage, Oversize, frame
from broker.mapping.engine import map_message
from broker.mapping.schema import load_mappings
from broker.mapping.specs import MappingSet
from broker.model.orders import DomainError
from broker.store.orders import OrderRepo
from broker.store.sqlite.connection import connect, migrate
from broker.workflow.orders import apply
from tests.support.samples import order

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "testdata" / "hl7").glob("*.hl7"))
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- MLLP framer -------------------------------------------------------------------------------

#: bytes rich in the framing characters
stream_bytes = st.lists(st.one_of(st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"\x00",
                                                   b"\n", b"MSH|"]),
                                  st.binary(max_size=12)), max_size=40).map(b"".join)


@FUZZ
@given(data=stream_bytes, cuts=st.lists(st.integers(0, 10_000), max_size=10),
       limit=st.integers(1, 64))
def test_framer_on_any_bytes_in_any_chunks_stays_bounded(data: bytes, cuts: list[int],
                                                         limit: int) -> None:
    framer = Framer(max_frame=limit)
    events: list[object] = []
    for chunk in chunked(data, cuts):
        events += framer.feed(chunk)
        assert framer.pending <= limit + 1  # never holds more than a frame (+ a split FS)
    assert all(isinstance(e, Frame | Garbage | Oversize) for e in events)
    assert all(len(e.payload) <= limit for e in events if isinstance(e, Frame))
    oversize = [i for i, e in enumerate(events) if isinstance(e, Oversize)]
    assert oversize in ([], [len(events) - 1])  # at most one, and nothing after it


@FUZZ
@given(data=stream_bytes, cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_framer_frames_do_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    whole = [e for e in Framer().feed(data) if isinstance(e, Frame)]
    framer = Framer()
    pieces = [e for chunk in chunked(data, cuts) for e in framer.feed(chunk)
              if isinstance(e, Frame)]
    assert pieces == whole


clean_payload = st.binary(max_size=80).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
junk = st.binary(max_size=30).map(lambda b: b.replace(b"\x0b", b""))


@FUZZ
@given(items=st.lists(st.tuples(junk, clean_payload), max_size=6), tail=junk,
       cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_framer_recovers_every_frame_between_garbage(items: list[tuple[bytes, bytes]],
                                                      tail: bytes, cuts: list[int]) -> None:
    stream = b"".join(g + frame(p) for g, p in items) + tail
    framer = Framer()
    events = [e for chunk in chunked(stream, cuts) for e in framer.feed(chunk)]
    assert [e.payload for e in events if isinstance(e, Frame)] == [p for _, p in items]


# -- decoder (MSH-18) --------------------------------------------------------------------------

msh_bytes = st.builds(
    lambda name, body: b"MSH|^~\\&|RIS|HOSP|||20261122||ORM^O01|1|P|2.3.1|||||"
    + name.encode("latin-1") + b"\r" + body,
    st.sampled_from([*charset.STANDARD_CHARSETS, "LATIN1", "8859/99", "UTF-16", " gbk "]),
    st.binary(max_size=120))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), msh_bytes), sniff=st.booleans(),
       fallbacks=st.lists(st.sampled_from(["latin-1", "gb18030", "utf-8", "nope"]), max_size=2),
       override=st.sampled_from([None, "", "gb18030", "utf-8", "iso2022_jp", "ascii"]))
def test_decoder_raises_only_charset_error(raw: bytes, sniff: bool, fallbacks: list[str],
                                           override: str | None) -> None:
    fields = charset.peek_msh(raw)
    for n in range(0, 22):
        assert isinstance(charset.msh_value(fields, n), str)
    try:
        decoded = charset.decode(raw, aliases={"LATIN1": "latin-1"}, override=override,
                                 sniff_utf8=sniff, fallbacks=tuple(fallbacks), msh=fields)
    except charset.CharsetError as exc:
        assert str(exc)
    else:
        assert isinstance(decoded.text, str)


# -- parser ------------------------------------------------------------------------------------

hl7_text = st.one_of(
    st.text(max_size=200),
    st.builds(lambda head, body: head + body,
              st.sampled_from(["MSH|^~\\&|", "MSH|^~\\&|A|B|C|D|2026||ORM^O01|X|P|2.3.1\r",
                               "MSH#^~\\&#", "MSH|", "MSH|^~\\&"]),
              st.text(alphabet=st.one_of(st.sampled_from(list("|^~\\&\r\nABCMSHPIDOR019X. \"'")),
                                         st.characters()), max_size=200)))


@FUZZ
@given(text=hl7_text)
def test_parser_raises_only_parse_error_and_parsed_messages_read_safely(text: str) -> None:
    try:
        message = parse(text, "utf_8")
    except ParseError as exc:
        assert exc.reason and exc.location and 100 <= exc.code <= 207
        return
    assert message.segments[0].name == "MSH"
    for value in (message.control_id, message.message_type, message.version,
                  message.processing_id, message.sending_application,
                  message.sending_facility):
        assert isinstance(value, str)
    for seg in message.segments:
        for raw in seg.fields[2 if seg.name == "MSH" else 1:]:
            message.text(message.component(raw, 2))
    assert "MSA|AR" in build_ack("AR", message, application="MWLBROKER", facility="")


# -- mapping engine and order workflow on mutated valid messages ---------------------------------


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(ROOT / "mappings")


@pytest.fixture(scope="module")
def store(mappings: MappingSet) -> Iterator[sqlite3.Connection]:
    """A real store holding the valid messages' orders, so that mutants update them."""
    with tempfile.TemporaryDirectory(prefix="fuzz-store-") as tmp:
        conn = connect(Path(tmp) / "broker.sqlite", synchronous="OFF")
        migrate(conn)
        for text in VALID:
            conn.execute("BEGIN")
            try:
                for ev in map_message(parse(text, "utf_8"), mappings):
                    apply(OrderRepo(conn, 0.0), ev)
                conn.execute("COMMIT")
            except (Hl7Reject, DomainError):
                conn.execute("ROLLBACK")
        try:
            yield conn
        finally:
            conn.close()


def valid_messages() -> list[str]:
    texts = [charset.decode(p.read_bytes()).text for p in SAMPLES]
    texts += [order(n).text() for n in range(5)]
    texts += [order(n, control_id=f"CHANGE{n}", order_control=c, order_status=s).text()
              for n, (c, s) in enumerate([("XO", "SC"), ("CA", "CA"), ("DC", "CA"),
                                          ("SC", "CM")], start=1)]
    return texts


VALID = valid_messages()
FIELD_VALUES = st.one_of(
    st.sampled_from(["", '""', "^", "~", "&", "\\", "\\X41\\", "\\XZZ\\", "\\H\\", "\\E\\",
                     "99999999", "2026", "20261340", "202611221060", "1.2..3", "1.2.3",
                     "-1", "1e400", "NaN", "NW", "CA", "DC", "XO", "SC", "CM", "IP",
                     "A^B^C^D^E^F", "x" * 300, "KG", "M", "MSH", "\r", "|"]),
    st.text(max_size=20))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    segments = draw(st.sampled_from(VALID)).rstrip("\r").split("\r")
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["field", "field", "component", "drop", "dup", "swap",
                                     "truncate"]))
        i = draw(st.integers(0, len(segments) - 1))
        fields = segments[i].split("|")
        if kind in ("field", "component") and len(fields) > 1:
            j = draw(st.integers(1, len(fields) + 2))
            fields += [""] * (j + 1 - len(fields))
            value = draw(FIELD_VALUES)
            if kind == "component":
                parts = fields[j].split("^")
                k = draw(st.integers(0, len(parts)))
                parts += [""] * (k + 1 - len(parts))
                parts[k] = value
                value = "^".join(parts)
            fields[j] = value
            segments[i] = "|".join(fields)
        elif kind == "drop" and len(segments) > 1 and i > 0:
            del segments[i]
        elif kind == "dup":
            segments.insert(i, segments[i])
        elif kind == "swap" and i > 0:
            k = draw(st.integers(1, len(segments) - 1))
            segments[i], segments[k] = segments[k], segments[i]
        elif kind == "truncate":
            segments[i] = segments[i][:draw(st.integers(0, len(segments[i])))]
    return "\r".join(segments) + "\r"


@FUZZ
@given(text=mutated())
def test_mapping_and_workflow_raise_only_documented_errors(
        text: str, mappings: MappingSet, store: sqlite3.Connection) -> None:
    try:
        message = parse(text, "utf_8")
        events = map_message(message, mappings)
    except (ParseError, Hl7Reject):
        return
    store.execute("BEGIN")
    try:
        for ev in events:
            apply(OrderRepo(store, 0.0), ev)
    except (DomainError, sqlite3.IntegrityError):
        pass  # answered AE by the ingest path
    finally:
        store.execute("ROLLBACK")


def test_mutations_reach_the_store() -> None:
    """The valid messages map to events without mutation (the property is not vacuous)."""
    mapped = load_mappings(ROOT / "mappings")
    assert sum(1 for text in VALID if _maps(text, mapped)) >= len(VALID) // 2


def _maps(text: str, mapped: MappingSet) -> bool:
    try:
        return bool(map_message(parse(text, "utf_8"), mapped))
    except (ParseError, Hl7Reject):
        return False
