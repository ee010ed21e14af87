"""The HTTP connection cap: idle callers are evicted for newcomers, busy ones never; pure asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from fleetd.api.connections import ConnectionGuard
from tests.integration.fleet import eventually

pytestmark = pytest.mark.timeout(20)


class Answering(asyncio.Protocol):
    """Answers every complete request head with a tiny response and keeps the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@asynccontextmanager
async def guarded(limit: int) -> AsyncIterator[tuple[ConnectionGuard, int]]:
    guard = ConnectionGuard(Answering, limit)
    server = await asyncio.get_running_loop().create_server(guard, "127.0.0.1", 0)
    try:
        yield guard, server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return await asyncio.wait_for(reader.readexactly(40), 5)


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True


async def settled(guard: ConnectionGuard, open_: int) -> None:
    async def check() -> bool:
        return guard.open == open_

    await eventually(check, f"{open_} connections open", timeout=5)


async def test_when_full_the_oldest_idle_connection_makes_room_for_a_newcomer() -> None:
    async with guarded(3) as (guard, port):
        idle = [await connect(port) for _ in range(3)]
        await settled(guard, 3)
        reader, writer = await connect(port)
        assert (await ask(reader, writer)).endswith(b"ok")
        assert await closed(idle[0][0])
        assert guard.counts.evicted == 1
        assert guard.open == 3
        for _, w in [*idle, (reader, writer)]:
            w.close()


async def test_a_connection_that_sent_a_request_is_never_evicted_and_a_full_busy_server_refuses() -> None:
    async with guarded(2) as (guard, port):
        busy = [await connect(port) for _ in range(2)]
        for reader, writer in busy:
            assert (await ask(reader, writer)).endswith(b"ok")
        newcomer, writer = await connect(port)
        assert await closed(newcomer)
        assert guard.counts.refused == 1
        for reader, w in busy:  # still served
            assert (await ask(reader, w)).endswith(b"ok")
        writer.close()
        for _, w in busy:
            w.close()


async def test_a_request_head_split_across_packets_counts_as_sent() -> None:
    async with guarded(1) as (guard, port):
        reader, writer = await connect(port)
        for piece in (b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        assert (await asyncio.wait_for(reader.readexactly(40), 5)).endswith(b"ok")
        other, other_writer = await connect(port)
        assert await closed(other)  # the first is busy, not idle: not evicted
        assert guard.counts.evicted == 0
        writer.close()
        other_writer.close()


async def test_closed_connections_free_their_place() -> None:
    async with guarded(2) as (guard, port):
        first = [await connect(port) for _ in range(2)]
        await settled(guard, 2)
        for _, writer in first:
            writer.close()
        await settled(guard, 0)
        reader, writer = await connect(port)
        assert (await ask(reader, writer)).endswith(b"ok")
        assert (guard.counts.evicted, guard.counts.refused) == (0, 0)
        writer.close()
