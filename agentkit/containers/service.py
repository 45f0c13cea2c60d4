"""`AgentService`: spawn, watch, stop and wait for Claude Code agents in hardened containers.

The service holds the logic behind the six agent tools and is usable without any LLM. It talks
to the host only through its executor (run records, workspaces) and a
:class:`~agentkit.runtimes.base.Runtime` (``AGENTKIT_RUNTIME``: one Docker Engine, or Docker
Swarm services; any :class:`Runtime` can be passed in, e.g. the in-memory one in tests).

Lifecycle of one agent::

    spawn -> record created (meta, task) -> container created + started -> followed:
      logs (follow) -> stream-json persisted to the record, summary kept in memory
      exit noticed (logs EOF + wait API) -> state decided -> result.json written
      -> container removed (its output is safe in the record)

The deadline is enforced three ways: inside the container (the entrypoint runs ``timeout``),
by the follower's timer while a controller runs, and by :meth:`AgentService.reconcile` whenever
a service starts (so a controller that died never leaves an agent running past its deadline).

This module is the public facade; the work is done by its parts:

* :mod:`~agentkit.containers.launcher` - :class:`Launcher`: one spawn (checks, image, workspace,
  record, run; the pure pieces in :mod:`~agentkit.containers.launch`);
* :mod:`~agentkit.containers.registry` - :class:`RunRegistry`: live runs, final statuses and
  the observers told about them;
* :mod:`~agentkit.containers.follow` - :class:`Follower`: logs, exits, deadlines, persisting;
* :mod:`~agentkit.containers.finalize` - :class:`Finalizer`: final state, record, removal;
* :mod:`~agentkit.containers.reconcile` - records vs containers after a restart;
* :mod:`~agentkit.containers.ownership` - which containers this service may touch;
* :mod:`~agentkit.containers.live` - :class:`LiveRun`, one followed agent in memory.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Self

from agentkit.containers.finalize import Finalizer, recording_status
from agentkit.containers.follow import Follower
from agentkit.containers.fresh import FreshReads
from agentkit.containers.launch import (
    SessionOptions,
    check_ask,
    passthrough_secrets,
)
from agentkit.containers.launcher import Launcher
from agentkit.containers.live import LiveRun
from agentkit.containers.live_costs import LiveCosts
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
from agentkit.containers.reconcile import reconcile
from agentkit.containers.registry import RunObserver, RunRegistry
from agentkit.containers.retention import PRUNE_INTERVAL, PruneReport, Retention, prune_runs
from agentkit.containers.run_index import RunFilter, RunIndex, parse_since
from agentkit.containers.runs import RunStore
from agentkit.containers.session_api import SessionMethods
from agentkit.containers.sessions import Sessions
from agentkit.containers.streamjson import Event, parse_line, render_events
from agentkit.errors import AgentkitError, NotFoundError, ToolError
from agentkit.redact import Redactor
from agentkit.runtimes.base import RunInfo, Runtime

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings
    from agentkit.executors.base import Executor
    from agentkit.gateway.agents import AgentGateway

logger = logging.getLogger("agentkit.agents")

__all__ = [
    "ID_PATTERN",
    "LABEL_MANAGED_BY",
    "AgentOutput",
    "AgentPage",
    "AgentService",
    "AgentState",
    "AgentStatus",
    "WaitResult",
    "decide_state",
    "new_agent_id",
    "validate_agent_id",
]


logger = logging.getLogger("agentkit.agents")


@dataclass(slots=True)
class AgentPage:
    """One page of :meth:`AgentService.page`: agents newest first, and where the next begins."""

    agents: list[AgentStatus]
    next_cursor: str | None
    running: int
    finished_total: int


def _states(state: str | None) -> frozenset[AgentState] | None:
    if state is None or state == "":
        return None
    if state == "finished":
        return frozenset(s for s in AgentState if s != AgentState.RUNNING)
    if state not in AgentState._value2member_map_:
        names = ", ".join([*(str(s) for s in AgentState), "finished"])
        raise ToolError(f"state {state[:40]!r} is not one of: {names}")
    return frozenset({AgentState(state)})


class AgentService(SessionMethods):
    """Claude Code agents on the configured runtime.

    Args:
        executor: the host (local or SSH). Must stay open while the service is used.
        settings: image, limits, network, roots, secrets, runtime.
        docker: an open aiodocker client to reuse; ``None`` opens one over the executor.
        runtime: a :class:`Runtime` to use instead of opening ``settings.runtime``, or the
            name of one (``"docker"``, ``"swarm"``).
        redactor: the redactor to use and share (e.g. with the tools' context); by default one
            with the configured secrets. Secret-looking pass-through values
            (``AGENTKIT_CONTAINER_ENV``) are added to it at once, so output of agents spawned
            by an earlier controller is redacted too.
        observers: told of every run's start, events and end from the first reconcile on
            (:meth:`subscribe` adds more later).

    Use ``async with AgentService(...) as agents`` or call :meth:`aclose`. The first call
    connects and runs :meth:`reconcile` once. :attr:`registry` owns the agents' state;
    :meth:`subscribe` an observer to hear of starts, events and ends.
    """

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        docker: aiodocker.Docker | None = None,
        *,
        runtime: Runtime | str | None = None,
        redactor: Redactor | None = None,
        observers: Sequence[RunObserver] = (),
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.store = RunStore(executor, settings.runs_root)
        self.redactor = redactor if redactor is not None else Redactor(settings.secrets())
        for secret in passthrough_secrets(settings):
            self.redactor.add(secret)
        self._docker = docker
        self._runtime = runtime if isinstance(runtime, Runtime) else None
        self._runtime_kind = runtime if isinstance(runtime, str) else None
        self._owns_runtime = self._runtime is None and docker is None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._last_reconcile: dict[str, int] = {}
        # One engine may serve several agentkit roots (tests, users): each service manages
        # only the runs of its own root, whose records it holds.
        self.labels = scope_labels(settings.root)
        self.registry = RunRegistry(RunIndex(self.store))
        self.retention = Retention.parse(settings.run_retention)
        self._retention_task: asyncio.Task[None] | None = None
        self._seen_running: set[str] = set()  # running in the engine at the last listing
        for observer in observers:
            self.registry.subscribe(observer)
        self._gateway: AgentGateway | None = None
        self._finalizer = Finalizer(
            self.runtime, self.store, self.redactor, self.registry, on_end=self._gateway_end
        )
        self._follower = Follower(
            self.runtime, self.store, self.redactor, self._finalizer, self.labels, self.registry
        )
        self.launcher = Launcher(
            executor, settings, self.store, self.redactor, self.runtime, gateway=self.gateway
        )
        self._finalizer.session_max_bytes = settings.session_max_bytes
        self.sessions = Sessions(
            self.runtime,
            self.registry,
            self._stop_stalled,
            hold=settings.session_hold,
            approval_timeout=settings.approval_timeout,
            stall_timeout=settings.stall_timeout,
            stall_action=settings.stall_action,
        )
        self.registry.subscribe(self.sessions)
        self.live_costs = LiveCosts(self.gateway)
        # concurrent reads of the same container / listing share requests, never stale ones
        self._inspects: FreshReads[str, RunInfo | None] = FreshReads(self._inspect_owned)
        self._lists: FreshReads[str, builtins.list[RunInfo]] = FreshReads(self._list_runs)
        self.registry.subscribe(self.live_costs)

    def subscribe(self, observer: RunObserver) -> None:
        """Tell ``observer`` of every run's start, events and end (see :class:`RunRegistry`)."""
        self.registry.subscribe(observer)

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def runtime(self) -> Runtime:
        """The runtime, connected on first use."""
        if self._runtime is None:
            from agentkit.runtimes import open_runtime

            self._runtime = await open_runtime(
                self.executor, self.settings, self._runtime_kind, docker=self._docker
            )
        return self._runtime

    async def gateway(self) -> AgentGateway | None:
        """The agent gateway (``AGENTKIT_GATEWAY``; Docker and Swarm runtimes), or ``None``."""
        if self._gateway is None and self.settings.gateway:
            from agentkit.gateway.agents import gateway_for

            self._gateway = gateway_for(self.executor, self.settings, await self.runtime())
        return self._gateway

    async def _gateway_end(self, run_id: str, meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """A run spawned behind the gateway ended: its token dies; the metered summary."""
        if not meta.get("gateway"):
            return None  # spawned without the gateway (or before it existed)
        gateway = await self.gateway()
        return await gateway.ended(run_id) if gateway is not None else None

    async def start(self) -> None:
        """Connect and reconcile once (every public method calls this)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            runtime = await self.runtime()
            self._started = True
            self._follower.start_events(runtime)
            await self._reconcile()
            if self.retention is not None:
                self._retention_task = asyncio.create_task(
                    self._prune_in_background(self.retention), name="agentkit run retention"
                )

    async def aclose(self) -> None:
        """Stop following agents (they keep running; deadlines still hold) and disconnect."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        await self.sessions.aclose()
        await self._follower.aclose()
        if self._gateway is not None:
            await self._gateway.aclose()
            self._gateway = None
        if self._runtime is not None and self._owns_runtime:
            await self._runtime.aclose()
        if self._owns_runtime:
            self._runtime = None
            self._docker = None

    async def settle(self) -> None:
        """Wait for the background work of finished agents to complete.

        ``wait`` returns as soon as the final state is known; the run record is written and
        the container removed right after. Call this before reading records directly.
        """
        await self._follower.settle()

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
        max_cost_usd: float | None = None,
        ask_tools: Sequence[str] = (),
        session: SessionOptions | None = None,
    ) -> AgentStatus:
        """Start a Claude Code agent on ``task`` in ``workspace_path`` with a deadline.

        ``max_cost_usd`` caps what the agent's model requests may cost (default
        ``AGENTKIT_MAX_COST_USD``; needs the gateway). ``ask_tools``: permission rules
        (``Bash``, ``Bash(git push:*)``) whose tool calls wait for an approval (:meth:`answer`)
        instead of running free. ``image``/``command``/``entrypoint``/``extra_env`` are
        low-level overrides for tests and operators (never exposed to the model); by default
        the image's entrypoint runs Claude Code on the task.
        """
        await self.start()
        session = session or SessionOptions()
        if ask_tools:
            session = replace(session, ask=check_ask(ask_tools))
        try:
            launched = await self.launcher.spawn(
                task,
                workspace_path,
                timeout_ms,
                image=image,
                command=command,
                entrypoint=entrypoint,
                extra_env=extra_env,
                max_cost_usd=max_cost_usd,
                session=session,
            )
        except AgentkitError:
            # a run that could not start may have been recorded failed: index it now
            with contextlib.suppress(AgentkitError, OSError):
                await self.registry.index.refresh(force=True)
            raise
        run = self._follower.attach(launched.id, launched.spec.labels)
        run.meta = launched.meta
        run.started_at = time.time()
        status = run.running_status(started_at=launched.created)
        status.spawn_wait_s = launched.waited_s or None
        return status

    async def prepare_workspace(self, workspace_path: str, *, run_dir: str = "") -> str:
        """Resolve, confine, create and hand over a workspace (``launch.prepare_workspace``)."""
        return await self.launcher.prepare_workspace(workspace_path, run_dir=run_dir)

    # --- queries --------------------------------------------------------------------------------

    async def _own(self, container_id: str) -> tuple[str, RunInfo | None]:
        """Validate the id; return the container if it exists (ours), else ``None``."""
        run_id = validate_agent_id(container_id)
        await self.start()
        return run_id, await self._inspects.get(run_id)

    async def _inspect_owned(self, run_id: str) -> RunInfo | None:
        return await inspect_owned(await self.runtime(), run_id, self.settings.root)

    async def _list_runs(self, _key: str) -> builtins.list[RunInfo]:
        return await (await self.runtime()).list(self.labels)

    async def status(self, container_id: str) -> AgentStatus:
        """State, exit code, times, turns, cost, session id and last text of one agent."""
        run_id = validate_agent_id(container_id)
        final = self.registry.finals.get(run_id)
        if final is not None:
            return final
        return await self._status_of(*await self._own(run_id))

    async def _status_of(self, run_id: str, info: RunInfo | None) -> AgentStatus:
        """:meth:`status` from the container as inspected (``None``: there is none)."""
        if info is None:
            final = await self._finalizer.recorded(run_id)
            if final is None:
                raise NotFoundError(
                    f"no agent {run_id} on this host (neither a container nor a run record); "
                    "list_claude_agents shows the known ones"
                )
            return final
        if info.running:
            status = self._with_session(
                self._follower.attach(run_id, info.labels).running_status(info=info)
            )
            await self._live_costs([status])
            return status
        # exited: wait for our follower to record it, or record it now
        live = self.registry.get(run_id)
        if live is not None and live.task is not None and not live.task.done():
            await live.done.wait()
            if live.final is not None:
                return live.final
        return await self._finalizer.finalize(None, run_id=run_id)

    async def _live_costs(self, statuses: Sequence[AgentStatus]) -> None:
        """Running agents get the gateway's metered cost so far (``live_costs.py``)."""
        await self.live_costs.apply(statuses)

    async def output(self, container_id: str, lines: int = 100) -> AgentOutput:
        """The last ``lines`` events rendered for a reader (bounded), from memory or the record."""
        if lines < 1:
            raise ToolError("lines must be at least 1")
        status = await self.status(container_id)
        run = self.registry.get(status.id)
        if run is not None and not status.finished:
            source = list(run.tail)
            total = run.lines
        else:
            source = await self._recorded_lines(status.id, run)
            total = len(source)
        events = [e for line in source[-max(lines * 3, lines + 50) :] for e in parse_line(line)]
        text = render_events(events, lines=lines, max_bytes=12_000)
        text += await self._refused_egress(status.id)
        if status.finished and status.error and status.state != AgentState.SUCCEEDED:
            text += f"\n[{status.state}] {status.error}"
        return AgentOutput(status.id, status.state, self.redactor.redact(text), total)

    async def _refused_egress(self, run_id: str) -> str:
        """Lines naming the outbound connections the gateway's proxy refused for the run."""
        gateway = await self.gateway()
        if gateway is None:
            return ""
        try:
            refused = await gateway.egress(run_id)
        except AgentkitError:
            return ""
        if not refused:
            return ""
        counts: dict[str, int] = {}
        for row in refused:
            target = f"{row.get('method', '?')} {row.get('target', '?')}"
            counts[target] = counts.get(target, 0) + 1
        lines = [f"  {target} (x{n})" if n > 1 else f"  {target}" for target, n in counts.items()]
        return "\n[egress] refused by the allowlist (AGENTKIT_EGRESS_ALLOW):\n" + "\n".join(
            lines[:50]
        )

    async def watch(self, container_id: str) -> AsyncIterator[Event]:
        """The agent's events from the start, live until it finishes (for progress displays).

        For a finished agent the recorded events are yielded and the iterator ends.
        """
        async with contextlib.aclosing(self.watch_numbered(container_id)) as events:
            async for _line, _index, event in events:
                yield event

    async def watch_numbered(
        self, container_id: str
    ) -> AsyncGenerator[tuple[int, int, Event], None]:
        """:meth:`watch` with each event's position: ``(line, index, event)``.

        ``line`` is the 0-based number of the output line in the run's whole output (the same
        in the record and live), ``index`` the event's place within that line, so the pair is a
        stable id to resume a stream from. A running agent's replay starts at the oldest line
        still held in memory (the last 256 KiB).
        """
        status = await self.status(container_id)
        run = self.registry.get(status.id)
        if status.finished or run is None or run.done.is_set():
            for number, line in enumerate(await self._recorded_lines(status.id, run)):
                for index, event in enumerate(parse_line(line)):
                    yield number, index, event
            return
        queue: asyncio.Queue[tuple[int, int, Event] | None] = asyncio.Queue()
        first = run.first_line  # no await between this, the backlog and subscribing
        backlog = [
            (first + offset, index, event)
            for offset, line in enumerate(list(run.tail))
            for index, event in enumerate(parse_line(line))
        ]
        run.watchers.add(queue)
        try:
            for item in backlog:
                yield item
            while True:
                got = await queue.get()
                if got is None:
                    return
                yield got
        finally:
            run.watchers.discard(queue)

    async def _recorded_lines(self, run_id: str, run: LiveRun | None) -> list[str]:
        """The record's output lines (waiting up to 30 s for ``run`` to finish writing it)."""
        if run is not None and run.task is not None and not run.task.done():
            await asyncio.wait([run.task], timeout=30)
        raw = await self.store.read_output(run_id)
        return raw.decode("utf-8", "replace").splitlines()

    async def stop(self, container_id: str) -> AgentStatus:
        """Stop a running agent (SIGTERM via init, SIGKILL after 1 s); its state is ``stopped``."""
        run_id, info = await self._own(container_id)
        if info is None or not info.running:
            return await self._status_of(run_id, info)  # nothing to stop: not inspected again
        run = self._follower.attach(run_id, info.labels)
        await self._follower.stop(run_id, AgentState.STOPPED)
        await run.done.wait()
        return run.final or await self.status(run_id)

    async def wait(self, container_id: str, timeout_ms: int = 600_000) -> WaitResult:
        """Wait until the agent finishes (event-driven) or ``timeout_ms`` passes.

        On timeout the agent keeps running and ``timed_out`` is true. An agent that asks for an
        approval ends the wait early (``needs_approval``): only a person can let it go on.
        """
        status = await self.status(container_id)
        if status.finished:
            return WaitResult(status, timed_out=False)
        run = self.registry.get(status.id)
        if run is None:  # finished in the meantime
            return WaitResult(await self.status(status.id), timed_out=False)
        if status.waiting_for == "approval":  # nobody can finish it but a person
            return WaitResult(status, timed_out=False, needs_approval=True)
        asked = self.sessions.approval_event(status.id)
        done = asyncio.ensure_future(run.done.wait())
        needs = asyncio.ensure_future(asked.wait())
        try:
            finished, _ = await asyncio.wait(
                {done, needs}, timeout=max(timeout_ms, 0) / 1000, return_when="FIRST_COMPLETED"
            )
        finally:
            for task in (done, needs):
                task.cancel()
        if not finished:
            return WaitResult(await self.status(status.id), timed_out=True)
        if not run.done.is_set():
            return WaitResult(await self.status(status.id), timed_out=False, needs_approval=True)
        return WaitResult(run.final or await self.status(status.id), timed_out=False)

    async def list(
        self,
        *,
        state: str | None = None,
        workspace: str | None = None,
        since: str | float | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> list[AgentStatus]:
        """Agents newest first (all of them unless ``limit``); see :meth:`page`."""
        return (
            await self.page(
                state=state, workspace=workspace, since=since, limit=limit, cursor=cursor
            )
        ).agents

    async def page(
        self,
        *,
        state: str | None = None,
        workspace: str | None = None,
        since: str | float | None = None,
        limit: int | None = 20,
        cursor: str | None = None,
    ) -> AgentPage:
        """One page of agents, newest first: running ones (one Engine API call) and finished
        runs from the in-memory index (history is never read here).

        Args:
            state: one state (``running``, ``succeeded``, ...) or ``finished`` (any end).
            workspace: a workspace name or host path.
            since: only runs created at or after this (ISO 8601, epoch seconds, or ``2h``).
            limit: at most this many (``None``: all).
            cursor: the ``next_cursor`` of the previous page.
        """
        flt = RunFilter(states=_states(state), workspace=workspace, since=parse_since(since))
        if cursor is not None and not ID_PATTERN.fullmatch(cursor):
            raise ToolError(
                f"cursor {cursor[:80]!r} is not one this tool returned: pass the next_cursor "
                "of the previous page, or leave it out for the newest runs"
            )
        if limit is not None and limit < 1:
            raise ToolError("limit must be at least 1")
        await self.start()
        index = self.registry.index
        extra: list[AgentStatus] = []
        if flt.wants_running:
            containers, _ = await asyncio.gather(self._lists.get("runs"), index.refresh())
            seen = self._seen_running
            self._seen_running = {i.name for i in containers if i.running}
            if any(name not in index for name in seen - self._seen_running):
                await index.refresh(force=True)  # ended elsewhere (another controller recorded it)
            extra = self._unindexed(containers, index)
        else:
            await index.refresh()
        for run_id, final in self.registry.finals.items():  # decided, record being written
            if run_id not in index and all(e.id != run_id for e in extra):
                extra.append(final)
        extra.sort(key=lambda a: a.id, reverse=True)
        if cursor is not None:
            extra = [a for a in extra if a.id < cursor]
        merged = heapq.merge(
            extra, index.newest_first(before=cursor), key=lambda a: a.id, reverse=True
        )
        agents: list[AgentStatus] = []
        more = False
        for status in merged:
            if not flt.matches(status):
                continue
            if limit is not None and len(agents) >= limit:
                more = True
                break
            agents.append(status)
        await self._live_costs(agents)
        running = sum(1 for a in extra if a.state == AgentState.RUNNING)
        return AgentPage(agents, agents[-1].id if more else None, running, len(index))

    def _unindexed(
        self, containers: Sequence[RunInfo], index: RunIndex
    ) -> builtins.list[AgentStatus]:
        """Statuses of the engine's runs the index does not hold (running, or being recorded)."""
        finals = self.registry.finals
        out: builtins.list[AgentStatus] = []
        for info in containers:
            if not ID_PATTERN.fullmatch(info.name) or info.name in index:
                continue
            if info.name in finals:
                # a status this service already decided beats the engine's view: it still lists
                # a container as running for a moment after it exited
                out.append(finals[info.name])
            elif info.running:
                run = self._follower.attach(info.name, info.labels)
                out.append(self._with_session(run.running_status(info=info)))
            else:
                # exited but not yet recorded: record it in the background
                live = self.registry.get(info.name)
                if live is None or live.task is None or live.task.done():
                    self._follower.record_in_background(info.name)
                out.append(recording_status(info))
        return out

    # --- retention ------------------------------------------------------------------------------

    async def prune(
        self, retention: Retention | str | None = None, *, dry_run: bool = False
    ) -> PruneReport:
        """Remove finished run records beyond ``retention`` (default: the configured one).

        A running agent's record is never removed (see :mod:`~agentkit.containers.retention`).
        """
        chosen = Retention.parse(retention) if isinstance(retention, str) else retention
        chosen = chosen or self.retention
        if chosen is None:
            raise ToolError(
                "no retention given: set AGENTKIT_RUN_RETENTION (e.g. '30d,5000') or pass one"
            )
        await self.start()
        return await prune_runs(
            chosen,
            store=self.store,
            registry=self.registry,
            runtime=await self.runtime(),
            labels=self.labels,
            dry_run=dry_run,
        )

    async def _prune_in_background(self, retention: Retention) -> None:
        while True:
            try:
                report = await self.prune(retention)
                if report.pruned:
                    logger.info(
                        "pruned %d run records (%d bytes)", len(report.pruned), report.bytes_freed
                    )
            except (AgentkitError, OSError) as exc:
                logger.warning("pruning run records failed (retried later): %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL)

    async def active_workspaces(self) -> set[str]:
        """Host paths of workspaces with a running agent (one Engine API call).

        Agents this service already knows are finished are left out: the engine still lists a
        container as running for a moment after ``wait`` returned.
        """
        await self.start()
        containers = await self._lists.get("runs")
        finals = self.registry.finals
        return {
            info.labels["agentkit.workspace"]
            for info in containers
            if info.running and info.labels.get("agentkit.workspace") and info.name not in finals
        }

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(self) -> dict[str, int]:
        """Bring records and containers in line (runs once on start; safe to call again).

        See :mod:`agentkit.containers.reconcile`; returns what was done, by kind.
        """
        if not self._started:
            await self.start()
            return self._last_reconcile
        return await self._reconcile()

    async def _reconcile(self) -> dict[str, int]:
        runtime = await self.runtime()
        self._last_reconcile = await reconcile(
            runtime, self.store, self.labels, self._follower, self._finalizer
        )
        return self._last_reconcile
