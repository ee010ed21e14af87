"""A cap on the HTTP server's connections that idle callers cannot use to lock others out.

Every connection costs a file descriptor, and a client needs no credentials
to open one. `ConnectionGuard` wraps the server's protocol factory (asyncio's
``create_server`` calls it once per accepted connection) and keeps at most
``limit`` connections open:

* while there is room, a connection is let through unchanged;
* when the cap is reached, the oldest connection that has not yet sent one
  complete request head (``\\r\\n\\r\\n``) — an idle or trickling caller —
  is aborted to make room, so a probe of ``/healthz`` still gets in while
  thousands of idle connections are held;
* when every open connection has sent a request (all busy), the new one is
  aborted at once.

Once a connection has sent a request head it is never evicted: the HTTP
layer's own timeouts (keep-alive, header and body reads) end it. Pure
asyncio, so it knows nothing of aiohttp; `counts` are for metrics and tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

_HEAD_END = b"\r\n\r\n"


@dataclass(slots=True)
class Counts:
    """What the guard did since it started."""

    accepted: int = 0
    evicted: int = 0
    """Idle connections closed to make room for a new one."""
    refused: int = 0
    """New connections closed at once because every open one was busy."""


class ConnectionGuard:
    """A protocol factory for ``loop.create_server``; see the module docstring."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], limit: int) -> None:
        self._factory = factory
        self.limit = max(1, limit)
        self._open: dict[_Guarded, None] = {}  # insertion-ordered: oldest first
        self.counts = Counts()

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._open) >= self.limit and not self._evict_idle():
            self.counts.refused += 1
            return _Refused()
        self.counts.accepted += 1
        return _Guarded(self._factory(), self)

    def _evict_idle(self) -> bool:
        for conn in self._open:
            if not conn.requested:
                self.forget(conn)
                conn.abort()
                self.counts.evicted += 1
                return True
        return False

    def track(self, conn: _Guarded) -> None:
        self._open[conn] = None

    def forget(self, conn: _Guarded) -> None:
        self._open.pop(conn, None)


class _Guarded(asyncio.Protocol):
    """Passes every transport callback to the real protocol and notes the first request head."""

    __slots__ = ("_guard", "_inner", "_tail", "_transport", "requested")

    def __init__(self, inner: asyncio.BaseProtocol, guard: ConnectionGuard) -> None:
        self._inner, self._guard = inner, guard
        self._transport: asyncio.BaseTransport | None = None
        self._tail = b""
        self.requested = False

    def abort(self) -> None:
        if isinstance(self._transport, asyncio.Transport):
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard.track(self)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.requested:
            seen = self._tail + data
            self.requested = _HEAD_END in seen
            self._tail = seen[-3:]
        assert isinstance(self._inner, asyncio.Protocol)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert isinstance(self._inner, asyncio.Protocol)
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refused(asyncio.Protocol):
    """Closes the connection as soon as it is made (the guard found no room)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()
