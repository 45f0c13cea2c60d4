"""The executor contract: run argv commands, stream output, move files, reach unix sockets.

An executor is "a host": :class:`~agentkit.executors.local.LocalExecutor` for this machine,
:class:`~agentkit.executors.ssh.SSHExecutor` for a machine reached over SSH. Every service
(containers, workspaces) talks to its host only through this interface, so everything works the
same locally and remotely.

Rules every implementation keeps:

* argv lists only; no method accepts a shell string;
* ``env`` values never appear in any process's argv (they are secrets more often than not);
* on timeout the process is killed and :class:`~agentkit.errors.CommandTimeout` is raised;
* backend exceptions are mapped to :mod:`agentkit.errors` in one place per backend.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from agentkit.errors import CommandFailed


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of one command."""

    argv: list[str]
    exit_status: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def check(self) -> CommandResult:
        """Raise :class:`CommandFailed` unless the exit status is 0; return self."""
        if self.exit_status != 0:
            raise CommandFailed(self)
        return self


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One line of a streamed command's output (``stream`` is ``"stdout"`` or ``"stderr"``)."""

    stream: str
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", "replace").rstrip("\n")


@dataclass(frozen=True, slots=True)
class StreamExit:
    """The last item of :meth:`Executor.stream`: the command's exit status."""

    exit_status: int
    duration: float = 0.0


@dataclass(slots=True)
class UnixConnection:
    """A byte stream to a unix socket on the executor's host."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    extra: dict[str, object] = field(default_factory=dict)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Executor(abc.ABC):
    """A host that runs commands. Use as ``async with executor: ...`` or call :meth:`aclose`."""

    #: short name for diagnostics: "local" or "ssh"
    kind: str = "abstract"

    @property
    def description(self) -> str:
        """Human description, e.g. ``ssh root@host:22``."""
        return self.kind

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-command deadline, part of the contract
        check: bool = False,
        idempotent: bool = False,
    ) -> CommandResult:
        """Run ``argv`` to completion.

        Args:
            argv: program and arguments; each element arrives byte-exact.
            stdin: bytes fed to the process; ``None`` gives it an empty, closed stdin.
            env: extra environment variables; never visible in any argv.
            cwd: working directory on the host.
            timeout: seconds; the process is killed and ``CommandTimeout`` raised when exceeded.
            check: raise ``CommandFailed`` (carrying the result) on a non-zero exit.
            idempotent: safe to re-run if the connection drops mid-call (SSH retries once).
        """

    @abc.abstractmethod
    def stream(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamLine | StreamExit]:
        """Run ``argv`` and yield its output lines as they come, then one :class:`StreamExit`.

        Closing the iterator early kills the process.
        """

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes:
        """Read a whole file on the host. Raises ``FileNotFoundError`` if it does not exist."""

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write a file atomically (temp file + rename) with ``mode`` bits; parents must exist."""

    async def append_file(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Append ``data`` to a file (created with ``mode`` if missing); parents must exist.

        No process is started where the executor can avoid it (locally: ``O_APPEND``; over
        SSH: SFTP on the same connection). This default runs ``dd oflag=append``.
        """
        if data:
            await self.run(
                ["dd", f"of={path}", "oflag=append", "conv=notrunc", "status=none"],
                stdin=bytes(data),
                check=True,
            )

    @abc.abstractmethod
    async def open_unix_connection(self, path: str) -> UnixConnection:
        """Open a byte stream to the unix socket ``path`` on the host (e.g. the Docker API)."""

    @abc.abstractmethod
    async def forward_unix_socket(self, path: str) -> str:
        """Return a unix socket path *on this machine* that reaches ``path`` on the host.

        Locally that is ``path`` itself; over SSH it is a local socket forwarded through the
        persistent connection (each client connection becomes one multiplexed channel). HTTP
        clients that want a socket path (aiodocker/aiohttp's ``UnixConnector``) use this.
        The forward lives until :meth:`aclose`.
        """

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists on the host."""
        result = await self.run(["test", "-e", path], idempotent=True)
        return result.exit_status == 0

    async def makedirs(self, path: str, *, mode: int = 0o755) -> None:
        """``mkdir -p`` on the host."""
        await self.run(["mkdir", "-p", "-m", f"{mode:o}", "--", path], check=True, idempotent=True)

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Establish any connection eagerly (SSH); a no-op locally."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and kill anything still running."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
