"""Debian's squid as the gateway's egress proxy: started, restarted on reload, its log read.

squid runs as the unprivileged ``proxy`` user in the foreground (``-N``), configured by
:func:`~.egress.squid_config`; its access log is sent over TCP to a receiver on the gateway's
loopback (:attr:`Squid.log_port`), which hands each line to a callback (refused requests are
recorded per run). With a ``login`` check, squid's auth helper asks it about every proxy login
over a unix socket beside the config (:mod:`.proxy_auth`). If squid dies it is started again.
Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable

from .proxy_auth import LoginCheck, LoginServer, helper_argv

__all__ = ["Squid"]

logger = logging.getLogger("agentkit.gateway.squid")
#: the login socket's folder in the gateway image: root:proxy 0750, so only squid's helpers (and
#: root) reach the socket inside it
AUTH_DIR = "/run/agentkit-auth"
_MAX_LINE = 8192


class Squid:
    """One supervised squid process."""

    def __init__(
        self,
        conf_path: str,
        on_line: Callable[[str], None],
        *,
        user: str | None = "proxy",
        log_port: int = 3130,
        login: LoginCheck | None = None,
    ) -> None:
        self.conf_path = conf_path
        self.logins: LoginServer | None = None
        if login is not None and user and os.geteuid() == 0:  # helpers run as squid's user
            self.logins = LoginServer(os.path.join(AUTH_DIR, "auth.sock"), login, mode=0o666)
        elif login is not None:  # squid runs as this very user
            self.logins = LoginServer(os.path.join(os.path.dirname(conf_path), "auth.sock"), login)
        self.log_port = log_port
        self._log_server: asyncio.Server | None = None
        self.on_line = on_line
        self.user = user
        self.binary = shutil.which("squid") or "/usr/sbin/squid"
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.starts = 0

    @property
    def auth_helper(self) -> list[str] | None:
        """The argv squid runs its auth helper with (``None``: no login required)."""
        return helper_argv(self.logins.path) if self.logins is not None else None

    @property
    def available(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def state(self) -> str:
        if not self.available:
            return "missing"
        if self._proc is not None and self._proc.returncode is None:
            return "running"
        return "stopped"

    def write_config(self, text: str) -> None:
        folder = os.path.dirname(self.conf_path)
        os.makedirs(folder, mode=0o755, exist_ok=True)
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.conf_path)

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # an over-long line: skipped
                    continue
                if not line:
                    return
                try:
                    self.on_line(line.decode("utf-8", "replace").strip())
                except Exception:
                    logger.exception("squid log line not handled")
        finally:
            writer.close()

    async def start(self, config: str) -> None:
        await asyncio.to_thread(self.write_config, config)
        if not self.available:
            logger.error("squid is not installed: agents have no egress at all")
            return
        if self.logins is not None:
            await self.logins.start()
        if self._log_server is None:
            self._log_server = await asyncio.start_server(
                self._receive, "127.0.0.1", self.log_port, limit=_MAX_LINE * 2
            )
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name="squid")

    async def restart(self, config: str) -> None:
        await self.stop()
        await self.start(config)

    async def _supervise(self) -> None:
        while not self._stopping:
            kwargs: dict[str, object] = {}
            if self.user and os.geteuid() == 0:
                kwargs = {"user": self.user, "group": self.user, "extra_groups": []}
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-N",
                "-f",
                self.conf_path,
                stdin=asyncio.subprocess.DEVNULL,
                **kwargs,  # type: ignore[arg-type]
            )
            self.starts += 1
            code = await self._proc.wait()
            if not self._stopping:
                logger.warning("squid exited with %s: starting it again", code)
                await asyncio.sleep(1.0)  # backoff before restarting a crashing squid

    async def stop(self) -> None:
        self._stopping = True
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        """Stop squid, the log receiver and the login server."""
        await self.stop()
        if self.logins is not None:
            await self.logins.close()
        if self._log_server is not None:
            self._log_server.close()
            await self._log_server.wait_closed()
            self._log_server = None
