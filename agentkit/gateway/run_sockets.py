"""The socket transport: each run's model API and egress proxy as two unix sockets of its own.

An agent on the socket transport has no network at all (``NetworkMode: none``). The gateway
makes, for each run, the folder ``<state>/runs/<run id>/`` with

* ``api.sock``: the model API (the same aiohttp server as on the agents' networks, its
  connections counted and timed per run by :class:`~.peers.PeerLimit`);
* ``proxy.sock``: a splice to squid on the gateway's loopback (squid still checks the run's
  login and the allowlist), at most :data:`~.peers.MAX_CONNECTIONS_PER_PEER` at once per run.

The controller mounts only that folder, read-only, into the run's container, where
``agentkit-forward`` serves both sockets on the container's own loopback. An agent therefore
reaches the gateway and nothing else, with no address, no route and no neighbour: nothing to
scan, and nothing of another run in its mount namespace.

The folder outlives a gateway restart (the agent's bind mount holds the folder, so it is never
removed while its run is alive); :meth:`RunSockets.open` binds the sockets in it again.
Standard library and aiohttp only: it runs inside the gateway container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable

from .peers import MAX_CONNECTIONS_PER_PEER

__all__ = ["API_SOCKET", "PROXY_SOCKET", "RunSockets", "check_run_id"]

logger = logging.getLogger("agentkit.gateway.sockets")

API_SOCKET = "api.sock"
PROXY_SOCKET = "proxy.sock"
#: bytes read at once from either side of a proxy connection
_CHUNK = 65536
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
    ) -> None:
        self.folder = folder
        self.api_factory = api_factory
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.limit = limit
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._proxied: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self.refused = 0

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
        """The run ended: its sockets stop listening and its folder goes."""
        where = self.path(run_id)
        async with self._lock:
            servers = self._servers.pop(run_id, [])
            for server in servers:
                server.close()
            await asyncio.to_thread(shutil.rmtree, where, True)
        return bool(servers)

    async def sweep(self, keep: Iterable[str]) -> list[str]:
        """Remove the folders of runs not in ``keep`` (their runs ended while no gateway ran)."""
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
            await asyncio.to_thread(shutil.rmtree, os.path.join(self.folder, name), True)
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
        if self._proxied.get(run_id, 0) >= self.limit:
            self.refused += 1
            writer.close()
            return
        self._proxied[run_id] = self._proxied.get(run_id, 0) + 1
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await asyncio.open_connection(
                    self.proxy_host, self.proxy_port, limit=_CHUNK
                )
            except OSError as exc:
                logger.warning("proxy connection of %s: squid unreachable: %s", run_id, exc)
                return
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        finally:
            left = self._proxied.get(run_id, 1) - 1
            if left > 0:
                self._proxied[run_id] = left
            else:
                self._proxied.pop(run_id, None)
            for w in (writer, upstream):
                if w is not None:
                    w.close()


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


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
