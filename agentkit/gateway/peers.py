"""Bounds on the connections of the gateway's model API: how many per client address, and how
long a client may take to send a request.

An agent that opens thousands of idle connections would exhaust the gateway's file descriptors
and take the model API down for every other agent; one that opens a connection and trickles its
request head a byte at a time (slow loris) would hold a slot forever, since aiohttp bounds
neither. :class:`PeerLimit` wraps the aiohttp server's protocol factory (``AppRunner.server``)
for ``loop.create_server``:

* a connection beyond :data:`MAX_CONNECTIONS_PER_PEER` from one address is closed at once,
  before a byte is read;
* a connection gets :data:`HEAD_TIMEOUT` seconds to deliver a complete request head, counted
  from its opening and, on a kept-alive connection, from the first byte after the previous
  answer (an idle kept-alive connection is closed after :data:`IDLE_TIMEOUT`, aiohttp's own
  keep-alive time); the clock stops while the application handles a request (its
  :attr:`PeerLimit.middleware` marks that), and a connection past its deadline is closed. The
  body then has its own bound (:data:`BODY_TIMEOUT`, enforced by the proxy around its read).

Standard library and aiohttp only: it runs inside the gateway container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["BODY_TIMEOUT", "HEAD_TIMEOUT", "IDLE_TIMEOUT", "MAX_CONNECTIONS_PER_PEER", "PeerLimit"]

#: open connections one client address may hold to the model API at once
MAX_CONNECTIONS_PER_PEER = 64
#: seconds a connection may take to send a complete request head
HEAD_TIMEOUT = 30.0
#: seconds a request body may take to arrive (32 MB at the slowest honest link)
BODY_TIMEOUT = 300.0
#: seconds a kept-alive connection may stay silent between requests (aiohttp's keep-alive time)
IDLE_TIMEOUT = 75.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PeerLimit:
    """Protocol factory: ``factory``'s protocols, at most ``limit`` per client address, each
    closed when a request head takes longer than ``head_timeout`` seconds."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol] | None = None,
        limit: int = MAX_CONNECTIONS_PER_PEER,
        *,
        head_timeout: float = HEAD_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.open: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0
        self._conns: dict[asyncio.BaseTransport, _Counted] = {}

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

    def keyed(self, key: str) -> Callable[[], asyncio.Protocol]:
        """A factory whose connections all count against ``key`` (a unix socket's connections
        have no address: each run's socket is its own key)."""
        return lambda: _Counted(self, key)

    def acquire(self, peer: str) -> bool:
        if self.open.get(peer, 0) >= self.limit:
            self.refused += 1
            return False
        self.open[peer] = self.open.get(peer, 0) + 1
        return True

    def release(self, peer: str) -> None:
        left = self.open.get(peer, 0) - 1
        if left > 0:
            self.open[peer] = left
        else:
            self.open.pop(peer, None)

    def cut(self, peer: str) -> int:
        """Close every connection of ``peer`` now (a run that ended); how many there were."""
        conns = [t for t, c in self._conns.items() if c.peer == peer]
        for transport in conns:
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            else:
                transport.close()
        return len(conns)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stops the connection's head clock while its request is handled; restarts it after."""
        conn = self._conns.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.handling += 1
        conn.idle = False
        conn.disarm()
        try:
            return await handler(request)
        finally:
            conn.handling -= 1
            if conn.handling == 0:
                conn.idle = True  # the next request's head is timed from its first byte
                conn.arm(self.idle_timeout)


class _Counted(asyncio.Protocol):
    """Counts its connection against its address, keeps its head deadline, and hands
    everything else to the real protocol."""

    def __init__(self, limits: PeerLimit, key: str | None = None) -> None:
        self.limits = limits
        self.key = key
        self.peer: str | None = None
        self.inner: Any = None
        self.transport: asyncio.BaseTransport | None = None
        self.handling = 0
        self.idle = False  # between two requests, not one byte of the next yet
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if self.key is not None:
            peer = f"run:{self.key}"
        if self.limits.factory is None or not self.limits.acquire(peer):
            transport.close()
            return
        self.peer = peer
        self.transport = transport
        self.limits._conns[transport] = self
        self.arm(self.limits.head_timeout)
        self.inner = self.limits.factory()
        self.inner.connection_made(transport)

    def arm(self, seconds: float) -> None:
        self.disarm()
        if self.transport is not None and seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or self.handling:
            return
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            self.arm(self.limits.head_timeout)  # the client still takes the previous answer
            return
        self.limits.timed_out += 1
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.transport is not None:
            self.limits._conns.pop(self.transport, None)
            self.transport = None
        if self.peer is not None:
            self.limits.release(self.peer)
            self.peer = None
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.idle and not self.handling:
            self.idle = False
            self.arm(self.limits.head_timeout)  # a new request begins: its head is timed
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            result: bool | None = self.inner.eof_received()
            return result
        return None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
