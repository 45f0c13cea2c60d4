"""A cap on the connections one client address may hold open to the gateway's model API.

An agent that opens thousands of idle connections would exhaust the gateway's file descriptors
and take the model API down for every other agent. :class:`PeerLimit` wraps the aiohttp server's
protocol factory (``AppRunner.server``) for ``loop.create_server``: a connection beyond the cap is
closed at once, before a byte is read. Standard library only: it runs inside the gateway container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_CONNECTIONS_PER_PEER", "PeerLimit"]

#: open connections one client address may hold to the model API at once
MAX_CONNECTIONS_PER_PEER = 64


class PeerLimit:
    """Protocol factory: ``factory``'s protocols, at most ``limit`` per client address."""

    def __init__(
        self, factory: Callable[[], asyncio.BaseProtocol], limit: int = MAX_CONNECTIONS_PER_PEER
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.open: dict[str, int] = {}
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

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


class _Counted(asyncio.Protocol):
    """Counts its connection against its address, and hands everything to the real protocol."""

    def __init__(self, limits: PeerLimit) -> None:
        self.limits = limits
        self.peer: str | None = None
        self.inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if not self.limits.acquire(peer):
            transport.close()
            return
        self.peer = peer
        self.inner = self.limits.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.limits.release(self.peer)
            self.peer = None
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
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
