"""`EngineHTTP`: the Engine API's hot queries at the transport's floor.

Measured (bench/scale.py, SSH on loopback): a container inspect through aiodocker costs about
3x a raw HTTP request on one persistent SSH channel. The time goes to the extra hop - aiohttp
talks to a *local* unix socket that :class:`~agentkit.executors.ssh.SSHExecutor` splices into
an SSH channel, so every request and response crosses a socketpair and two more event-loop
wakeups - and to aiohttp's and aiodocker's per-request machinery.

This client speaks HTTP/1.1 with keep-alive straight over the executor's byte streams
(:meth:`Executor.open_unix_connection`: an SSH unix-socket channel, or the local socket), on a
small pool of them: a request takes an idle connection, opens a new one while fewer than
``size`` are open, or waits for one. Only simple requests use it (inspect, list, ping); streams
(logs, events, wait, build) stay on aiodocker.

Errors come out as aiodocker's so the one mapping in :mod:`~agentkit.runtimes.docker_engine`
applies: an HTTP error is a ``DockerError(status, message)``; a broken or malformed
connection an ``OSError``. A request on a kept-alive connection that the engine closed while
idle is retried once on a new one (only GETs: they are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiodocker.exceptions import DockerError

if TYPE_CHECKING:
    from agentkit.executors.base import UnixConnection

__all__ = ["EngineHTTP"]

MAX_HEAD = 64 * 1024  # status line + headers
MAX_BODY = 64 * 1024 * 1024  # a response larger than this is refused (and its connection closed)


class _Broken(OSError):
    """The connection failed or answered something that is not HTTP/1.1 (it is dropped)."""


class EngineHTTP:
    """Keep-alive HTTP/1.1 requests to the Engine API over a small pool of connections.

    Args:
        connect: opens one byte stream to the engine's socket.
        api_version: the path prefix (``"v1.41"``), as aiodocker negotiated it.
        size: at most this many connections (concurrent requests beyond it wait).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[UnixConnection]],
        api_version: str,
        *,
        size: int = 4,
    ) -> None:
        self._connect = connect
        self._prefix = f"/{api_version.strip('/')}/" if api_version else "/"
        self._idle: list[UnixConnection] = []
        self._open = 0
        self._size = max(size, 1)
        self._slots = asyncio.Semaphore(self._size)
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET /<version>/<path>?<params>`` and its JSON body."""
        body = await self.request("GET", path, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _Broken(f"the Docker Engine answered {path} with invalid JSON: {exc}") from exc

    async def request(
        self, method: str, path: str, params: Mapping[str, str] | None = None
    ) -> bytes:
        """One request without a body; returns the response body (2xx) or raises."""
        target = self._prefix + quote(path.lstrip("/"), safe="/")
        if params:
            target += "?" + urlencode(params)
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode("ascii")
        async with self._slots:  # at most `size` requests (and connections) at once
            for attempt in (1, 2):
                conn, reused = await self._take(fresh=attempt == 2)
                try:
                    status, body, keep = await _exchange(conn, head)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    self._drop(conn)
                    if reused and attempt == 1 and method == "GET":
                        continue  # the engine closed it while idle: once more on a new one
                    if isinstance(exc, OSError):
                        raise
                    raise _Broken(f"connection to the Docker Engine broke: {exc!r}") from exc
                except BaseException:  # cancelled mid-request: the connection's state is unknown
                    self._drop(conn)
                    raise
                if keep and not self._closed and len(self._idle) < self._size:
                    self._idle.append(conn)
                else:
                    self._drop(conn)
                if status >= 400:
                    raise DockerError(status, _message(body))
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def _take(self, *, fresh: bool = False) -> tuple[UnixConnection, bool]:
        """An idle connection (reused: True) or a new one (always when ``fresh``)."""
        if self._closed:
            raise _Broken("the Engine API client is closed")
        if self._idle and not fresh:
            return self._idle.pop(), True
        conn = await self._connect()
        self._open += 1
        return conn, False

    def _drop(self, conn: UnixConnection) -> None:
        with contextlib.suppress(Exception):
            conn.writer.close()
        self._open -= 1

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)


async def _exchange(conn: UnixConnection, head: bytes) -> tuple[int, bytes, bool]:
    """Send one request; read one response: (status, body, connection reusable)."""
    conn.writer.write(head)
    reader = conn.reader
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > MAX_HEAD:
        raise _Broken("the Docker Engine sent oversized response headers")
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Broken(f"not an HTTP response from the Docker Engine: {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            if not value.strip().isdigit():
                raise _Broken("the Docker Engine sent a malformed Content-Length")
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            keep = keep and b"close" not in value.lower()
    if status in (204, 304) or (100 <= status < 200):
        return status, b"", keep
    if chunked:
        return status, await _read_chunked(reader), keep
    if length is None:  # body until EOF: the connection cannot be reused
        return status, await reader.read(MAX_BODY + 1), False
    if length > MAX_BODY:
        raise _Broken(f"the Docker Engine's response is too large ({length} bytes)")
    return status, await reader.readexactly(length), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Broken("the Docker Engine sent a malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise _Broken("the Docker Engine's response is too large")
        body += await reader.readexactly(size + 2)
        del body[-2:]


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:1000]
    return body[:300].decode("utf-8", "replace")
