"""`Finalizer`: the end of an agent - its state decided, its record written, its run removed.

Used by the follower (when the agent it follows ended), by :meth:`AgentService.status`/``list``
(an ended run nobody recorded yet) and by reconcile (after a controller restart). Order:
waiters are woken as soon as the final state is known; then output, stderr, ``result.json`` and
the index line are written; only then is the run removed from the runtime and the registry's
observers told. A controller dying in between leaves the run, so reconcile redoes this.

It speaks only the runtime's neutral words (:class:`~agentkit.runtimes.base.ExitEvent`), and
rebuilds a run's output from the runtime's logs when following it broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agentkit.containers.launch import SESSION_ID
from agentkit.containers.live import LiveRun, as_float
from agentkit.containers.models import AgentState, AgentStatus, decide_state
from agentkit.containers.records import RunRecord
from agentkit.containers.streamjson import RunSummary
from agentkit.errors import AgentkitError, NotFoundError
from agentkit.runtimes.base import ExitEvent, RunInfo, Runtime

if TYPE_CHECKING:
    from agentkit.containers.registry import RunRegistry
    from agentkit.containers.runs import RunStore
    from agentkit.redact import Redactor

__all__ = ["SESSION_DIR", "Finalizer", "recording_status"]

#: where Claude Code keeps the transcripts of sessions started in /workspace (its cwd)
SESSION_DIR = "/home/claude/.claude/projects/-workspace"

logger = logging.getLogger("agentkit.agents")


async def _none() -> None:
    return None


def recording_status(info: RunInfo) -> AgentStatus:
    """What to report for an ended run whose result is still being recorded."""
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
    """Records ended agents; their final statuses live in the registry.

    Args:
        runtime: returns the connected runtime.
        store: the run records.
        redactor: applied to everything written.
        registry: the owner of live runs and final statuses.
        on_end: ``await on_end(run_id, meta)`` as a run is recorded; a mapping it returns (the
            gateway's metered summary) is kept in the record as ``metered``, its ``cost_usd``
            becomes the run's cost and ``budget_exceeded`` decides the state.
    """

    def __init__(
        self,
        runtime: Callable[[], Awaitable[Runtime]],
        store: RunStore,
        redactor: Redactor,
        registry: RunRegistry,
        on_end: Callable[[str, Mapping[str, Any]], Awaitable[Mapping[str, Any] | None]]
        | None = None,
    ) -> None:
        self._runtime = runtime
        #: asked once per run as it is recorded (the gateway: kill the token, metered usage)
        self.on_end = on_end
        self.store = store
        self.redactor = redactor
        self.registry = registry
        self._locks: dict[str, asyncio.Lock] = {}
        self.session_max_bytes = 50 * 1024 * 1024

    @property
    def finals(self) -> dict[str, AgentStatus]:
        return self.registry.finals

    async def recorded(self, run_id: str) -> AgentStatus | None:
        """The final status from the registry or the run record; ``None`` if not finished."""
        status = self.registry.final(run_id)
        if status is not None:
            return status
        data = await self.store.read_result(run_id)
        if data is None:
            return None
        return self.registry.decided(AgentStatus.from_record(data))

    async def finalize(
        self,
        run: LiveRun | None,
        *,
        run_id: str | None = None,
        complete: bool = True,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> AgentStatus:
        """Record the end of an ended run, then remove it from the runtime.

        Waiters are woken as soon as the final state is known; the record (output flushed by
        ``flush``, stderr, result, index line) is written next, and only then is the run
        removed. A controller dying in between leaves the run, so reconcile redoes this.
        """
        rid = run.id if run is not None else str(run_id)
        lock = self._locks.setdefault(rid, asyncio.Lock())
        async with lock:
            known = self.registry.final(rid)
            if known is not None:
                if flush is not None:
                    await flush()
                return known
            runtime = await self._runtime()

            async def inspect() -> RunInfo | None:
                try:
                    return await runtime.inspect(rid)
                except NotFoundError:
                    return None

            # the exit event already says how it ended: inspecting now would wait for the
            # engine's cleanup (tens of ms)
            ended = run.exit if run is not None and complete else None
            existing, info, stop, stored_meta = await asyncio.gather(
                self.store.read_result(rid),
                _none() if ended is not None else inspect(),
                self.store.read_stop(rid),
                self.store.read_meta(rid) if run is None or not run.meta else _none(),
            )
            if existing is not None:  # another controller finished it first
                if flush is not None:
                    await flush()
                return self._remember(run, AgentStatus.from_record(existing), persisted=True)
            meta = (run.meta if run is not None and run.meta else stored_meta) or {}
            labels = dict(info.labels) if info is not None else {}
            if run is None or not complete:
                run = run or LiveRun(rid, labels)
                await self._reread_or_keep(run, info)
            exit_event = ended or (info.exit if info is not None else None)
            metered = await self._ended(rid, meta)
            record = self._record(run, meta, labels, exit_event, info, stop, metered)
            status = self._remember(run, AgentStatus.from_record(record.to_dict()))
            # persist: output first, then stderr, then the result that marks the run finished
            if flush is not None:
                await flush()
            err_text = bytes(run.stderr).decode("utf-8", "replace").strip()
            if err_text:
                await self.store.write_stderr(rid, self.redactor.redact(err_text).encode())
            if (info is not None or ended is not None) and record.session_id:
                await self._save_session(runtime, rid, record)
                status.session_saved = record.extra.get("session_saved")
            data = record.to_dict()
            await self.store.write_result(rid, data)
            await self.store.append_index(data)
            run.persisted.set()
        # The output is safe in the record: the run can go.
        if info is not None or ended is not None:
            try:
                await runtime.remove(rid, force=True)
            except AgentkitError as exc:
                logger.warning("could not remove finished run %s: %s", rid, exc)
        self.registry.finished(record)
        return status

    async def _save_session(self, runtime: Runtime, rid: str, record: RunRecord) -> None:
        """Copy the run's Claude Code session out of it (before it is removed) into the record.

        The transcript is untrusted and bounded (``session_max_bytes``); its id comes from the
        agent's output, so it is checked before it names a path."""
        sid = record.session_id or ""
        if not SESSION_ID.fullmatch(sid):
            record.extra["session_saved"] = False
            return
        try:
            data = await runtime.copy_out(
                rid, f"{SESSION_DIR}/{sid}.jsonl", max_bytes=self.session_max_bytes
            )
            if data is None:
                record.extra["session_saved"] = False
                record.extra["session_error"] = "the run left no session transcript"
                return
            text = await asyncio.to_thread(self.redactor.redact, data.decode("utf-8", "replace"))
            await self.store.write_session(rid, text.encode("utf-8"))
            record.extra["session_saved"] = True
        except (AgentkitError, OSError) as exc:
            logger.warning("could not save the session of %s: %s", rid, exc)
            record.extra["session_saved"] = False
            record.extra["session_error"] = self.redactor.redact(str(exc))[:300]

    def _record(
        self,
        run: LiveRun,
        meta: dict[str, object],
        labels: dict[str, str],
        exit_event: ExitEvent | None,
        info: RunInfo | None,
        stop: dict[str, object] | None,
        metered: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """The final record from what the run printed, how the runtime says it ended and what
        the gateway metered (``metered``: its summary of the run, or ``None``)."""
        summary = run.summary
        res = summary.result
        stop_reason = stop.get("reason") if stop else None
        record = RunRecord.running(run.id, meta, labels or run.labels)
        deadline = record.deadline if record.deadline is not None else run.deadline
        finished_at = exit_event.at if exit_event else None
        state = decide_state(
            reason=exit_event.reason if exit_event else None,
            exit_code=exit_event.exit_code if exit_event else None,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            finished_at=finished_at,
            deadline=deadline,
            result_is_error=res.is_error if res else None,
            budget_exceeded=bool(metered and metered.get("budget_exceeded")),
        )
        err_text = bytes(run.stderr).decode("utf-8", "replace").strip()
        error = None
        if exit_event is None:
            error = "the run disappeared before its result was recorded"
        elif state == AgentState.BUDGET_EXCEEDED and metered:
            error = str(metered.get("budget_reason") or "the budget was spent")
        elif state != AgentState.SUCCEEDED:
            error = (summary.last_error or exit_event.error or err_text[-500:]) or None
            if state == AgentState.LOST and not error:
                error = "the node running it went away; how it ended is unknown"
        data = summary.to_dict()
        record.state = state
        record.exit_code = exit_event.exit_code if exit_event else None
        record.exit_reason = str(exit_event.reason) if exit_event else None
        record.oom_killed = bool(exit_event and exit_event.oom)
        record.started_at = (info.started_at if info else None) or run.started_at
        record.finished_at = finished_at or time.time()
        record.turns = data["turns"]
        record.cost_usd = data["cost_usd"]
        record.session_id = data["session_id"]
        record.model = data.get("model")
        record.last_text = data["last_text"]
        record.result_text = data["result_text"]
        record.is_error = data["is_error"]
        record.api_retries = data["api_retries"]
        record.usage = res.usage if res is not None and isinstance(res.usage, dict) else None
        record.stop_reason = stop_reason if isinstance(stop_reason, str) else None
        record.error = self.redactor.redact(error) if error else None
        record.output_lines = run.lines
        if metered is not None:  # the gateway's figures win over Claude Code's estimate
            record.extra["metered"] = dict(metered)
            record.extra["reported_cost_usd"] = record.cost_usd
            cost = metered.get("cost_usd")
            record.cost_usd = float(cost) if isinstance(cost, int | float) else None
        return record

    async def _ended(self, run_id: str, meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if self.on_end is None:
            return None
        try:
            return await self.on_end(run_id, meta)
        except AgentkitError as exc:  # the record must still be written
            logger.warning("the gateway could not close run %s: %s", run_id, exc)
            return None

    def _remember(
        self, run: LiveRun | None, status: AgentStatus, *, persisted: bool = False
    ) -> AgentStatus:
        status = self.registry.decided(status)
        for item in {id(r): r for r in (run, self.registry.get(status.id)) if r}.values():
            item.final = status
            item.done.set()
            for queue in item.watchers:
                queue.put_nowait(None)
            if persisted:
                item.persisted.set()
        return status

    async def _reread_or_keep(self, run: LiveRun, info: RunInfo | None) -> None:
        """The whole output from the runtime; when it cannot give it (the run's node is gone),
        what the record already holds is kept and read back instead."""
        if info is not None:
            try:
                await self.reread_output(run)
                return
            except AgentkitError as exc:
                logger.warning("cannot re-read %s's output (%s); keeping the record's", run.id, exc)
        if run.lines:
            return  # followed until now: the record holds what was seen
        for line in (await self.store.read_output(run.id)).decode("utf-8", "replace").splitlines():
            run.add_line(line)

    async def reread_output(self, run: LiveRun) -> None:
        """Rebuild the whole output from the runtime (after a broken follow or a restart)."""
        runtime = await self._runtime()
        watchers, run.watchers = run.watchers, set()  # they have seen these events already
        on_event, run.on_event = run.on_event, None  # nor should observers see them twice
        try:
            await self._reread_into(runtime, run)
        finally:
            run.watchers = watchers
            run.on_event = on_event

    async def _reread_into(self, runtime: Runtime, run: LiveRun) -> None:
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
