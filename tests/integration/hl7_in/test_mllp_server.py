"""The MLLP listener's own behaviour: limits, pipelining and graceful shutdown."""

from __future__ import annotations

import asyncio

from broker.hl7.mllp import END, START_BYTE, MllpClient, frame
from broker.hl7.server import MllpServer


def make_server(delay: float = 0.0, **kwargs: object) -> tuple[MllpServer, list[bytes]]:
    seen: list[bytes] = []

    async def handler(payload: bytes, peer: str) -> bytes:
        seen.append(payload)
        await asyncio.sleep(delay)
        return b"ACK:" + payload

    server = MllpServer(handler, lambda head, size: b"TOO BIG", host="127.0.0.1", port=0,
                        **kwargs)  # type: ignore[arg-type]
    return server, seen


async def test_many_messages_per_connection_answered_in_order() -> None:
    server, _ = make_server()
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"".join(frame(f"m{i}".encode()) for i in range(50)))  # pipelined
        await writer.drain()
        answers = [await asyncio.wait_for(reader.readuntil(END), 5) for _ in range(50)]
        assert answers == [START_BYTE + f"ACK:m{i}".encode() + END for i in range(50)]
        writer.close()
    finally:
        await server.stop(1)


async def test_connections_over_the_limit_are_refused() -> None:
    server, _ = make_server(max_connections=2)
    await server.start()
    try:
        kept = [await asyncio.open_connection("127.0.0.1", server.bound_port) for _ in range(2)]
        for _, w in kept:  # make sure both are registered before the third arrives
            w.write(frame(b"x"))
            await w.drain()
        for r, _ in kept:
            await asyncio.wait_for(r.readuntil(END), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.refused == 1
        writer.close()
        for _, w in kept:
            w.close()
    finally:
        await server.stop(1)


async def test_graceful_stop_finishes_the_message_in_flight() -> None:
    server, seen = make_server(delay=0.5)
    await server.start()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    client = MllpClient("127.0.0.1", server.bound_port, timeout=5)
    await client.connect()
    sending = asyncio.create_task(client.send(b"in-flight"))
    while not seen:
        await asyncio.sleep(0.01)
    await server.stop(grace=5)
    assert await sending == b"ACK:in-flight"
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    await client.close()
    idle_writer.close()


async def test_stop_abandons_a_message_that_outlives_the_grace_period() -> None:
    server, seen = make_server(delay=10)
    await server.start()
    client = MllpClient("127.0.0.1", server.bound_port, timeout=5)
    await client.connect()
    sending = asyncio.create_task(client.send(b"slow"))
    while not seen:
        await asyncio.sleep(0.01)
    await server.stop(grace=0.2)
    try:
        await sending
        raise AssertionError("an abandoned message must not be acknowledged")
    except ConnectionError:
        pass
    await client.close()


async def test_oversize_frame_answered_then_closed() -> None:
    server, seen = make_server(max_frame=1000)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(START_BYTE + b"y" * 5000)
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(END), 5) == frame(b"TOO BIG")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert seen == []
        writer.close()
    finally:
        await server.stop(1)
