"""The incremental MLLP decoder (broker.hl7.mllp.Framer): pure byte-level behaviour; and
the client's cancellation."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.hl7.mllp import HEAD_BYTES, Frame, Framer, Garbage, MllpClient, Oversize, frame

MSG_A = b"MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101120000||ORM^O01|1|P|2.3.1\rPID|||123\r"
MSG_B = b"MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101120001||ADT^A08|2|P|2.5.1\rPID|||456\r"


def feed_all(framer: Framer, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events


def payloads_of(events: list[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


# -- helpers ----------------------------------------------------------------------------------


def test_frame_wraps_payload_in_start_and_end_markers() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\r"


# -- single and multiple frames ---------------------------------------------------------------


def test_single_frame_in_one_chunk() -> None:
    framer = Framer()
    assert framer.feed(frame(MSG_A)) == [Frame(MSG_A)]
    assert framer.pending == 0


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    framer = Framer()
    events = framer.feed(frame(MSG_A) + frame(MSG_B) + frame(b"third"))
    assert events == [Frame(MSG_A), Frame(MSG_B), Frame(b"third")]


def test_empty_payload_is_a_frame() -> None:
    assert Framer().feed(b"\x0b\x1c\r") == [Frame(b"")]


def test_incomplete_frame_is_held_and_reported_as_pending() -> None:
    framer = Framer()
    assert framer.feed(b"\x0bMSH|partial") == []
    assert framer.pending == len(b"MSH|partial")
    assert framer.feed(b" rest\x1c\r") == [Frame(b"MSH|partial rest")]
    assert framer.pending == 0


def test_frame_split_byte_by_byte() -> None:
    framer = Framer()
    data = frame(MSG_A) + frame(MSG_B)
    events = feed_all(framer, [data[i : i + 1] for i in range(len(data))])
    assert events == [Frame(MSG_A), Frame(MSG_B)]


def test_end_marker_split_between_chunks() -> None:
    framer = Framer()
    assert framer.feed(b"\x0b" + MSG_A + b"\x1c") == []
    assert framer.feed(b"\r") == [Frame(MSG_A)]


def test_end_marker_split_then_next_frame_in_same_chunk() -> None:
    framer = Framer()
    assert framer.feed(b"\x0b" + MSG_A + b"\x1c") == []
    assert framer.feed(b"\r" + frame(MSG_B)) == [Frame(MSG_A), Frame(MSG_B)]


def test_fs_not_followed_by_cr_is_part_of_the_payload() -> None:
    framer = Framer()
    assert framer.feed(b"\x0babc\x1cdef") == []
    assert framer.feed(b"\x1c\r") == [Frame(b"abc\x1cdef")]


def test_cr_inside_payload_does_not_end_the_frame() -> None:
    framer = Framer()
    assert framer.feed(frame(b"A\rB\r\rC")) == [Frame(b"A\rB\r\rC")]


# -- filler and garbage -----------------------------------------------------------------------


@pytest.mark.parametrize("filler", [b"\x00", b"\r", b"\n", b"\r\n", b" \t", b"\x00\r\n\x00"])
def test_filler_between_frames_is_tolerated_without_garbage(filler: bytes) -> None:
    framer = Framer()
    events = framer.feed(filler + frame(MSG_A) + filler + frame(MSG_B) + filler)
    assert events == [Frame(MSG_A), Frame(MSG_B)]


def test_filler_alone_yields_nothing_and_is_dropped() -> None:
    framer = Framer()
    assert framer.feed(b"\r\n\x00\r\n") == []
    assert framer.pending == 0
    assert framer.feed(frame(MSG_A)) == [Frame(MSG_A)]


def test_junk_before_a_frame_yields_garbage_then_the_frame() -> None:
    framer = Framer()
    events = framer.feed(b"HELLO" + frame(MSG_A))
    assert events == [Garbage(b"HELLO"), Frame(MSG_A)]


def test_junk_mixed_with_filler_is_garbage() -> None:
    framer = Framer()
    events = framer.feed(b"\r\nxx\r\n" + frame(MSG_A))
    assert events == [Garbage(b"\r\nxx\r\n"), Frame(MSG_A)]


def test_junk_without_any_frame_is_reported_and_dropped() -> None:
    framer = Framer()
    assert framer.feed(b"GET / HTTP/1.0\r\n") == [Garbage(b"GET / HTTP/1.0\r\n")]
    assert framer.pending == 0
    # the framer recovers: the next frame is read normally
    assert framer.feed(frame(MSG_B)) == [Frame(MSG_B)]


def test_junk_between_frames_yields_garbage_between_the_frames() -> None:
    framer = Framer()
    events = framer.feed(frame(MSG_A) + b"zz" + frame(MSG_B))
    assert events == [Frame(MSG_A), Garbage(b"zz"), Frame(MSG_B)]


def test_restart_inside_a_frame_discards_the_unfinished_part_as_garbage() -> None:
    framer = Framer()
    events = framer.feed(b"\x0bhalf a message" + frame(MSG_A))
    assert [e for e in events if isinstance(e, Frame)] == [Frame(MSG_A)]
    garbage = [e for e in events if isinstance(e, Garbage)]
    assert len(garbage) == 1 and garbage[0].data.startswith(b"half a message")


# -- oversize ---------------------------------------------------------------------------------


def test_frame_at_the_limit_is_accepted() -> None:
    framer = Framer(max_frame=10)
    assert framer.feed(frame(b"0123456789")) == [Frame(b"0123456789")]


def test_oversize_frame_yields_oversize_once_with_head_and_nothing_after() -> None:
    framer = Framer(max_frame=64)
    big = MSG_A + b"X" * 200
    events = framer.feed(b"\x0b" + big)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, Oversize)
    assert event.size > 64
    assert event.head == big[: event.size][:HEAD_BYTES]
    assert event.head.startswith(b"MSH|^~\\&|RIS|HOSP")
    assert framer.overflowed
    # the rest of the frame, its end and even a good frame afterwards produce nothing more
    assert framer.feed(b"Y" * 100 + b"\x1c\r") == []
    assert framer.feed(frame(MSG_B)) == []
    assert framer.pending == 0


def test_oversize_detected_when_the_end_marker_is_in_the_same_chunk() -> None:
    framer = Framer(max_frame=16)
    events = framer.feed(frame(b"A" * 40) + frame(b"small"))
    assert len(events) == 1
    assert isinstance(events[0], Oversize)
    assert events[0].size == 40
    assert events[0].head.startswith(b"A" * 40)


def test_oversize_head_stops_at_the_end_of_the_oversize_frame() -> None:
    framer = Framer(max_frame=16)
    events = framer.feed(frame(b"A" * 40) + frame(b"small"))
    assert isinstance(events[0], Oversize)
    assert events[0].head == b"A" * 40


def test_oversize_across_chunks_reported_once() -> None:
    framer = Framer(max_frame=32)
    events = feed_all(framer, [b"\x0b" + b"M" * 20, b"M" * 20, b"M" * 20, b"\x1c\r"])
    oversize = [e for e in events if isinstance(e, Oversize)]
    assert len(oversize) == 1 and len(events) == 1
    assert oversize[0].head == b"M" * 40


def test_oversize_head_is_capped_at_head_bytes() -> None:
    framer = Framer(max_frame=HEAD_BYTES + 10)
    events = framer.feed(b"\x0b" + b"H" * (HEAD_BYTES * 3))
    assert len(events) == 1 and isinstance(events[0], Oversize)
    assert events[0].head == b"H" * HEAD_BYTES


def test_frames_before_an_oversize_frame_are_delivered() -> None:
    framer = Framer(max_frame=16)
    events = framer.feed(frame(b"ok") + b"\x0b" + b"B" * 64)
    assert events[0] == Frame(b"ok")
    assert isinstance(events[1], Oversize) and len(events) == 2


def test_frame_at_the_limit_with_end_marker_split_is_accepted() -> None:
    framer = Framer(max_frame=10)
    events = framer.feed(b"\x0b0123456789\x1c") + framer.feed(b"\r")
    assert events == [Frame(b"0123456789")]


# -- property: any chunking gives back exactly the payloads -----------------------------------

payload_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
fillers = st.lists(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b"\t"]), max_size=3).map(
    b"".join
)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.tuples(payload_bytes, fillers), max_size=6),
    data=st.data(),
)
def test_any_chunking_yields_exactly_the_payloads(
    payloads: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(filler + frame(p) for p, filler in payloads)
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12))
    )
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    framer = Framer()
    events = feed_all(framer, chunks)
    assert events == [Frame(p) for p, _ in payloads]
    assert framer.pending == 0


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=0, max_value=40), limit=st.integers(min_value=1, max_value=40))
def test_limit_is_applied_to_the_payload_length_in_a_single_chunk(size: int, limit: int) -> None:
    framer = Framer(max_frame=limit)
    events = framer.feed(frame(b"p" * size))
    if size <= limit:
        assert events == [Frame(b"p" * size)]
    else:
        assert len(events) == 1 and isinstance(events[0], Oversize)


async def test_a_cancelled_connect_is_cancelled_even_as_the_peer_refuses() -> None:
    """A cancel that arrives in the loop turn the refusal does is not lost (Python 3.11's
    ``asyncio.wait_for`` raised the refusal instead, and the outbox lane never stopped)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cancelled = outcomes = 0
    for turns in range(40):
        for _ in range(3):
            attempt = asyncio.create_task(MllpClient("127.0.0.1", port, timeout=2).connect())
            for _ in range(turns):
                await asyncio.sleep(0)
            if attempt.done():  # refused before the cancel: nothing to check
                assert isinstance(attempt.exception(), OSError)
                continue
            attempt.cancel()
            cancelled += 1
            try:
                await attempt
            except asyncio.CancelledError:
                outcomes += 1
    assert cancelled > 0
    assert outcomes == cancelled
