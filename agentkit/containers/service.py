"""`AgentService`: spawn, watch, stop and wait for Claude Code agents in hardened containers.

The service holds the logic behind the six agent tools and is usable without any LLM. It talks
to the host only through its executor (run records) and a :class:`ContainerRuntime` (Docker
Engine API over the executor's forwarded socket).

Lifecycle of one agent::

    spawn -> record created (meta, task) -> container created + started -> followed:
      logs (follow) -> stream-json persisted to the record, summary kept in memory
      exit noticed (logs EOF + wait API) -> state decided -> result.json written
      -> container removed (its output is safe in the record)

The deadline is enforced three ways: inside the container (the entrypoint runs ``timeout``),
by the follower's timer while a controller runs, and by :meth:`AgentService.reconcile` whenever
a service starts (so a controller that died never leaves an agent running past its deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from agentkit.containers.launch import (
    check_task,
    check_timeout,
    ensure_image,
    has_credentials,
    launch,
    plan_launch,
    prepare_workspace,
)
from agentkit.containers.models import (
    ID_PATTERN,
    LABEL_MANAGED_BY,
    AgentOutput,
    AgentState,
    AgentStatus,
    WaitResult,
    decide_state,
    new_agent_id,
    validate_agent_id,
)
from agentkit.containers.ownership import inspect_owned, scope_labels
from agentkit.containers.runs import RunStore
from agentkit.containers.runtime import (
    STDERR,
    ContainerInfo,
    ContainerRuntime,
    DockerRuntime,
)
from agentkit.containers.streamjson import Event, RunSummary, parse_line, render_events
from agentkit.errors import (
    AgentkitError,
    NotFoundError,
    ToolError,
)
from agentkit.redact import Redactor

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings
    from agentkit.executors.base import Executor

__all__ = [
    "ID_PATTERN",
    "LABEL_MANAGED_BY",
    "AgentOutput",
    "AgentService",
    "AgentState",
    "AgentStatus",
    "WaitResult",
    "decide_state",
    "new_agent_id",
    "validate_agent_id",
]

logger = logging.getLogger("agentkit.agents")

DEADLINE_GRACE = 1.5  # seconds the in-container `timeout` gets before the controller stops it
STOP_GRACE = 1.0  # SIGTERM -> SIGKILL for stop (init forwards SIGTERM, so this rarely matters)
TAIL_BYTES = 256 * 1024  # rendered-output tail kept in memory per followed agent
STDERR_BYTES = 64 * 1024
CLOSE_GRACE = 30.0  # aclose waits this long for finished agents to be recorded and removed
PERSIST_INTERVAL = 1.0  # output is appended to the record at most this often (memory is live)
LOST_AFTER = 120.0  # a record this old with neither container nor result was lost


@dataclass(slots=True)
class _Run:
    """One agent this service follows (in memory only; the record is the truth)."""

    id: str
    labels: dict[str, str]
    summary: RunSummary = field(default_factory=RunSummary)
    tail: deque[str] = field(default_factory=deque)
    tail_bytes: int = 0
    lines: int = 0
    stderr: bytearray = field(default_factory=bytearray)
    meta: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    persisted: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: set[asyncio.Queue[Event | None]] = field(default_factory=set)
    # from the engine's event stream: how the container ended (faster than the wait API)
    died: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    oom: bool = False
    finished_at: float | None = None
    started_at: float | None = None
    task: asyncio.Task[None] | None = None
    final: AgentStatus | None = None

    @property
    def deadline(self) -> float | None:
        return _float(self.labels.get("agentkit.deadline"))

    def add_line(self, line: str) -> None:
        events = parse_line(line)
        for event in events:
            self.summary.add(event)
        for queue in self.watchers:
            for event in events:
                queue.put_nowait(event)
        self.lines += 1
        self.tail.append(line)
        self.tail_bytes += len(line)
        while self.tail_bytes > TAIL_BYTES and len(self.tail) > 1:
            self.tail_bytes -= len(self.tail.popleft())


async def _none() -> None:
    return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class AgentService:
    """Claude Code agents in containers on the executor's host.

    Args:
        executor: the host (local or SSH). Must stay open while the service is used.
        settings: image, limits, network, roots, secrets.
        docker: an open aiodocker client to reuse; ``None`` opens one over the executor.
        runtime: a :class:`ContainerRuntime` to use instead of Docker (the cluster seam).

    Use ``async with AgentService(...) as agents`` or call :meth:`aclose`. The first call
    connects and runs :meth:`reconcile` once.
    """

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        docker: aiodocker.Docker | None = None,
        *,
        runtime: ContainerRuntime | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.store = RunStore(executor, settings.runs_root)
        self.redactor = Redactor(settings.secrets())
        self._docker = docker
        self._runtime = runtime
        self._owns_runtime = runtime is None and docker is None
        self._runs: dict[str, _Run] = {}
        self._finals: dict[str, AgentStatus] = {}
        self._start_lock = asyncio.Lock()
        self._final_locks: dict[str, asyncio.Lock] = {}
        self._started = False
        self._image_ok: set[str] = set()
        self._closed = False
        self._last_reconcile: dict[str, int] = {}
        self._events_task: asyncio.Task[None] | None = None
        # One engine may serve several agentkit roots (tests, users): each service manages
        # only the containers of its own root, whose records it holds.
        self.labels = scope_labels(settings.root)

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def runtime(self) -> ContainerRuntime:
        """The container runtime, connected on first use."""
        if self._runtime is None:
            if self._docker is None:
                from agentkit.containers.docker import open_docker

                self._docker = await open_docker(self.executor, self.settings)
            self._runtime = DockerRuntime(self._docker, socket=self.settings.docker_socket)
        return self._runtime

    async def start(self) -> None:
        """Connect and reconcile once (every public method calls this)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            runtime = await self.runtime()
            self._started = True
            self._events_task = asyncio.create_task(
                self._watch_events(runtime), name="agentkit agent events"
            )
            await self._reconcile()

    async def aclose(self) -> None:
        """Stop following agents (they keep running; deadlines still hold) and disconnect."""
        self._closed = True
        # Agents that already ended are being recorded: let that finish (the record, then the
        # container's removal), so a caller closing right after wait() loses nothing.
        finishing = [r.task for r in self._runs.values() if r.task and r.done.is_set()]
        if finishing:
            await asyncio.wait(finishing, timeout=CLOSE_GRACE)
        tasks = [run.task for run in self._runs.values() if run.task and not run.task.done()]
        if self._events_task is not None:
            tasks.append(self._events_task)
            self._events_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runs.clear()
        if self._runtime is not None and self._owns_runtime:
            await self._runtime.aclose()
        self._runtime = None
        if self._owns_runtime:
            self._docker = None

    async def settle(self) -> None:
        """Wait for the background work of finished agents to complete.

        ``wait`` returns as soon as the final state is known; the run record is written and
        the container removed right after. Call this before reading records directly.
        """
        tasks = [r.task for r in self._runs.values() if r.task and r.done.is_set()]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- spawn ----------------------------------------------------------------------------------

    async def spawn(
        self,
        task: str,
        workspace_path: str,
        timeout_ms: int = 600_000,
        *,
        image: str | None = None,
        command: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> AgentStatus:
        """Start a Claude Code agent on ``task`` in ``workspace_path`` with a deadline.

        ``image``/``command``/``entrypoint``/``extra_env`` are low-level overrides for tests and
        operators (never exposed to the model); by default the image's entrypoint runs Claude
        Code on the task.
        """
        await self.start()
        check_task(task)
        if command is None and not has_credentials(self.settings):
            self.settings.require_api_key()  # raises: Claude Code cannot run without them
        check_timeout(timeout_ms)
        runtime = await self.runtime()
        image = image or self.settings.image
        await self._ensure_image(runtime, image)
        run_id = new_agent_id()
        workspace = await self.prepare_workspace(workspace_path, run_dir=self.store.path(run_id))
        created = time.time()
        spec, meta = plan_launch(
            self.settings,
            self.redactor,
            run_id=run_id,
            task=task,
            workspace=workspace,
            image=image,
            timeout_ms=timeout_ms,
            created=created,
            runtime_name=getattr(runtime, "name", "?"),
            command=command,
            entrypoint=entrypoint,
            extra_env=extra_env,
        )
        await launch(runtime, self.store, self.redactor, spec, meta, task)
        run = self._attach(run_id, spec.labels)
        run.meta = meta
        run.started_at = time.time()
        return self._running_status(run, started_at=created)

    async def _ensure_image(self, runtime: ContainerRuntime, image: str) -> None:
        if image not in self._image_ok:
            await ensure_image(runtime, self.settings, image)
            self._image_ok.add(image)

    async def prepare_workspace(self, workspace_path: str, *, run_dir: str = "") -> str:
        """Resolve, confine, create and hand over a workspace (``launch.prepare_workspace``)."""
        return await prepare_workspace(
            self.executor, self.settings, workspace_path, run_dir=run_dir
        )

    # --- following ------------------------------------------------------------------------------

    def _attach(self, run_id: str, labels: Mapping[str, str]) -> _Run:
        run = self._runs.get(run_id)
        if run is not None and run.task is not None and not run.task.done():
            return run
        run = _Run(run_id, dict(labels))
        self._runs[run_id] = run
        run.task = asyncio.create_task(self._follow(run), name=f"follow {run_id}")
        return run

    async def _watch_events(self, runtime: ContainerRuntime) -> None:
        """One engine event stream for all our agents: ``die`` (exit code) and ``oom``."""
        while not self._closed:
            try:
                async for event in runtime.events(self.labels, actions=("die", "oom")):
                    run = self._runs.get(event.name)
                    if run is None:
                        continue
                    if event.action == "oom":
                        run.oom = True
                    elif event.action == "die":
                        code = event.attributes.get("exitCode")
                        run.exit_code = int(code) if code and code.lstrip("-").isdigit() else None
                        if event.time_nano:
                            run.finished_at = event.time_nano / 1e9
                        run.died.set()
            except AgentkitError as exc:
                logger.debug("agent event stream ended (%s); reopening", exc)
            if not self._closed:
                await asyncio.sleep(1.0)  # the wait API covers exits meanwhile

    async def _await_exit(self, run: _Run) -> int | None:
        """The exit status: the ``die`` event or the wait API, whichever comes first."""
        if run.died.is_set():
            return run.exit_code
        runtime = await self.runtime()
        waiter = asyncio.create_task(runtime.wait(run.id))
        died = asyncio.create_task(run.died.wait())
        try:
            await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, died):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, AgentkitError):
                        await task
        if died.done() and not died.cancelled():
            return run.exit_code
        return waiter.result()

    async def _follow(self, run: _Run) -> None:
        """Follow one agent to its end; then forget it (its final status stays cached)."""
        try:
            await self._follow_until_recorded(run)
        except (AgentkitError, OSError) as exc:
            logger.warning(
                "following agent %s failed: %s (status, wait or reconcile will retry)", run.id, exc
            )
            for queue in run.watchers:
                queue.put_nowait(None)
        finally:
            if run.done.is_set() and self._runs.get(run.id) is run:
                del self._runs[run.id]  # frees its output tail; the record has everything

    async def _follow_until_recorded(self, run: _Run) -> None:
        runtime = await self.runtime()
        guard = asyncio.create_task(self._deadline_guard(run), name=f"deadline {run.id}")
        pending = bytearray()
        wrote_any = False
        wakeup = asyncio.Event()
        finished = asyncio.Event()

        async def writer() -> None:
            nonlocal wrote_any
            while True:
                await wakeup.wait()
                wakeup.clear()
                if pending:
                    chunk = bytes(pending)
                    del pending[:]
                    if wrote_any:
                        await self.store.append_output(run.id, chunk)
                    else:
                        await self.store.write_output(run.id, chunk)
                        wrote_any = True
                if finished.is_set() and not pending:
                    return
                # coalesce bursts into one write, but never delay the end of the run
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), PERSIST_INTERVAL)

        writer_task = asyncio.create_task(writer(), name=f"persist {run.id}")
        complete = False
        partial = b""
        try:
            try:
                async with contextlib.aclosing(runtime.logs(run.id, follow=True)) as stream:
                    async for chunk in stream:
                        if chunk.stream == STDERR:
                            run.stderr.extend(chunk.data)
                            if len(run.stderr) > STDERR_BYTES:
                                del run.stderr[: len(run.stderr) - STDERR_BYTES]
                            continue
                        data = partial + chunk.data
                        *lines, partial = data.split(b"\n")
                        for raw in lines:
                            self._take_line(run, raw, pending)
                        wakeup.set()
                complete = True
            except AgentkitError as exc:
                logger.warning("following %s broke (%s); will re-read its logs", run.id, exc)
            if partial:
                self._take_line(run, partial, pending)
            exit_code = await self._await_exit(run)

            async def flush() -> None:
                finished.set()
                wakeup.set()
                try:
                    await writer_task
                    if not wrote_any:
                        await self.store.write_output(run.id, b"")
                except (AgentkitError, OSError) as exc:
                    # appending failed somewhere: write the whole output again from the engine
                    logger.warning("persisting %s output failed (%s); rewriting it", run.id, exc)
                    await self._reread_output(run)

            await self._finalize(run, exit_code=exit_code, complete=complete, flush=flush)
        finally:
            guard.cancel()
            if not writer_task.done():
                writer_task.cancel()

    def _take_line(self, run: _Run, raw: bytes, pending: bytearray) -> None:
        line = self.redactor.redact(raw.decode("utf-8", "replace")).rstrip("\r")
        pending.extend(line.encode("utf-8") + b"\n")
        run.add_line(line)

    async def _deadline_guard(self, run: _Run) -> None:
        deadline = run.deadline
        if deadline is None:
            return
        await asyncio.sleep(max(deadline + DEADLINE_GRACE - time.time(), 0))
        if run.done.is_set():
            return
        logger.info("agent %s passed its deadline: stopping it", run.id)
        try:
            await self._stop_container(run.id, AgentState.TIMED_OUT)
        except (AgentkitError, OSError) as exc:  # gone already, or the host is unreachable
            logger.warning("could not stop %s at its deadline: %s", run.id, exc)

    async def _stop_container(self, run_id: str, reason: AgentState) -> None:
        if await self.store.read_stop(run_id) is None:
            await self.store.mark_stop(run_id, str(reason))
        await (await self.runtime()).stop(run_id, grace=STOP_GRACE)

    async def _finalize(
        self,
        run: _Run | None,
        *,
        run_id: str | None = None,
        exit_code: int | None = None,
        complete: bool = True,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> AgentStatus:
        """Record the end of an exited container, then remove the container.

        Waiters are woken as soon as the final state is known; the record (output flushed by
        ``flush``, stderr, result, index line) is written next, and only then is the container
        removed. A controller dying in between leaves the container, so reconcile redoes this.
        """
        rid = run.id if run is not None else str(run_id)
        lock = self._final_locks.setdefault(rid, asyncio.Lock())
        async with lock:
            if rid in self._finals:
                if flush is not None:
                    await flush()
                return self._finals[rid]
            runtime = await self.runtime()

            async def inspect() -> ContainerInfo | None:
                try:
                    return await runtime.inspect(rid)
                except NotFoundError:
                    return None

            # the die event already says how it ended; inspecting now would wait for the
            # engine's cleanup (tens of ms), except to confirm an OOM kill the events missed
            from_events = (
                run is not None
                and complete
                and run.died.is_set()
                and run.exit_code is not None
                and (run.oom or run.exit_code != 137)
            )
            existing, info, stop, stored_meta = await asyncio.gather(
                self.store.read_result(rid),
                _none() if from_events else inspect(),
                self.store.read_stop(rid),
                self.store.read_meta(rid) if run is None or not run.meta else _none(),
            )
            if from_events and run is not None:
                info = ContainerInfo(
                    id="",
                    name=rid,
                    labels=run.labels,
                    state="exited",
                    exit_code=run.exit_code,
                    oom_killed=run.oom,
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                )
            if existing is not None:  # another controller finished it first
                if flush is not None:
                    await flush()
                return self._remember_final(run, AgentStatus.from_record(existing), persisted=True)
            meta = (run.meta if run is not None and run.meta else stored_meta) or {}
            if run is None or not complete:
                run = run or _Run(rid, dict(info.labels) if info else {})
                if info is not None:
                    await self._reread_output(run)
            summary = run.summary
            res = summary.result
            if info is not None and exit_code is None:
                exit_code = info.exit_code
            state = decide_state(
                exit_code=exit_code,
                oom_killed=bool(info and info.oom_killed),
                stop_reason=stop.get("reason") if stop else None,
                finished_at=info.finished_at if info else None,
                deadline=_float(meta.get("deadline")) or run.deadline,
                result_is_error=res.is_error if res else None,
            )
            err_text = bytes(run.stderr).decode("utf-8", "replace").strip()
            error = None
            if info is None:
                error = "the container disappeared before its result was recorded"
            elif state != AgentState.SUCCEEDED:
                error = (summary.last_error or err_text[-500:] or info.error) or None
            data = summary.to_dict()
            record = {
                **meta,
                "id": rid,
                "state": str(state),
                "exit_code": exit_code,
                "oom_killed": bool(info and info.oom_killed),
                "started_at": info.started_at if info else None,
                "finished_at": (info.finished_at if info else None) or time.time(),
                "turns": data["turns"],
                "cost_usd": data["cost_usd"],
                "session_id": data["session_id"],
                "last_text": data["last_text"],
                "result_text": data["result_text"],
                "is_error": data["is_error"],
                "api_retries": data["api_retries"],
                "stop_reason": stop.get("reason") if stop else None,
                "error": self.redactor.redact(error) if error else None,
                "output_lines": run.lines,
            }
            status = self._remember_final(run, AgentStatus.from_record(record))
            # persist: output first, then stderr, then the result that marks the run finished
            if flush is not None:
                await flush()
            if err_text:
                await self.store.write_stderr(rid, self.redactor.redact(err_text).encode())
            await self.store.write_result(rid, record)
            await self.store.append_index(record)
            run.persisted.set()
        # The output is safe in the record: the container can go.
        if info is not None:
            try:
                await runtime.remove(rid, force=True)
            except AgentkitError as exc:
                logger.warning("could not remove finished container %s: %s", rid, exc)
        return status

    def _remember_final(
        self, run: _Run | None, status: AgentStatus, *, persisted: bool = False
    ) -> AgentStatus:
        self._finals[status.id] = status
        for item in {id(r): r for r in (run, self._runs.get(status.id)) if r}.values():
            item.final = status
            item.done.set()
            for queue in item.watchers:
                queue.put_nowait(None)
            if persisted:
                item.persisted.set()
        return status

    async def _reread_output(self, run: _Run) -> None:
        """Rebuild the whole output from the engine (after a broken follow or a restart)."""
        runtime = await self.runtime()
        watchers, run.watchers = run.watchers, set()  # they have seen these events already
        try:
            await self._reread_into(runtime, run)
        finally:
            run.watchers = watchers

    async def _reread_into(self, runtime: ContainerRuntime, run: _Run) -> None:
        run.summary = RunSummary()
        run.tail.clear()
        run.tail_bytes = run.lines = 0
        run.stderr.clear()
        out = bytearray()
        partial = b""
        async with contextlib.aclosing(runtime.logs(run.id, follow=False)) as stream:
            async for chunk in stream:
                if chunk.stream == STDERR:
                    run.stderr.extend(chunk.data)
                    continue
                *lines, partial = (partial + chunk.data).split(b"\n")
                for raw in lines:
                    self._take_line(run, raw, out)
        if partial:
            self._take_line(run, partial, out)
        del run.stderr[: max(len(run.stderr) - STDERR_BYTES, 0)]
        await self.store.write_output(run.id, bytes(out))

    # --- queries --------------------------------------------------------------------------------

    async def _own(self, container_id: str) -> tuple[str, ContainerInfo | None]:
        """Validate the id; return the container if it exists (ours), else ``None``."""
        run_id = validate_agent_id(container_id)
        await self.start()
        return run_id, await inspect_owned(await self.runtime(), run_id, self.settings.root)

    async def _final(self, run_id: str) -> AgentStatus | None:
        status = self._finals.get(run_id)
        if status is not None:
            return status
        data = await self.store.read_result(run_id)
        if data is None:
            return None
        status = AgentStatus.from_record(data)
        self._finals[run_id] = status
        return status

    def _running_status(
        self, run: _Run, *, info: ContainerInfo | None = None, started_at: float | None = None
    ) -> AgentStatus:
        labels = run.labels
        data = run.summary.to_dict()
        return AgentStatus(
            id=run.id,
            state=AgentState.RUNNING,
            created=_float(labels.get("agentkit.created")),
            started_at=(info.started_at if info else None) or started_at,
            deadline=run.deadline,
            workspace=labels.get("agentkit.workspace"),
            task=labels.get("agentkit.task"),
            turns=data["turns"],
            cost_usd=data["cost_usd"],
            session_id=data["session_id"],
            last_text=data["last_text"],
            error=data["last_error"],
        )

    async def status(self, container_id: str) -> AgentStatus:
        """State, exit code, times, turns, cost, session id and last text of one agent."""
        run_id = validate_agent_id(container_id)
        final = self._finals.get(run_id)
        if final is not None:
            return final
        run_id, info = await self._own(run_id)
        if info is None:
            final = await self._final(run_id)
            if final is None:
                raise NotFoundError(
                    f"no agent {run_id} on this host (neither a container nor a run record); "
                    "list_claude_agents shows the known ones"
                )
            return final
        if info.running:
            run = self._attach(run_id, info.labels)
            return self._running_status(run, info=info)
        # exited: wait for our follower to record it, or record it now
        live = self._runs.get(run_id)
        if live is not None and live.task is not None and not live.task.done():
            await live.done.wait()
            if live.final is not None:
                return live.final
        return await self._finalize(None, run_id=run_id)

    async def output(self, container_id: str, lines: int = 100) -> AgentOutput:
        """The last ``lines`` events rendered for a reader (bounded), from memory or the record."""
        if lines < 1:
            raise ToolError("lines must be at least 1")
        status = await self.status(container_id)
        run = self._runs.get(status.id)
        if run is not None and not status.finished:
            source = list(run.tail)
            total = run.lines
        else:
            if run is not None and run.task is not None and not run.task.done():
                await asyncio.wait([run.task], timeout=30)  # the record is being written
            raw = await self.store.read_output(status.id)
            source = raw.decode("utf-8", "replace").splitlines()
            total = len(source)
        events = [e for line in source[-max(lines * 3, lines + 50) :] for e in parse_line(line)]
        text = render_events(events, lines=lines, max_bytes=12_000)
        if status.finished and status.error and status.state != AgentState.SUCCEEDED:
            text += f"\n[{status.state}] {status.error}"
        return AgentOutput(status.id, status.state, self.redactor.redact(text), total)

    async def watch(self, container_id: str) -> AsyncIterator[Event]:
        """The agent's events from the start, live until it finishes (for progress displays).

        For a finished agent the recorded events are yielded and the iterator ends.
        """
        status = await self.status(container_id)
        run = self._runs.get(status.id)
        if status.finished or run is None or run.done.is_set():
            if run is not None and run.task is not None and not run.task.done():
                await asyncio.wait([run.task], timeout=30)  # the record is being written
            raw = await self.store.read_output(status.id)
            for line in raw.decode("utf-8", "replace").splitlines():
                for event in parse_line(line):
                    yield event
            return
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        backlog = [e for line in list(run.tail) for e in parse_line(line)]  # no await between
        run.watchers.add(queue)
        try:
            for event in backlog:
                yield event
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            run.watchers.discard(queue)

    async def stop(self, container_id: str) -> AgentStatus:
        """Stop a running agent (SIGTERM via init, SIGKILL after 1 s); its state is ``stopped``."""
        run_id, info = await self._own(container_id)
        if info is None or not info.running:
            status = await self.status(run_id)
            return status
        run = self._attach(run_id, info.labels)
        await self._stop_container(run_id, AgentState.STOPPED)
        await run.done.wait()
        return run.final or await self.status(run_id)

    async def wait(self, container_id: str, timeout_ms: int = 600_000) -> WaitResult:
        """Wait until the agent finishes (event-driven) or ``timeout_ms`` passes.

        On timeout the agent keeps running and ``timed_out`` is true.
        """
        status = await self.status(container_id)
        if status.finished:
            return WaitResult(status, timed_out=False)
        run = self._runs.get(status.id)
        if run is None:  # finished in the meantime
            return WaitResult(await self.status(status.id), timed_out=False)
        try:
            async with asyncio.timeout(max(timeout_ms, 0) / 1000):
                await run.done.wait()
        except TimeoutError:
            return WaitResult(await self.status(status.id), timed_out=True)
        return WaitResult(run.final or await self.status(status.id), timed_out=False)

    async def list(self) -> list[AgentStatus]:
        """Running agents (one Engine API call) and finished runs from the records, newest first."""
        await self.start()
        runtime = await self.runtime()
        containers, records = await asyncio.gather(
            runtime.list(self.labels), self.store.read_index()
        )
        out: dict[str, AgentStatus] = {}
        for data in records:
            status = AgentStatus.from_record(data)
            if ID_PATTERN.fullmatch(status.id):
                out[status.id] = self._finals.setdefault(status.id, status)
        for info in containers:
            if not ID_PATTERN.fullmatch(info.name) or info.name in out:
                continue
            if info.running:
                run = self._attach(info.name, info.labels)
                out[info.name] = self._running_status(run, info=info)
            else:
                # exited but not yet recorded: record it in the background
                live = self._runs.get(info.name)
                if live is None or live.task is None or live.task.done():
                    self._background_finalize(info.name)
                out[info.name] = AgentStatus(
                    id=info.name,
                    state=AgentState.RUNNING,
                    exit_code=info.exit_code,
                    created=_float(info.labels.get("agentkit.created")),
                    deadline=_float(info.labels.get("agentkit.deadline")),
                    workspace=info.labels.get("agentkit.workspace"),
                    task=info.labels.get("agentkit.task"),
                    error="exited; recording its result",
                )
        return sorted(out.values(), key=lambda s: s.created or 0.0, reverse=True)

    async def active_workspaces(self) -> set[str]:
        """Host paths of workspaces with a running agent (one Engine API call)."""
        await self.start()
        containers = await (await self.runtime()).list(self.labels)
        return {
            info.labels["agentkit.workspace"]
            for info in containers
            if info.running and info.labels.get("agentkit.workspace")
        }

    def _background_finalize(self, run_id: str) -> None:
        async def go() -> None:
            try:
                await self._finalize(None, run_id=run_id)
            except AgentkitError as exc:
                logger.warning("could not record finished agent %s: %s", run_id, exc)

        run = self._runs.setdefault(run_id, _Run(run_id, {}))

        async def go_and_forget() -> None:
            try:
                await go()
            finally:
                if self._runs.get(run_id) is run:
                    del self._runs[run_id]

        run.task = asyncio.create_task(go_and_forget(), name=f"finalize {run_id}")

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(self) -> dict[str, int]:
        """Bring records and containers in line (runs once on start; safe to call again).

        * running agents past their deadline are stopped and recorded ``timed_out``;
        * other running agents are followed (output persisted, deadline timer armed);
        * exited agents are recorded and their containers removed;
        * records whose container vanished without a result are closed as ``failed``.
        """
        if not self._started:
            await self.start()
            return self._last_reconcile
        return await self._reconcile()

    async def _reconcile(self) -> dict[str, int]:
        runtime = await self.runtime()
        report = {
            "followed": 0,
            "timed_out": 0,
            "finalized": 0,
            "lost": 0,
            "indexed": 0,
            "errors": 0,
        }
        containers = await runtime.list(self.labels)
        names = set()
        now = time.time()
        finalize: list[str] = []
        for info in containers:
            if not ID_PATTERN.fullmatch(info.name):
                continue
            names.add(info.name)
            if info.running:
                run = self._attach(info.name, info.labels)
                report["followed"] += 1
                deadline = run.deadline
                if deadline is not None and now >= deadline + DEADLINE_GRACE:
                    try:
                        await self._stop_container(info.name, AgentState.TIMED_OUT)
                        report["timed_out"] += 1
                    except (AgentkitError, OSError) as exc:
                        logger.warning("could not stop overdue agent %s: %s", info.name, exc)
                        report["errors"] += 1
            else:
                finalize.append(info.name)
        for run_id in finalize:
            try:
                await self._finalize(None, run_id=run_id)
                report["finalized"] += 1
            except (AgentkitError, OSError) as exc:
                logger.warning("could not record finished agent %s: %s", run_id, exc)
                report["errors"] += 1
        # records without a result and without a container: the controller died before start
        ids, results, index = await asyncio.gather(
            self.store.list_ids(), self.store.read_results(), self.store.read_index()
        )
        done = {str(d.get("id")) for d in results}
        indexed = {str(d.get("id")) for d in index}
        for data in results:  # a controller died between result.json and its index line
            if str(data.get("id")) not in indexed:
                await self.store.append_index(data)
                report["indexed"] += 1
        for run_id in ids:
            if not ID_PATTERN.fullmatch(run_id) or run_id in names or run_id in done:
                continue
            meta = await self.store.read_meta(run_id)
            created = _float(meta.get("created")) if meta else None
            if meta is None or created is None or now - created < LOST_AFTER:
                continue  # possibly being spawned right now by another controller
            lost = {
                **meta,
                "state": str(AgentState.FAILED),
                "finished_at": time.time(),
                "error": "the container was lost before its result was recorded",
            }
            await self.store.write_result(run_id, lost)
            await self.store.append_index(lost)
            report["lost"] += 1
        self._last_reconcile = report
        return report
