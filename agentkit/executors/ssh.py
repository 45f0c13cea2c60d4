"""SSHExecutor: a host reached over one persistent asyncssh connection.

* One connection, shared: every ``run``/``stream`` is a channel, SFTP and unix-socket channels
  ride on it too. A trivial command runs right after connecting (sshd turns on TCP_NODELAY only
  after the first session; without it forwarded channels see 40 ms stalls).
* Keepalive every ``ssh_keepalive_interval`` seconds. When the connection drops, the *next* call
  reconnects (tenacity, bounded exponential backoff). A call in flight when it dropped fails with
  :class:`ExecutorConnectionError`, unless ``idempotent=True``: then it runs once more on the new
  connection.
* Host keys are checked against ``settings.known_hosts`` (default ``~/.ssh/known_hosts``). An
  unknown or changed key is refused with a message saying how to add it; trust-on-first-use only
  when ``ssh_trust_on_first_use`` is set, and then the key is appended to that file (a *changed*
  key is refused even then).
* The remote command line is ``exec`` + ``shlex.join(argv)``: every argument arrives byte-exact,
  and argv[0] is always a program (never a shell builtin or function), as with LocalExecutor.
  The login shell must be POSIX (bash, dash, zsh, ksh).
* ``env`` values never enter a command line: they travel on the channel's stdin, in front of the
  caller's stdin, and a constant ``sh`` prologue (:data:`PROLOGUE`) reads them with the ``read``
  builtin, exports them and execs the program, which inherits the rest of stdin.
* On timeout (or an early close of ``stream``, or cancellation) everything the call started is
  killed: each command runs with a random ``AGENTKIT_CALL_ID`` in its environment (inherited by
  its children) and :data:`KILL_SCRIPT`, on a second channel, kills the processes holding it and
  their process groups. (The SSH ``signal`` request is not used: sshd ignores it for root
  sessions, which skip post-auth privilege separation.)

Exceptions are mapped in :mod:`agentkit.executors._errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncssh
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from agentkit.config import Settings
from agentkit.errors import AgentkitError, CommandTimeout, ExecutorConnectionError
from agentkit.executors._errors import SSHErrorContext, is_connection_failure, map_ssh_error
from agentkit.executors._hostkeys import HostKeyClient, HostKeys
from agentkit.executors._sshcommand import (
    KILL_SCRIPT,
    MAX_COMMAND_BYTES,
    PROLOGUE,
    build_command,
    exit_status,
    kill_command,
)
from agentkit.executors._sshstreams import LocalForwardProtocol, PeerSession, StreamSession
from agentkit.executors._util import (
    CALL_ID_VAR,
    as_bytes,
    before_deadline,
    capture,
    check_argv,
    check_env,
    merged_lines,
)
from agentkit.executors.base import CommandResult, Executor, StreamExit, StreamLine, UnixConnection

__all__ = [
    "CALL_ID_VAR",
    "KILL_SCRIPT",
    "MAX_COMMAND_BYTES",
    "PROLOGUE",
    "SSHExecutor",
    "build_command",
]

T = TypeVar("T")


class _Dropped(Exception):
    """Internal: the connection went away during a call."""


class SSHExecutor(Executor):
    """Run commands on ``settings.host`` over one persistent SSH connection."""

    kind = "ssh"

    def __init__(
        self, settings: Settings, *, reconnect_attempts: int = 5, max_sessions: int = 8
    ) -> None:
        """``max_sessions`` caps concurrent command channels on the connection (more calls
        wait for a free one): sshd's ``MaxSessions`` defaults to 10, and SFTP and the kill
        command need one each. Unix-socket channels are not sessions and are not capped."""
        if not settings.host:
            raise ValueError("SSHExecutor needs settings.host (AGENTKIT_HOST)")
        self.settings = settings
        self.host = settings.host
        self.port = settings.ssh_port
        self.user = settings.ssh_user
        self.known_hosts = Path(settings.known_hosts or Path.home() / ".ssh" / "known_hosts")
        self._keys = HostKeys(self.known_hosts, settings.ssh_trust_on_first_use)
        self._reconnect_attempts = max(1, reconnect_attempts)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._forward_dir: str | None = None
        self._forwards: dict[str, tuple[str, asyncio.Server]] = {}
        self._forward_tasks: set[asyncio.Task[None]] = set()
        self._procs: set[asyncssh.SSHClientProcess[bytes]] = set()
        self._kill_tasks: set[asyncio.Task[None]] = set()
        self._sessions = asyncio.Semaphore(max(1, max_sessions))
        #: connections made so far (1 after the first connect; grows on reconnects)
        self.connections_made = 0

    @property
    def description(self) -> str:
        return f"ssh {self.user}@{self.host}:{self.port}"

    def _ctx(self, path: str | None = None) -> SSHErrorContext:
        return SSHErrorContext(
            host=self.host,
            port=self.port,
            user=self.user,
            known_hosts=str(self.known_hosts),
            key_changed=self._keys.changed,
            path=path,
        )

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        await self._connection()

    def _alive(self, conn: asyncssh.SSHClientConnection | None) -> bool:
        return conn is not None and not conn.is_closed()

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None and self._alive(conn):
            return conn
        async with self._lock:
            if self._closed:
                raise ExecutorConnectionError(f"{self.description}: executor is closed")
            conn = self._conn
            if conn is not None and self._alive(conn):
                return conn
            self._conn = None
            self._sftp = None
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self._reconnect_attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception(_transient),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        conn = await self._connect_once()
            except Exception as exc:
                raise map_ssh_error(exc, self._ctx()) from exc
            assert conn is not None
            self._conn = conn
            self.connections_made += 1
            return conn

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        s = self.settings
        options: dict[str, Any] = {}
        if s.ssh_key is not None:
            options["client_keys"] = [str(s.ssh_key)]
        known = await asyncio.to_thread(self._keys.load)
        conn = await asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            known_hosts=known,
            client_factory=lambda: HostKeyClient(self._keys),
            connect_timeout=s.ssh_connect_timeout,
            keepalive_interval=s.ssh_keepalive_interval,
            keepalive_count_max=3,
            config=None,
            **options,
        )
        try:
            # sshd enables TCP_NODELAY once a session ran; forwarded channels stall without it
            await asyncio.wait_for(conn.run("true", check=False), s.ssh_connect_timeout)
            await asyncio.to_thread(self._keys.record_pending)  # trust-on-first-use
        except BaseException:
            conn.close()
            raise
        return conn

    async def _call(
        self,
        op: Callable[[asyncssh.SSHClientConnection], Awaitable[T]],
        *,
        idempotent: bool,
        path: str | None = None,
    ) -> T:
        """Run ``op`` on the live connection; reconnect/retry per the idempotency rules."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await op(conn)
            except AgentkitError:
                raise
            except _Dropped as exc:
                failure: BaseException = exc.__cause__ or exc
            except (asyncssh.Error, OSError) as exc:
                if not (is_connection_failure(exc) or not self._alive(conn)):
                    raise map_ssh_error(exc, self._ctx(path)) from exc
                failure = exc
            if idempotent and attempt == 1:
                continue
            reason = str(failure) or type(failure).__name__
            raise ExecutorConnectionError(
                f"{self.description}: connection lost during the call ({reason});"
                " it was not retried because it is not marked idempotent"
                if not idempotent
                else f"{self.description}: connection lost twice during the call ({reason})"
            ) from failure
        raise AssertionError("unreachable")  # pragma: no cover

    # --- commands -----------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the contract
        check: bool = False,
        idempotent: bool = False,
    ) -> CommandResult:
        args = check_argv(argv)
        call_id = secrets.token_hex(8)
        env_vars = check_env(env)
        data = as_bytes(stdin)
        devnull = data is None and not env_vars and cwd is None
        command, header = build_command(args, env_vars, cwd, call_id, devnull_stdin=devnull)
        payload = header + (data or b"")

        async def op(conn: asyncssh.SSHClientConnection) -> CommandResult:
            start = time.monotonic()
            proc = await self._start(conn, command)
            try:
                if payload:
                    proc.stdin.write(payload)
                if not devnull:
                    proc.stdin.write_eof()
                out, err = await asyncio.wait_for(
                    asyncio.gather(capture(proc.stdout.read), capture(proc.stderr.read)),
                    timeout,
                )
                await proc.wait_closed()
            except TimeoutError:
                await self._kill(conn, proc, call_id)
                raise CommandTimeout(args, timeout or 0.0) from None
            except (asyncssh.Error, OSError) as exc:
                self._kill_soon(conn, proc, call_id)
                if conn.is_closed() or is_connection_failure(exc):
                    raise _Dropped() from exc
                raise
            except BaseException:
                self._kill_soon(conn, proc, call_id)
                raise
            finally:
                self._finish(proc)
            status = exit_status(proc)
            if status is None:
                raise _Dropped() from asyncssh.ConnectionLost("channel closed without a status")
            return CommandResult(args, status, out, err, time.monotonic() - start)

        result = await self._call(op, idempotent=idempotent)
        return result.check() if check else result

    async def _start(
        self, conn: asyncssh.SSHClientConnection, command: bytes
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Open a session channel running ``command`` (holds a session slot until _finish)."""
        await self._sessions.acquire()
        try:
            delay = 0.05
            while True:
                try:
                    proc = await conn.create_process(cast(str, command), encoding=None)
                    break
                except asyncssh.ChannelOpenError as exc:
                    if conn.is_closed():
                        raise _Dropped() from exc
                    if delay > 2.0:  # sshd kept refusing: MaxSessions below max_sessions + 2?
                        raise ExecutorConnectionError(
                            f"{self.description}: the SSH server refused a new session ({exc});"
                            " lower SSHExecutor(max_sessions=...) or raise MaxSessions in"
                            " sshd_config"
                        ) from exc
                    await asyncio.sleep(delay)
                    delay *= 2
                except (asyncssh.Error, OSError) as exc:
                    if conn.is_closed() or is_connection_failure(exc):
                        raise _Dropped() from exc
                    raise
        except BaseException:
            self._sessions.release()
            raise
        self._procs.add(proc)
        return proc

    def _finish(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        """Give back the session slot taken by :meth:`_start` (once)."""
        if proc in self._procs:
            self._procs.discard(proc)
            self._sessions.release()

    async def _kill(
        self,
        conn: asyncssh.SSHClientConnection,
        proc: asyncssh.SSHClientProcess[bytes],
        call_id: str,
    ) -> None:
        """Kill everything the call started (see :data:`KILL_SCRIPT`) and close the channel.

        Runs on a second channel. (The SSH ``signal`` request is not used: sshd ignores it for
        root sessions, which skip post-auth privilege separation, and it reaches only the
        session's process group.)
        """
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    conn.run(kill_command(call_id), check=False),
                    self.settings.ssh_connect_timeout,
                )
        with contextlib.suppress(Exception):
            proc.close()

    def _kill_soon(
        self,
        conn: asyncssh.SSHClientConnection,
        proc: asyncssh.SSHClientProcess[bytes],
        call_id: str,
    ) -> None:
        """:meth:`_kill` from a place that cannot wait (cancellation)."""
        task = asyncio.get_running_loop().create_task(self._kill(conn, proc, call_id))
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)

    async def stream(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the contract
    ) -> AsyncIterator[StreamLine | StreamExit]:
        args = check_argv(argv)
        call_id = secrets.token_hex(8)
        env_vars = check_env(env)
        devnull = not env_vars and cwd is None
        command, header = build_command(args, env_vars, cwd, call_id, devnull_stdin=devnull)
        start = time.monotonic()
        conn = await self._connection()
        try:
            proc = await self._start(conn, command)
        except _Dropped as exc:
            raise map_ssh_error(exc.__cause__ or exc, self._ctx()) from exc
        except (asyncssh.Error, OSError) as exc:
            raise map_ssh_error(exc, self._ctx()) from exc
        if header:
            proc.stdin.write(header)
        if not devnull:
            proc.stdin.write_eof()
        deadline = None if timeout is None else start + timeout
        lines = merged_lines(
            proc.stdout.read, proc.stderr.read, deadline=deadline, argv=args, limit=timeout
        )
        finished = False
        try:
            async for line in lines:
                yield line
            await before_deadline(proc.wait_closed(), deadline, args, timeout)
            status = exit_status(proc)
            if status is None:
                raise ExecutorConnectionError(
                    f"{self.description}: connection lost while streaming {args[0]!r}"
                )
            finished = True
            yield StreamExit(status, time.monotonic() - start)
        finally:
            if not finished:  # timeout, early close, cancellation, error
                await self._kill(conn, proc, call_id)
            with contextlib.suppress(Exception):
                proc.close()
            self._finish(proc)
            await lines.aclose()

    # --- files (SFTP on the same connection) -------------------------------------------

    async def _sftp_client(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        if self._sftp is None or self._sftp_conn is not conn:
            self._sftp = await conn.start_sftp_client()
            self._sftp_conn = conn
        return self._sftp

    async def read_file(self, path: str) -> bytes:
        async def op(conn: asyncssh.SSHClientConnection) -> bytes:
            sftp = await self._sftp_client(conn)
            async with sftp.open(path, "rb") as f:
                return cast(bytes, await f.read())

        return await self._call(op, idempotent=True, path=path)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        payload = bytes(data)

        async def op(conn: asyncssh.SSHClientConnection) -> None:
            sftp = await self._sftp_client(conn)
            attrs = asyncssh.SFTPAttrs(permissions=0o600)
            try:
                async with sftp.open(tmp, "wb", attrs) as f:
                    await f.write(payload)
                await sftp.chmod(tmp, mode)
                await sftp.posix_rename(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    await sftp.remove(tmp)
                raise

        await self._call(op, idempotent=True, path=path)

    async def append_file(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        if not data:
            return
        payload = bytes(data)

        async def op(conn: asyncssh.SSHClientConnection) -> None:
            sftp = await self._sftp_client(conn)
            attrs = asyncssh.SFTPAttrs(permissions=mode)
            async with sftp.open(path, "ab", attrs) as f:  # O_APPEND on the host
                await f.write(payload)

        # not idempotent: a retry after a drop mid-write could append twice
        await self._call(op, idempotent=False, path=path)

    # --- unix sockets ------------------------------------------------------------------

    async def open_unix_connection(self, path: str) -> UnixConnection:
        loop = asyncio.get_running_loop()

        async def op(conn: asyncssh.SSHClientConnection) -> UnixConnection:
            reader = asyncio.StreamReader(loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            session = StreamSession(protocol)
            await conn.create_unix_connection(lambda: session, path)
            assert session.transport is not None
            writer = asyncio.StreamWriter(session.transport, protocol, reader, loop)
            return UnixConnection(reader, writer, {"path": path, "host": self.host})

        return await self._call(op, idempotent=True, path=path)

    async def forward_unix_socket(self, path: str) -> str:
        if path in self._forwards:
            return self._forwards[path][0]
        if self._closed:
            raise ExecutorConnectionError(f"{self.description}: executor is closed")
        await self._connection()  # fail early (bad host key, auth) rather than per client
        if self._forward_dir is None:
            self._forward_dir = tempfile.mkdtemp(prefix="agentkit-fwd-")
        local = os.path.join(self._forward_dir, f"{len(self._forwards)}.sock")
        loop = asyncio.get_running_loop()

        async def open_channel(
            factory: Callable[[], PeerSession],
        ) -> asyncssh.SSHUNIXChannel[bytes]:
            async def op(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHUNIXChannel[bytes]:
                chan, _ = await conn.create_unix_connection(factory, path)
                return chan

            return await self._call(op, idempotent=True, path=path)

        server = await loop.create_unix_server(
            lambda: LocalForwardProtocol(open_channel, self._forward_tasks), local
        )
        os.chmod(local, 0o600)
        self._forwards[path] = (local, server)
        return local

    # --- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        for proc in list(self._procs):
            with contextlib.suppress(Exception):
                proc.close()
        self._procs.clear()
        if self._kill_tasks:
            await asyncio.gather(*self._kill_tasks, return_exceptions=True)
        for _local, server in self._forwards.values():
            server.close()
        for task in list(self._forward_tasks):
            task.cancel()
        self._forwards.clear()
        if self._forward_dir is not None:
            with contextlib.suppress(OSError):
                for name in os.listdir(self._forward_dir):
                    os.unlink(os.path.join(self._forward_dir, name))
                os.rmdir(self._forward_dir)
            self._forward_dir = None
        conn, self._conn = self._conn, None
        self._sftp = None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def _transient(exc: BaseException) -> bool:
    """Connect errors worth another attempt (not host key or auth problems)."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    return isinstance(exc, OSError | asyncssh.ConnectionLost | asyncssh.DisconnectError)
