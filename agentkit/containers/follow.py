"""`Follower`: follows each running agent to its end while a controller runs.

For every running agent it attaches to (at spawn, or found by status/list/reconcile) it runs one
task that

* follows the container's logs, keeping a :class:`LiveRun` (summary, tail, live watchers) and
  appending the redacted stream-json to the run record (bursts coalesced, at most every
  ``PERSIST_INTERVAL`` seconds, never delaying the end);
* notices the exit from the log stream's end and the engine's ``die`` event or wait API,
  whichever comes first (one engine event stream serves all agents);
* arms a deadline timer that stops the agent ``DEADLINE_GRACE`` after its deadline;
* hands the exited agent to the :class:`Finalizer`, then forgets it.
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
from agentkit.containers.runtime import STDERR, ContainerRuntime
from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.containers.finalize import Finalizer
    from agentkit.containers.runs import RunStore
    from agentkit.redact import Redactor

__all__ = ["CLOSE_GRACE", "DEADLINE_GRACE", "PERSIST_INTERVAL", "STOP_GRACE", "Follower"]

logger = logging.getLogger("agentkit.agents")

DEADLINE_GRACE = 1.5  # seconds the in-container `timeout` gets before the controller stops it
STOP_GRACE = 1.0  # SIGTERM -> SIGKILL for stop (init forwards SIGTERM, so this rarely matters)
CLOSE_GRACE = 30.0  # aclose waits this long for finished agents to be recorded and removed
PERSIST_INTERVAL = 1.0  # output is appended to the record at most this often (memory is live)


class Follower:
    """The agents this controller follows, by id, and the tasks that follow them.

    Args:
        runtime: returns the connected container runtime.
        store: the run records.
        redactor: applied to every output line before it is kept or written.
        finalizer: records an agent once it exited.
        labels: the labels that select this service's containers (engine events).
        runs: the followed runs by id, shared with ``finalizer`` (empty at first).
    """

    def __init__(
        self,
        runtime: Callable[[], Awaitable[ContainerRuntime]],
        store: RunStore,
        redactor: Redactor,
        finalizer: Finalizer,
        labels: Mapping[str, str | None],
        runs: dict[str, LiveRun],
    ) -> None:
        self._runtime = runtime
        self.store = store
        self.redactor = redactor
        self.finalizer = finalizer
        self.labels = labels
        self.runs = runs
        self._closed = False
        self._events_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start_events(self, runtime: ContainerRuntime) -> None:
        """Start the one engine event stream (``die``, ``oom``) for all followed agents."""
        self._events_task = asyncio.create_task(
            self._watch_events(runtime), name="agentkit agent events"
        )

    async def settle(self) -> None:
        """Wait for the background work (record, removal) of agents that already ended."""
        tasks = [r.task for r in self.runs.values() if r.task and r.done.is_set()]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def aclose(self) -> None:
        """Let ended agents be recorded (up to ``CLOSE_GRACE``), then stop following."""
        self._closed = True
        # Agents that already ended are being recorded: let that finish (the record, then the
        # container's removal), so a caller closing right after wait() loses nothing.
        finishing = [r.task for r in self.runs.values() if r.task and r.done.is_set()]
        if finishing:
            await asyncio.wait(finishing, timeout=CLOSE_GRACE)
        tasks = [run.task for run in self.runs.values() if run.task and not run.task.done()]
        if self._events_task is not None:
            tasks.append(self._events_task)
            self._events_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.runs.clear()

    # --- attaching ------------------------------------------------------------------------------

    def attach(self, run_id: str, labels: Mapping[str, str]) -> LiveRun:
        """The followed run of a running agent, following it now if nobody does."""
        run = self.runs.get(run_id)
        if run is not None and run.task is not None and not run.task.done():
            return run
        run = LiveRun(run_id, dict(labels))
        self.runs[run_id] = run
        run.task = asyncio.create_task(self._follow(run), name=f"follow {run_id}")
        return run

    def record_in_background(self, run_id: str) -> None:
        """Record an exited agent nobody follows (status/output/settle wait for it)."""

        run = self.runs.setdefault(run_id, LiveRun(run_id, {}))

        async def record_and_forget() -> None:
            try:
                await self.finalizer.finalize(None, run_id=run_id)
            except AgentkitError as exc:
                logger.warning("could not record finished agent %s: %s", run_id, exc)
            finally:
                if self.runs.get(run_id) is run:
                    del self.runs[run_id]

        run.task = asyncio.create_task(record_and_forget(), name=f"finalize {run_id}")

    async def stop(self, run_id: str, reason: AgentState) -> None:
        """Record why the agent is stopped (first reason wins), then stop its container."""
        if await self.store.read_stop(run_id) is None:
            await self.store.mark_stop(run_id, str(reason))
        await (await self._runtime()).stop(run_id, grace=STOP_GRACE)

    # --- following ------------------------------------------------------------------------------

    async def _watch_events(self, runtime: ContainerRuntime) -> None:
        """One engine event stream for all our agents: ``die`` (exit code) and ``oom``."""
        while not self._closed:
            try:
                async for event in runtime.events(self.labels, actions=("die", "oom")):
                    run = self.runs.get(event.name)
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

    async def _await_exit(self, run: LiveRun) -> int | None:
        """The exit status: the ``die`` event or the wait API, whichever comes first."""
        if run.died.is_set():
            return run.exit_code
        runtime = await self._runtime()
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

    async def _follow(self, run: LiveRun) -> None:
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
            if run.done.is_set() and self.runs.get(run.id) is run:
                del self.runs[run.id]  # frees its output tail; the record has everything

    async def _follow_until_recorded(self, run: LiveRun) -> None:
        runtime = await self._runtime()
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
                        partial = run.take_chunk(chunk, partial, self.redactor, pending)
                        if chunk.stream != STDERR:
                            wakeup.set()
                complete = True
            except AgentkitError as exc:
                logger.warning("following %s broke (%s); will re-read its logs", run.id, exc)
            if partial:
                run.take_line(partial, self.redactor, pending)
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
                    await self.finalizer.reread_output(run)

            await self.finalizer.finalize(run, exit_code=exit_code, complete=complete, flush=flush)
        finally:
            guard.cancel()
            if not writer_task.done():
                writer_task.cancel()

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
        except (AgentkitError, OSError) as exc:  # gone already, or the host is unreachable
            logger.warning("could not stop %s at its deadline: %s", run.id, exc)
