"""Bridges between asyncssh channels and asyncio.

* :class:`ChannelTransport` + :class:`StreamSession` make an SSH unix-socket channel look like an
  ``asyncio`` transport, so :meth:`SSHExecutor.open_unix_connection` hands out real
  ``asyncio.StreamReader`` / ``asyncio.StreamWriter`` objects (flow control included).
* :class:`LocalForwardProtocol` + :class:`PeerSession` splice a local unix-socket client to a
  channel opened on the executor's *current* connection, so a forwarded path keeps working
  across reconnects (each client connection is one multiplexed channel).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh


class ChannelTransport(asyncio.Transport):
    """An ``asyncio.Transport`` over an asyncssh channel."""

    def __init__(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        super().__init__()
        self._chan = chan
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._chan.write(bytes(data))

    def write_eof(self) -> None:
        self._chan.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._closing = True
        self._chan.close()

    def abort(self) -> None:
        self._closing = True
        self._chan.abort()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._chan.pause_reading()

    def resume_reading(self) -> None:
        # asyncio transports deliver resumed data from the loop, never inside this call:
        # StreamReader creates its waiter only after calling resume_reading()
        asyncio.get_running_loop().call_soon(self._chan.resume_reading)

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return int(self._chan.get_write_buffer_size())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._chan.get_extra_info(name, default)


class StreamSession(asyncssh.SSHUNIXSession[bytes]):
    """Feeds channel events to an ``asyncio.StreamReaderProtocol``."""

    def __init__(self, protocol: asyncio.StreamReaderProtocol) -> None:
        self.protocol = protocol
        self.transport: ChannelTransport | None = None

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self.transport = ChannelTransport(chan)
        self.protocol.connection_made(self.transport)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> bool:
        return bool(self.protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport._closing = True
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


class PeerSession(asyncssh.SSHUNIXSession[bytes]):
    """The channel half of a forward: writes what the channel receives to the local client."""

    def __init__(self, local: asyncio.Transport) -> None:
        self._local = local

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._local.write(data)

    def eof_received(self) -> bool:
        if self._local.can_write_eof():
            self._local.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._local.close()

    def pause_writing(self) -> None:
        self._local.pause_reading()

    def resume_writing(self) -> None:
        self._local.resume_reading()


OpenChannel = Callable[[Callable[[], PeerSession]], Awaitable[asyncssh.SSHUNIXChannel[bytes]]]


class LocalForwardProtocol(asyncio.Protocol):
    """The local half of a forward: one accepted client, spliced to one SSH channel."""

    def __init__(self, open_channel: OpenChannel, tasks: set[asyncio.Task[None]]) -> None:
        self._open_channel = open_channel
        self._tasks = tasks
        self._transport: asyncio.Transport | None = None
        self._chan: asyncssh.SSHUNIXChannel[bytes] | None = None
        self._pending: list[bytes] = []
        self._eof = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        transport = self._transport
        assert transport is not None
        try:
            chan = await self._open_channel(lambda: PeerSession(transport))
        except (Exception, asyncio.CancelledError):
            transport.close()
            return
        if self._closed:
            chan.close()
            return
        self._chan = chan
        for data in self._pending:
            chan.write(data)
        self._pending.clear()
        if self._eof:
            chan.write_eof()
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._chan is None:
            self._pending.append(data)
        else:
            self._chan.write(data)

    def eof_received(self) -> bool:
        if self._chan is None:
            self._eof = True
        else:
            with contextlib.suppress(Exception):
                self._chan.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._chan is not None:
            self._chan.close()

    def pause_writing(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_writing(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()
