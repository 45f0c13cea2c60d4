"""LocalExecutor: the local machine, through asyncio subprocesses.

Every command runs in its own session (``start_new_session=True``) with a random
``AGENTKIT_CALL_ID`` in its environment, so a timeout, a cancellation or an early close of
:meth:`LocalExecutor.stream` kills the whole process group and then every process still carrying
the id (children that left the group with ``setsid``), not just the direct child.
A program that does not exist gives exit status 127, one that cannot be executed 126, and a
missing ``cwd`` exit status 1, the same as over SSH (where a shell reports them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from agentkit.errors import CommandTimeout
from agentkit.executors._util import (
    CALL_ID_VAR,
    as_bytes,
    before_deadline,
    capture,
    check_argv,
    check_env,
    kill_by_call_id,
    merged_lines,
    shell_status,
)
from agentkit.executors.base import CommandResult, Executor, StreamExit, StreamLine, UnixConnection


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - the group leader changed owner
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class LocalExecutor(Executor):
    """Run commands on this machine. Stateless; ``aclose`` kills commands still running."""

    kind = "local"

    def __init__(self) -> None:
        self._running: set[asyncio.subprocess.Process] = set()
        self._kill_tasks: set[asyncio.Task[int]] = set()

    @property
    def description(self) -> str:
        return "local (this machine)"

    async def _spawn(
        self,
        argv: list[str],
        *,
        stdin: bool,
        env: Mapping[str, str] | None,
        cwd: str | None,
        call_id: str,
    ) -> asyncio.subprocess.Process | CommandResult:
        """Start ``argv``; a start failure becomes a result with the status a shell would give."""
        full_env = dict(os.environ)
        full_env.update(check_env(env))
        full_env[CALL_ID_VAR] = call_id
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            if cwd is not None and not os.path.isdir(cwd):  # noqa: ASYNC240 - a stat, no I/O wait
                return CommandResult(argv, 1, b"", f"cd: {cwd}: {exc.strerror}\n".encode())
            status = 126 if isinstance(exc, PermissionError) else 127
            reason = "permission denied" if status == 126 else "not found"
            return CommandResult(argv, status, b"", f"{argv[0]}: {reason}\n".encode())
        self._running.add(proc)
        return proc

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
        data = as_bytes(stdin)
        start = time.monotonic()
        call_id = secrets.token_hex(8)
        proc = await self._spawn(args, stdin=data is not None, env=env, cwd=cwd, call_id=call_id)
        if isinstance(proc, CommandResult):
            result = proc
        else:
            try:
                out, err = await asyncio.wait_for(_communicate(proc, data), timeout)
            except TimeoutError:
                await self._kill(proc, call_id)
                await proc.wait()
                raise CommandTimeout(args, timeout or 0.0) from None
            finally:
                if proc.returncode is None:  # cancelled
                    self._kill_soon(proc, call_id)
                self._running.discard(proc)
            assert proc.returncode is not None
            status = shell_status(proc.returncode)
            result = CommandResult(args, status, out, err, time.monotonic() - start)
        return result.check() if check else result

    async def stream(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the contract
    ) -> AsyncIterator[StreamLine | StreamExit]:
        args = check_argv(argv)
        start = time.monotonic()
        call_id = secrets.token_hex(8)
        proc = await self._spawn(args, stdin=False, env=env, cwd=cwd, call_id=call_id)
        if isinstance(proc, CommandResult):
            if proc.stderr:
                yield StreamLine("stderr", proc.stderr)
            yield StreamExit(proc.exit_status, 0.0)
            return
        assert proc.stdout is not None
        assert proc.stderr is not None
        deadline = None if timeout is None else start + timeout
        lines = merged_lines(
            proc.stdout.read, proc.stderr.read, deadline=deadline, argv=args, limit=timeout
        )
        finished = False
        try:
            async for line in lines:
                yield line
            code = await before_deadline(proc.wait(), deadline, args, timeout)
            finished = True
            yield StreamExit(shell_status(code), time.monotonic() - start)
        finally:
            if not finished:  # timeout, early close, cancellation, error
                await self._kill(proc, call_id)
            await lines.aclose()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            self._running.discard(proc)

    async def _kill(self, proc: asyncio.subprocess.Process, call_id: str) -> None:
        """Kill the process group, then anything else carrying the call id (setsid children)."""
        _kill_group(proc)
        await asyncio.to_thread(kill_by_call_id, call_id)

    def _kill_soon(self, proc: asyncio.subprocess.Process, call_id: str) -> None:
        """:meth:`_kill` from a place that cannot wait (cancellation)."""
        _kill_group(proc)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(kill_by_call_id, call_id))
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)

    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(_read_file, path)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        await asyncio.to_thread(_write_file_atomic, path, bytes(data), mode)

    async def append_file(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        if data:
            await asyncio.to_thread(_append_file, path, bytes(data), mode)

    async def open_unix_connection(self, path: str) -> UnixConnection:
        reader, writer = await asyncio.open_unix_connection(path)
        return UnixConnection(reader, writer, {"path": path})

    async def forward_unix_socket(self, path: str) -> str:
        return path

    async def aclose(self) -> None:
        for proc in list(self._running):
            _kill_group(proc)
        self._running.clear()
        if self._kill_tasks:
            await asyncio.gather(*self._kill_tasks, return_exceptions=True)


async def _communicate(proc: asyncio.subprocess.Process, data: bytes | None) -> tuple[bytes, bytes]:
    """``proc.communicate(data)`` with each output stream bounded (:func:`capture`)."""

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if data:
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

    assert proc.stdout is not None
    assert proc.stderr is not None
    _, out, err = await asyncio.gather(feed(), capture(proc.stdout.read), capture(proc.stderr.read))
    await proc.wait()
    return out, err


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _append_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _write_file_atomic(path: str, data: bytes, mode: int) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
