"""`Follower`: follows each running agent to its end while a controller runs.

For every running agent it attaches to (at spawn, or found by status/list/reconcile) it runs one
task that

* follows the run's logs, keeping a :class:`LiveRun` (summary, tail, live watchers) and
  appending the redacted stream-json to the run record (bursts coalesced, at most every
  ``PERSIST_INTERVAL`` seconds, never delaying the end);
* notices the end from the runtime's exit stream (one stream serves all agents) or its
  ``wait``, whichever answers first; the log stream is then given ``DRAIN_GRACE`` to deliver
  the last lines (a cluster's log stream may outlive the run);
* arms a deadline timer that stops the agent ``DEADLINE_GRACE`` after its deadline;
* hands the ended agent to the :class:`Finalizer`, then forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from agentkit.containers.live import LiveRun
from agentkit.containers.models import AgentState
from agentkit.errors import AgentkitError
from agentkit.runtimes.base import STDERR, ExitEvent, Runtime

if TYPE_CHECKING:
    from agentkit.containers.finalize import Finalizer
    from agentkit.containers.registry import RunRegistry
    from agentkit.containers.runs import RunStore
    from agentkit.redact import Redactor

__all__ = [
    "CLOSE_GRACE",
    "DEADLINE_GRACE",
    "DRAIN_GRACE",
    "PERSIST_INTERVAL",
    "STOP_GRACE",
    "Follower",
]

logger = logging.getLogger("agentkit.agents")

DEADLINE_GRACE = 1.5  # seconds the in-run deadline guard gets before the controller stops it
STOP_GRACE = 1.0  # SIGTERM -> SIGKILL for stop (init forwards SIGTERM, so this rarely matters)
CLOSE_GRACE = 30.0  # aclose waits this long for finished agents to be recorded and removed
PERSIST_INTERVAL = 1.0  # output is appended to the record at most this often (memory is live)
DRAIN_GRACE = 5.0  # after the end, the log stream gets this long to deliver its last lines


class Follower:
    """The tasks that follow this controller's running agents (held in the registry).

    Args:
        runtime: returns the connected runtime.
        store: the run records.
        redactor: applied to every output line before it is kept or written.
        finalizer: records an agent once it ended.
        labels: the labels that select this service's runs (exit events).
        registry: the owner of the live runs.
    """

    def __init__(
        self,
        runtime: Callable[[], Awaitable[Runtime]],
        store: RunStore,
        redactor: Redactor,
        finalizer: Finalizer,
        labels: Mapping[str, str | None],
        registry: RunRegistry,
    ) -> None:
        self._runtime = runtime
        self.store = store
        self.redactor = redactor
        self.finalizer = finalizer
        self.labels = labels
        self.registry = registry
        self._closed = False
        self._events_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start_events(self, runtime: Runtime) -> None:
        """Start the one exit stream for all followed agents."""
        self._events_task = asyncio.create_task(
            self._watch_exits(runtime), name="agentkit agent exits"
        )

    async def settle(self) -> None:
        """Wait for the background work (record, removal) of agents that already ended."""
        tasks = [r.task for r in self.registry if r.task and r.done.is_set()]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.registry.drain()

    async def aclose(self) -> None:
        """Let ended agents be recorded (up to ``CLOSE_GRACE``), then stop following."""
        self._closed = True
        # Agents that already ended are being recorded: let that finish (the record, then the
        # run's removal), so a caller closing right after wait() loses nothing.
        finishing = [r.task for r in self.registry if r.task and r.done.is_set()]
        if finishing:
            await asyncio.wait(finishing, timeout=CLOSE_GRACE)
        tasks = [run.task for run in self.registry if run.task and not run.task.done()]
        if self._events_task is not None:
            tasks.append(self._events_task)
            self._events_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.registry.clear()
        await self.registry.drain()

    # --- attaching ------------------------------------------------------------------------------

    def attach(self, run_id: str, labels: Mapping[str, str]) -> LiveRun:
        """The followed run of a running agent, following it now if nobody does."""
        run = self.registry.get(run_id)
        if run is not None and run.task is not None and not run.task.done():
            return run
        run = self.registry.add(LiveRun(run_id, dict(labels)))
        run.task = asyncio.create_task(self._follow(run), name=f"follow {run_id}")
        return run

    def record_in_background(self, run_id: str) -> None:
        """Record an ended agent nobody follows (status/output/settle wait for it)."""
        run = self.registry.get(run_id) or self.registry.add(LiveRun(run_id, {}))

        async def record_and_forget() -> None:
            try:
                await self.finalizer.finalize(None, run_id=run_id)
            except AgentkitError as exc:
                logger.warning("could not record finished agent %s: %s", run_id, exc)
            finally:
                self.registry.forget(run)

        run.task = asyncio.create_task(record_and_forget(), name=f"finalize {run_id}")

    async def stop(self, run_id: str, reason: AgentState) -> None:
        """Record why the agent is stopped (first reason wins), then stop its run."""
        if await self.store.read_stop(run_id) is None:
            await self.store.mark_stop(run_id, str(reason))
        await (await self._runtime()).stop(run_id, grace=STOP_GRACE)

    # --- following ------------------------------------------------------------------------------

    async def _watch_exits(self, runtime: Runtime) -> None:
        """One exit stream for all our agents; reopened when it breaks."""
        while not self._closed:
            try:
                async with contextlib.aclosing(runtime.exits(self.labels)) as stream:
                    async for event in stream:
                        run = self.registry.get(event.run)
                        if run is not None:
                            run.ended(event)
            except AgentkitError as exc:
                logger.debug("agent exit stream ended (%s); reopening", exc)
            if not self._closed:
                await asyncio.sleep(1.0)  # each follower's wait covers exits meanwhile

    async def _await_exit(self, run: LiveRun) -> ExitEvent:
        """How the run ended: the exit stream or the runtime's wait, whichever comes first."""
        if run.exit is not None:
            return run.exit
        runtime = await self._runtime()
        waiter = asyncio.create_task(runtime.wait(run.id))
        exited = asyncio.create_task(run.exited.wait())
        try:
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, exited):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, AgentkitError):
                        await task
        if run.exit is None:
            run.ended(waiter.result())
        assert run.exit is not None
        return run.exit

    async def _follow(self, run: LiveRun) -> None:
        """Follow one agent to its end; then forget it (its final status stays known)."""
        try:
            await self._follow_until_recorded(run)
        except (AgentkitError, OSError) as exc:
            logger.warning(
                "following agent %s failed: %s (status, wait or reconcile will retry)", run.id, exc
            )
            for queue in run.watchers:
                queue.put_nowait(None)
        finally:
            if run.done.is_set():
                self.registry.forget(run)  # frees its output tail; the record has everything

    async def _follow_until_recorded(self, run: LiveRun) -> None:
        self.registry.started(run)
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
        reader = asyncio.create_task(self._read_logs(run, pending, wakeup), name=f"logs {run.id}")
        exit_task = asyncio.create_task(self._await_exit(run), name=f"exit {run.id}")
        try:
            await asyncio.wait({reader, exit_task}, return_when=asyncio.FIRST_COMPLETED)
            if not exit_task.done():  # the logs ended first (the usual case on one engine)
                await exit_task
            exit_task.result()
            # the run ended: give the log stream a moment for its last lines
            done, _ = await asyncio.wait({reader}, timeout=DRAIN_GRACE)
            complete = bool(done) and reader.result()
            if not done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

            async def flush() -> None:
                finished.set()
                wakeup.set()
                try:
                    await writer_task
                    if not wrote_any:
                        await self.store.write_output(run.id, b"")
                except (AgentkitError, OSError) as exc:
                    # appending failed somewhere: write the whole output again from the runtime
                    logger.warning("persisting %s output failed (%s); rewriting it", run.id, exc)
                    await self.finalizer.reread_output(run)

            await self.finalizer.finalize(run, complete=complete, flush=flush)
        finally:
            # ended, not only told to: a child left running (the exit waiter's engine request)
            # would outlive aclose and be garbage-collected mid-request once its caller closes
            # the engine connection (an unraisable GeneratorExit inside aiohttp)
            children = [t for t in (guard, writer_task, reader, exit_task) if not t.done()]
            for task in children:
                task.cancel()
            if children:
                await asyncio.wait(children)
            for task in children:
                if not task.cancelled() and task.exception() is not None:
                    logger.debug("%s ended with %r", task.get_name(), task.exception())

    async def _read_logs(self, run: LiveRun, pending: bytearray, wakeup: asyncio.Event) -> bool:
        """Follow the run's output into ``run`` and ``pending``; ``True`` if it was whole."""
        runtime = await self._runtime()
        partial = b""
        complete = False
        try:
            async with contextlib.aclosing(runtime.logs(run.id, follow=True)) as stream:
                async for chunk in stream:
                    partial = run.take_chunk(chunk, partial, self.redactor, pending)
                    if chunk.stream != STDERR:
                        wakeup.set()
            complete = True
        except AgentkitError as exc:
            logger.warning("following %s broke (%s); will re-read its logs", run.id, exc)
        if partial:
            run.take_line(partial, self.redactor, pending)
            wakeup.set()
        return complete

    async def _deadline_guard(self, run: LiveRun) -> None:
        deadline = run.deadline
        if deadline is None:
            return
        await asyncio.sleep(max(deadline + DEADLINE_GRACE - time.time(), 0))
        if run.done.is_set():
            return
        logger.info("agent %s passed its deadline: stopping it", run.id)
        try:
            await self.stop(run.id, AgentState.TIMED_OUT)
        except (AgentkitError, OSError) as exc:  # gone already, or the run is unreachable
            logger.warning("could not stop %s at its deadline: %s", run.id, exc)
