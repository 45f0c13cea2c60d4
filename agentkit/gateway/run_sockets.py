"""The socket transport: each run's model API and egress proxy as two unix sockets of its own.

An agent on the socket transport has no network at all (``NetworkMode: none``). The gateway
makes, for each run, the folder ``<state>/runs/<run id>/`` with

* ``api.sock``: the model API (the same aiohttp server as on the agents' networks, its
  connections counted and timed per run by :class:`~.peers.PeerLimit`);
* ``proxy.sock``: a splice to squid on the gateway's loopback (squid still checks the run's
  login and the allowlist), at most :data:`~.peers.MAX_CONNECTIONS_PER_PEER` at once per run
  and :data:`MAX_SPLICES` in all. Each run's connections come to squid from a loopback address
  of its own (``127.64.0.0/10``), so squid's per-client cap holds per run, as on a network.
  A splice ends as soon as squid's side ends (or :data:`HALF_CLOSE_GRACE` after the agent's
  side did), and buffers at most a few tens of kilobytes each way.

The controller mounts only that folder, read-only, into the run's container, where
``agentkit-forward`` serves both sockets on the container's own loopback. An agent therefore
reaches the gateway and nothing else, with no address, no route and no neighbour: nothing to
scan, and nothing of another run in its mount namespace.

When the run ends its sockets stop and go and its open connections are cut; the empty folder is
removed a day later (:data:`FOLDER_GRACE`: the engine copies nothing out of a finished
container, e.g. its session transcript, while a bind source is missing). The folder outlives a
gateway restart (the agent's bind mount holds the folder, so it is never removed while its run
is alive); :meth:`RunSockets.open` binds the sockets in it again.
Standard library and aiohttp only: it runs inside the gateway container.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable

from .peers import MAX_CONNECTIONS_PER_PEER

__all__ = ["API_SOCKET", "PROXY_SOCKET", "RunSockets", "check_run_id"]

logger = logging.getLogger("agentkit.gateway.sockets")

API_SOCKET = "api.sock"
PROXY_SOCKET = "proxy.sock"
#: bytes read at once from either side of a proxy connection (and the most a splice buffers
#: each way before it stops reading)
_CHUNK = 16384
#: proxy connections at once, all runs together (two descriptors each)
MAX_SPLICES = 8192
#: seconds a splice waits for squid's answer after the agent closed its sending side
HALF_CLOSE_GRACE = 30.0
#: seconds an ended run's empty folder is kept (its finished container still names it as a
#: bind source until the controller has copied the session out and removed it)
FOLDER_GRACE = 86400.0
#: each run's proxy connections come from their own address in this loopback range
SOURCE_BASE = ipaddress.IPv4Address("127.64.0.0")
SOURCE_SPAN = 1 << 22
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as one path component (no ``/``, not ``..``), else ValueError."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ValueError("run_id must be 1-64 letters, digits, '_', '.' or '-'")
    return run_id


class RunSockets:
    """The per-run sockets of one gateway."""

    def __init__(
        self,
        folder: str,
        api_factory: Callable[[str], Callable[[], asyncio.Protocol]],
        proxy_port: int,
        *,
        proxy_host: str = "127.0.0.1",
        limit: int = MAX_CONNECTIONS_PER_PEER,
        total: int = MAX_SPLICES,
        cut_api: Callable[[str], int] | None = None,
    ) -> None:
        self.folder = folder
        self.api_factory = api_factory
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.limit = limit
        self.total = total
        #: cuts the model API connections of a run (its key), when it ends
        self.cut_api = cut_api
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._splices: dict[str, set[asyncio.StreamWriter]] = {}
        self._sources: dict[str, str] = {}
        self._next_source = 1
        self._lock = asyncio.Lock()
        self.refused = 0

    def source(self, run_id: str) -> str:
        """The loopback address the run's proxy connections come to squid from."""
        known = self._sources.get(run_id)
        if known is not None:
            return known
        used = set(self._sources.values())
        while True:
            address = str(SOURCE_BASE + self._next_source)
            self._next_source = self._next_source % (SOURCE_SPAN - 2) + 1
            if address not in used:
                self._sources[run_id] = address
                return address

    def path(self, run_id: str) -> str:
        return os.path.join(self.folder, check_run_id(run_id))

    @property
    def open_runs(self) -> list[str]:
        return sorted(self._servers)

    async def open(self, run_id: str) -> str:
        """The run's folder with both sockets listening (again, after a restart); its path."""
        where = self.path(run_id)
        async with self._lock:
            if run_id in self._servers:
                return where
            await asyncio.to_thread(_make_folder, self.folder, where)
            loop = asyncio.get_running_loop()
            servers: list[asyncio.Server] = []
            try:
                api = os.path.join(where, API_SOCKET)
                proxy = os.path.join(where, PROXY_SOCKET)
                for path in (api, proxy):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # a previous gateway's, dead with it
                servers.append(await loop.create_unix_server(self.api_factory(run_id), api))
                servers.append(
                    await asyncio.start_unix_server(
                        lambda r, w: self._splice(run_id, r, w), proxy, limit=_CHUNK
                    )
                )
                for path in (api, proxy):  # the agent user (1001) connects; nobody else sees it
                    os.chmod(path, 0o666)  # noqa: S103
            except BaseException:
                for server in servers:
                    server.close()
                raise
            self._servers[run_id] = servers
            return where

    async def close(self, run_id: str) -> bool:
        """The run ended: its sockets stop listening, their files go and its open connections
        are cut. The (empty) folder stays until :meth:`sweep` finds it older than
        :data:`FOLDER_GRACE`: the engine cannot copy anything out of a finished container
        (its session transcript) while one of its bind mounts' sources is missing."""
        where = self.path(run_id)
        async with self._lock:
            servers = self._servers.pop(run_id, [])
            for server in servers:
                server.close()
            for writer in self._splices.pop(run_id, set()):
                writer.transport.abort()  # its tunnels end with it
            if self.cut_api is not None:
                self.cut_api(f"run:{run_id}")
            self._sources.pop(run_id, None)
            await asyncio.to_thread(_unlink_sockets, where)
        return bool(servers)

    async def sweep(self, keep: Iterable[str], *, older_than: float = 0.0) -> list[str]:
        """Remove the folders of runs not in ``keep`` last changed more than ``older_than``
        seconds ago (their runs ended, while this gateway or none ran); the sockets of younger
        ones."""
        keep = set(keep)
        names = await asyncio.to_thread(_listdir, self.folder)
        gone = []
        for name in names:
            if name in keep or name in self._servers:
                continue
            try:
                check_run_id(name)
            except ValueError:
                continue
            where = os.path.join(self.folder, name)
            if await asyncio.to_thread(_age, where) < older_than:
                await asyncio.to_thread(_unlink_sockets, where)
                continue
            await asyncio.to_thread(shutil.rmtree, where, True)
            gone.append(name)
        return gone

    def close_all(self) -> None:
        """Stop listening (the folders stay: their runs may outlive this gateway)."""
        for servers in self._servers.values():
            for server in servers:
                server.close()
        self._servers.clear()

    async def _splice(
        self, run_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One proxy connection of ``run_id``: bytes both ways between it and squid."""
        mine = self._splices.setdefault(run_id, set())
        if len(mine) >= self.limit or sum(map(len, self._splices.values())) >= self.total:
            self.refused += 1
            writer.transport.abort()
            return
        mine.add(writer)
        _bound(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await asyncio.open_connection(
                    self.proxy_host,
                    self.proxy_port,
                    limit=_CHUNK,
                    local_addr=(self.source(run_id), 0),
                )
            except OSError as exc:
                logger.warning("proxy connection of %s: squid unreachable: %s", run_id, exc)
                return
            _bound(upstream)
            sending = asyncio.create_task(_pipe(reader, upstream))
            answering = asyncio.create_task(_pipe(up_reader, writer))
            try:
                done, _ = await asyncio.wait(
                    (sending, answering), return_when=asyncio.FIRST_COMPLETED
                )
                if answering not in done:  # the agent is done sending: squid may still answer
                    await asyncio.wait((answering,), timeout=HALF_CLOSE_GRACE)
            finally:
                for task in (sending, answering):
                    task.cancel()
                await asyncio.gather(sending, answering, return_exceptions=True)
        finally:
            mine.discard(writer)
            if not mine and self._splices.get(run_id) is mine:
                del self._splices[run_id]
            for w in (writer, upstream):
                if w is not None:
                    w.close()


def _bound(writer: asyncio.StreamWriter) -> None:
    """At most :data:`_CHUNK` bytes wait in a writer before the copy pauses for it."""
    writer.transport.set_write_buffer_limits(high=_CHUNK)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file (then half-close) or an error on either side."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _make_folder(folder: str, where: str) -> None:
    os.makedirs(folder, mode=0o755, exist_ok=True)
    os.makedirs(where, mode=0o755, exist_ok=True)
    os.chmod(where, 0o755)  # noqa: S103 - whatever the umask: the agent user traverses it


def _unlink_sockets(where: str) -> None:
    for name in (API_SOCKET, PROXY_SOCKET):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(os.path.join(where, name))


def _age(path: str) -> float:
    """Seconds since ``path`` last changed (its entries: the sockets going count)."""
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return float("inf")


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
