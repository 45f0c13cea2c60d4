"""Small helpers shared by the executors (argument checks, stream line splitting)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from agentkit.errors import CommandTimeout
from agentkit.executors.base import StreamLine

T = TypeVar("T")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Every command gets ``AGENTKIT_CALL_ID=<random hex>`` in its environment (inherited by all it
#: starts), so a timeout can find and kill everything the call started, even children that left
#: its process group.
CALL_ID_VAR = "AGENTKIT_CALL_ID"
RESERVED_ENV_PREFIXES = ("__agentkit_", CALL_ID_VAR)


def check_argv(argv: Sequence[str]) -> list[str]:
    """Validate an argv list: a non-empty sequence of ``str`` (not a shell string), no NULs."""
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a list of strings, not a shell string")
    out = list(argv)
    if not out:
        raise ValueError("argv must not be empty")
    for arg in out:
        if not isinstance(arg, str):
            raise TypeError(f"argv elements must be str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("argv elements must not contain NUL bytes")
    return out


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate environment names (shell identifiers) and values (str, no NUL)."""
    if not env:
        return {}
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name: {name!r}")
        if name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"environment variable name {name!r} is reserved")
        if not isinstance(value, str):
            raise TypeError(f"environment value for {name} must be str")
        if "\0" in value:
            raise ValueError(f"environment value for {name} contains a NUL byte")
        out[name] = value
    return out


def shell_status(returncode: int) -> int:
    """A return code as a shell reports it: killed by signal N (``-N``) becomes ``128 + N``."""
    return returncode if returncode >= 0 else 128 - returncode


def as_bytes(stdin: bytes | str | None) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode("utf-8")
    return bytes(stdin)


MAX_LINE = 1 << 20  # a "line" longer than this is yielded in pieces

#: ``run()`` keeps at most this many bytes of each output stream: its first and last halves,
#: with a marker saying how much was dropped in between. A command whose output an agent or a
#: remote server controls (git talking to a remote, a listing of agent-made files) cannot fill
#: the controller's memory; the rest is read and discarded so the process never blocks.
MAX_CAPTURE = 16 << 20


class BoundedCapture:
    """The first and last ``limit / 2`` bytes of a stream, and how many were dropped."""

    def __init__(self, limit: int = MAX_CAPTURE) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        excess = len(self.tail) - self.half
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def value(self) -> bytes:
        if not self.dropped:
            return bytes(self.head + self.tail)
        marker = f"\n[... {self.dropped} bytes of output dropped ...]\n".encode()
        return bytes(self.head) + marker + bytes(self.tail)


async def capture(read: Callable[[int], Awaitable[bytes]], limit: int = MAX_CAPTURE) -> bytes:
    """Read a stream to its end with ``read``, keeping a :class:`BoundedCapture` of it."""
    kept = BoundedCapture(limit)
    while True:
        chunk = await read(65536)
        if not chunk:
            return kept.value()
        kept.add(chunk)


async def pump_lines(
    read: Callable[[int], Awaitable[bytes]],
    stream: str,
    queue: asyncio.Queue[StreamLine | None],
) -> None:
    """Read chunks with ``read`` and put one :class:`StreamLine` per line, then ``None``.

    ``queue`` should be bounded: a slow consumer then pushes back on the process. A read error
    (a dropped connection) ends the stream like EOF; the caller then finds no exit status.
    """
    buf = b""
    with contextlib.suppress(Exception):  # a read error (dropped connection) ends it like EOF
        while True:
            chunk = await read(65536)
            if not chunk:
                break
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                await queue.put(StreamLine(stream, line + b"\n"))
            if len(buf) >= MAX_LINE:
                await queue.put(StreamLine(stream, buf))
                buf = b""
    if buf:
        await queue.put(StreamLine(stream, buf))
    await queue.put(None)


def kill_by_call_id(call_id: str) -> int:
    """SIGKILL every process (and process group it leads) whose environment holds ``call_id``.

    Linux (/proc) only; elsewhere a no-op. Blocking: call it through ``asyncio.to_thread``.
    Returns how many processes were signalled.
    """
    needle = f"{CALL_ID_VAR}={call_id}".encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    killed = 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            pid = int(entry)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # only succeeds for a group leader
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


async def before_deadline(
    awaitable: Awaitable[T], deadline: float | None, argv: list[str], limit: float | None
) -> T:
    """Await ``awaitable``; past ``deadline`` (monotonic) raise :class:`CommandTimeout`, which
    reports ``limit`` (the caller's timeout in seconds)."""
    remaining = None if deadline is None else deadline - time.monotonic()
    try:
        return await asyncio.wait_for(awaitable, remaining)
    except TimeoutError:
        raise CommandTimeout(argv, limit or 0.0) from None


async def merged_lines(
    read_stdout: Callable[[int], Awaitable[bytes]],
    read_stderr: Callable[[int], Awaitable[bytes]],
    *,
    deadline: float | None,
    argv: list[str],
    limit: float | None,
) -> AsyncGenerator[StreamLine, None]:
    """Lines of stdout and stderr as they arrive, until both end (``CommandTimeout`` at the
    deadline). Closing the iterator stops the readers; killing the process is the caller's job.
    """
    queue: asyncio.Queue[StreamLine | None] = asyncio.Queue(maxsize=1024)
    pumps = [
        asyncio.create_task(pump_lines(read_stdout, "stdout", queue)),
        asyncio.create_task(pump_lines(read_stderr, "stderr", queue)),
    ]
    try:
        open_streams = len(pumps)
        while open_streams:
            item = await before_deadline(queue.get(), deadline, argv, limit)
            if item is None:
                open_streams -= 1
            else:
                yield item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
