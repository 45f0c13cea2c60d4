"""`MemoryRuntime`: an in-process runtime for fast tests of the services (no engine at all).

Like httpx's ``MockTransport``: the "agent" is a coroutine you pass in. It gets a
:class:`MemoryRun` (the spec, its env and task) and prints stream-json lines with
:meth:`MemoryRun.emit`; its return value is the exit status. It runs as an asyncio task, so
spawning, following, stopping and recording agents take microseconds::

    async def agent(run: MemoryRun) -> int:
        run.emit({"type": "system", "subtype": "init", "session_id": "s1"})
        run.emit({"type": "result", "subtype": "success", "is_error": False, "result": "done"})
        return 0

    service = AgentService(executor, settings, runtime=MemoryRuntime(agent))

It behaves as the contract says (tests run the same suite against it and the real engines):
``AGENTKIT_DEADLINE`` in the env is enforced as the agent image's ``timeout`` would (reason
``deadline``), :meth:`stop` cancels the coroutine (reason ``signalled``), raising
:class:`MemoryExit` ends a run with any code and reason (e.g. ``oom``), an image must be
known (:meth:`MemoryRuntime.add_image`) or the start is rejected, and files an agent writes with
:meth:`MemoryRun.write_file` follow the spec's ``read_only_root`` and bounded ``tmpfs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import resource
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentkit.errors import ConflictError, NotFoundError, ToolError
from agentkit.runtimes.base import (
    STDERR,
    STDOUT,
    ExitEvent,
    ExitReason,
    LogChunk,
    RunInfo,
    RunSpec,
    RunState,
    Runtime,
)

__all__ = ["PROC_LIMITS", "MemoryAgent", "MemoryExit", "MemoryRun", "MemoryRuntime", "proc_limits"]


class MemoryExit(Exception):
    """Raise inside a memory agent to end with ``code`` and ``reason`` (e.g. an OOM kill)."""

    def __init__(self, code: int, reason: ExitReason = ExitReason.EXITED) -> None:
        super().__init__(f"exit {code} ({reason})")
        self.code = code
        self.reason = reason


@dataclass(eq=False)
class MemoryRun:
    """One run of a memory agent: what it was given and what it printed."""

    spec: RunSpec
    id: str
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    chunks: list[LogChunk] = field(default_factory=list)
    exit: ExitEvent | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: bool = False
    #: what was written to the run's input (``open_stdin`` runs), line by line
    stdin: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    #: the run's files (absolute path -> content), as copied in or written by the agent
    files: dict[str, bytes] = field(default_factory=dict)
    _partial: bytes = b""

    async def read_input(self) -> bytes:
        """The next line written to the run's input (without its newline); waits for it."""
        return await self.stdin.get()

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the run's process would, under the spec's filesystem rules: with
        ``read_only_root`` only a writable mount or a tmpfs takes it (else ``EROFS``), and a
        tmpfs holds at most its size (else ``ENOSPC``, nothing written)."""
        spec = self.spec
        tmpfs = next((t for t in spec.tmpfs if _under(path, t.target)), None)
        mount = next((m for m in spec.mounts if _under(path, m.target)), None)
        if mount is not None and mount.read_only:
            raise OSError(errno.EROFS, "read-only file system", path)
        if spec.read_only_root and tmpfs is None and mount is None:
            raise OSError(errno.EROFS, "read-only file system", path)
        if tmpfs is not None:
            used = sum(
                len(v) for k, v in self.files.items() if k != path and _under(k, tmpfs.target)
            )
            if used + len(data) > tmpfs.size_bytes:
                raise OSError(errno.ENOSPC, "no space left on device", path)
        self.files[path] = data

    def _feed(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.stdin.put_nowait(line)

    @property
    def env(self) -> Mapping[str, str]:
        return self.spec.env

    @property
    def task_text(self) -> str:
        """The agent's task (``AGENTKIT_TASK``), as the image's entrypoint would read it."""
        return self.spec.env.get("AGENTKIT_TASK", "")

    def emit(self, event: Mapping[str, Any] | str) -> None:
        """Print one stdout line (a stream-json event, or raw text)."""
        line = event if isinstance(event, str) else json.dumps(event)
        self._add(LogChunk(STDOUT, line.encode("utf-8") + b"\n"))

    def error(self, text: str) -> None:
        """Print to stderr."""
        self._add(LogChunk(STDERR, text.encode("utf-8")))

    def _add(self, chunk: LogChunk) -> None:
        self.chunks.append(chunk)
        self.notify()

    def notify(self) -> None:
        """Wake everyone waiting for output or the end (a fresh event for the next change)."""
        wake, self.wake = self.wake, asyncio.Event()
        wake.set()


MemoryAgent = Callable[[MemoryRun], Awaitable[int]]

#: where a run reads its resource limits, as a Linux process would
PROC_LIMITS = "/proc/self/limits"


def proc_limits(nofile: tuple[int, int] | None) -> bytes:
    """``/proc/self/limits`` as the kernel renders it, for the limits a memory run honours (the
    open-file limit of its spec; without one, this process's own, as an engine's default)."""
    soft, hard = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)
    rows = [("Limit", "Soft Limit", "Hard Limit", "Units"), ("Max open files", soft, hard, "files")]
    return "".join(f"{a:<25} {b!s:<20} {c!s:<20} {d:<10}\n" for a, b, c, d in rows).encode()


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    return all(
        key in labels and (value is None or labels[key] == value) for key, value in wanted.items()
    )


class MemoryRuntime(Runtime):
    """The runtime contract in memory: each run is ``agent(run)`` as an asyncio task."""

    name = "memory"

    def __init__(self, agent: MemoryAgent, *, images: Iterable[str] = ()) -> None:
        self.agent = agent
        self.images: set[str] = set(images)
        self.runs: dict[str, MemoryRun] = {}
        self._listeners: list[tuple[Mapping[str, str | None], asyncio.Queue[ExitEvent]]] = []
        self._history: list[tuple[Mapping[str, str], ExitEvent]] = []
        self._serial = 0

    def add_image(self, image: str) -> None:
        self.images.add(image)

    def _get(self, name: str) -> MemoryRun:
        run = self.runs.get(name)
        if run is None:
            raise NotFoundError(f"no run {name} in the memory runtime")
        return run

    async def create(self, spec: RunSpec) -> str:
        if spec.name in self.runs:
            raise ConflictError(f"a run named {spec.name} already exists")
        self._serial += 1
        run = MemoryRun(spec, id=f"mem{self._serial:08d}")
        run.files[PROC_LIMITS] = proc_limits(spec.nofile)
        self.runs[spec.name] = run
        return run.id

    async def start(self, name: str) -> None:
        run = self._get(name)
        if run.task is not None or run.exit is not None:
            return
        if run.spec.image not in self.images:
            msg = f"image {run.spec.image} is not known to the memory runtime"
            self._finish(run, ExitEvent(name, None, False, ExitReason.REJECTED, time.time(), msg))
            raise ToolError(msg)
        run.started_at = time.time()
        run.task = asyncio.create_task(self._run(run), name=f"memory run {name}")

    async def _run(self, run: MemoryRun) -> None:
        deadline = _float(run.spec.env.get("AGENTKIT_DEADLINE"))
        code: int | None
        reason = ExitReason.EXITED
        error = None
        try:
            if deadline is None:
                code = await self.agent(run)
            else:
                async with asyncio.timeout(max(deadline - time.time(), 0)):
                    code = await self.agent(run)
        except TimeoutError:
            code, reason = 124, ExitReason.DEADLINE
        except asyncio.CancelledError:
            if not run.stop_requested:
                raise
            code, reason = 143, ExitReason.SIGNALLED
        except MemoryExit as exc:
            code, reason = exc.code, exc.reason
        except Exception as exc:  # the agent crashed: like a process dying with status 1
            code, error = 1, f"{type(exc).__name__}: {exc}"
            run.error(f"{error}\n")
        self._finish(
            run,
            ExitEvent(run.spec.name, code, reason == ExitReason.OOM, reason, time.time(), error),
        )

    def _finish(self, run: MemoryRun, event: ExitEvent) -> None:
        run.exit = event
        self._history.append((run.spec.labels, event))
        for wanted, queue in list(self._listeners):
            if _matches(run.spec.labels, wanted):
                queue.put_nowait(event)
        run.notify()

    def _info(self, run: MemoryRun) -> RunInfo:
        if run.exit is not None:
            state = RunState.EXITED
        elif run.task is not None:
            state = RunState.RUNNING
        else:
            state = RunState.PENDING
        return RunInfo(
            id=run.id,
            name=run.spec.name,
            labels=dict(run.spec.labels),
            state=state,
            exit=run.exit,
            created_at=run.created_at,
            started_at=run.started_at,
            image=run.spec.image,
            node="memory",
        )

    async def inspect(self, name: str) -> RunInfo:
        return self._info(self._get(name))

    async def list(self, labels: Mapping[str, str | None]) -> list[RunInfo]:
        return [self._info(r) for r in self.runs.values() if _matches(r.spec.labels, labels)]

    async def exits(
        self, labels: Mapping[str, str | None], *, since: float | None = None
    ) -> AsyncGenerator[ExitEvent, None]:
        queue: asyncio.Queue[ExitEvent] = asyncio.Queue()
        if since is not None:
            for run_labels, event in self._history:
                if event.at is not None and event.at >= since and _matches(run_labels, labels):
                    queue.put_nowait(event)
        entry = (labels, queue)
        self._listeners.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(entry)

    async def wait(self, name: str) -> ExitEvent:
        run = self._get(name)
        while run.exit is None:
            await run.wake.wait()
        return run.exit

    async def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncGenerator[LogChunk, None]:
        run = self._get(name)
        index = 0 if tail is None else max(len(run.chunks) - tail, 0)
        while True:
            while index < len(run.chunks):
                yield run.chunks[index]
                index += 1
            if not follow or run.exit is not None or run.task is None:
                return
            await run.wake.wait()

    async def stop(self, name: str, grace: float = 1.0) -> None:
        run = self._get(name)
        if run.task is None or run.task.done():
            return
        run.stop_requested = True
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([run.task], timeout=grace + 5)

    async def remove(self, name: str, *, force: bool = False) -> None:
        run = self.runs.get(name)
        if run is None:
            return
        if run.task is not None and not run.task.done():
            if not force:
                raise ConflictError(f"run {name} is still running: stop it first")
            await self.stop(name, 0)
        self.runs.pop(name, None)

    async def image_exists(self, image: str) -> bool:
        return image in self.images

    async def write_stdin(self, name: str, data: bytes) -> None:
        run = self._get(name)
        if run.exit is not None or run.task is None:
            raise ConflictError(f"{name} is not running: its input is closed")
        if not run.spec.open_stdin:
            raise ToolError(f"{name} was not started with an open input")
        run._feed(data)

    async def copy_out(self, name: str, path: str, *, max_bytes: int) -> bytes | None:
        data = self._get(name).files.get(path)
        if data is not None and len(data) > max_bytes:
            raise ToolError(f"{path} in {name} is larger than {max_bytes} bytes")
        return data

    async def copy_in(self, name: str, files: Mapping[str, bytes], *, owner: str) -> None:
        run = self._get(name)
        if run.task is not None:
            raise ConflictError(f"{name} has started: files are copied in before the start")
        run.files.update(files)

    async def aclose(self) -> None:
        for run in list(self.runs.values()):
            if run.task is not None and not run.task.done():
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
