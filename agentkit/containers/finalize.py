"""`Finalizer`: the end of an agent - its state decided, its record written, its container gone.

Used by the follower (when the agent it follows exits), by :meth:`AgentService.status`/``list``
(an exited container nobody recorded yet) and by reconcile (after a controller restart). Order:
waiters are woken as soon as the final state is known; then output, stderr, ``result.json`` and
the index line are written; only then is the container removed. A controller dying in between
leaves the container, so reconcile redoes this.

It also keeps the final statuses (the cache that makes ``status`` of a finished agent free) and
rebuilds a run's output from the engine's logs when following it broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from agentkit.containers.live import LiveRun, as_float
from agentkit.containers.models import AgentState, AgentStatus, decide_state
from agentkit.containers.runtime import ContainerInfo, ContainerRuntime
from agentkit.containers.streamjson import RunSummary
from agentkit.errors import AgentkitError, NotFoundError

if TYPE_CHECKING:
    from agentkit.containers.runs import RunStore
    from agentkit.redact import Redactor

__all__ = ["Finalizer", "recording_status"]

logger = logging.getLogger("agentkit.agents")


async def _none() -> None:
    return None


def recording_status(info: ContainerInfo) -> AgentStatus:
    """What to report for an exited container whose result is still being recorded."""
    return AgentStatus(
        id=info.name,
        state=AgentState.RUNNING,
        exit_code=info.exit_code,
        created=as_float(info.labels.get("agentkit.created")),
        deadline=as_float(info.labels.get("agentkit.deadline")),
        workspace=info.labels.get("agentkit.workspace"),
        task=info.labels.get("agentkit.task"),
        error="exited; recording its result",
    )


class Finalizer:
    """Records exited agents and remembers their final statuses.

    Args:
        runtime: returns the connected container runtime.
        store: the run records.
        redactor: applied to everything written.
        live: the followed runs by id (read only: a live run is told its final status too).
    """

    def __init__(
        self,
        runtime: Callable[[], Awaitable[ContainerRuntime]],
        store: RunStore,
        redactor: Redactor,
        live: Mapping[str, LiveRun],
    ) -> None:
        self._runtime = runtime
        self.store = store
        self.redactor = redactor
        self.live = live
        self.finals: dict[str, AgentStatus] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def recorded(self, run_id: str) -> AgentStatus | None:
        """The final status from the cache or the run record; ``None`` if not finished."""
        status = self.finals.get(run_id)
        if status is not None:
            return status
        data = await self.store.read_result(run_id)
        if data is None:
            return None
        status = AgentStatus.from_record(data)
        self.finals[run_id] = status
        return status

    async def finalize(
        self,
        run: LiveRun | None,
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
        lock = self._locks.setdefault(rid, asyncio.Lock())
        async with lock:
            if rid in self.finals:
                if flush is not None:
                    await flush()
                return self.finals[rid]
            runtime = await self._runtime()

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
                return self._remember(run, AgentStatus.from_record(existing), persisted=True)
            meta = (run.meta if run is not None and run.meta else stored_meta) or {}
            if run is None or not complete:
                run = run or LiveRun(rid, dict(info.labels) if info else {})
                if info is not None:
                    await self.reread_output(run)
            summary = run.summary
            res = summary.result
            if info is not None and exit_code is None:
                exit_code = info.exit_code
            state = decide_state(
                exit_code=exit_code,
                oom_killed=bool(info and info.oom_killed),
                stop_reason=stop.get("reason") if stop else None,
                finished_at=info.finished_at if info else None,
                deadline=as_float(meta.get("deadline")) or run.deadline,
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
            status = self._remember(run, AgentStatus.from_record(record))
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

    def _remember(
        self, run: LiveRun | None, status: AgentStatus, *, persisted: bool = False
    ) -> AgentStatus:
        self.finals[status.id] = status
        for item in {id(r): r for r in (run, self.live.get(status.id)) if r}.values():
            item.final = status
            item.done.set()
            for queue in item.watchers:
                queue.put_nowait(None)
            if persisted:
                item.persisted.set()
        return status

    async def reread_output(self, run: LiveRun) -> None:
        """Rebuild the whole output from the engine (after a broken follow or a restart)."""
        runtime = await self._runtime()
        watchers, run.watchers = run.watchers, set()  # they have seen these events already
        try:
            await self._reread_into(runtime, run)
        finally:
            run.watchers = watchers

    async def _reread_into(self, runtime: ContainerRuntime, run: LiveRun) -> None:
        run.summary = RunSummary()
        run.tail.clear()
        run.tail_bytes = run.lines = 0
        run.stderr.clear()
        out = bytearray()
        partial = b""
        async with contextlib.aclosing(runtime.logs(run.id, follow=False)) as stream:
            async for chunk in stream:
                partial = run.take_chunk(chunk, partial, self.redactor, out)
        if partial:
            run.take_line(partial, self.redactor, out)
        await self.store.write_output(run.id, bytes(out))
