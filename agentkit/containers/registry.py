"""`RunRegistry`: the one owner of agent state - live runs, final statuses, and observers.

Every agent this controller knows of is here: while it runs as a :class:`LiveRun` (followed
output, summary, watchers), once it ended as its final :class:`AgentStatus` and
:class:`RunRecord`. The follower adds and forgets live runs; the finalizer hands over the end.
Nobody else mutates them.

Observers (notifiers, a cost ledger, a dashboard's server-sent events) subscribe with
:meth:`RunRegistry.subscribe` and get, for every run:

* ``on_started(record)`` - once, when a run is spawned or re-adopted after a restart
  (``record.state`` is ``running``);
* ``on_event(run_id, event)`` - every stream-json event the agent prints, as it is parsed
  (synchronous: must not block; queue the work);
* ``on_finished(record)`` - once, with the final record, after it was written;
* ``on_session(run_id, notice)`` - a running agent's phase changed (waiting for a message or
  an approval, ``needs_approval``, stalled; :mod:`agentkit.containers.sessions`).

An observer that raises is logged and never disturbs the run or the other observers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING

from agentkit.containers.live import LiveRun
from agentkit.containers.models import AgentStatus
from agentkit.containers.records import RunRecord
from agentkit.containers.run_index import RunIndex

if TYPE_CHECKING:
    from agentkit.containers.models import AgentStatus
    from agentkit.containers.streamjson import Event, SessionNotice

__all__ = ["RunObserver", "RunRegistry"]

logger = logging.getLogger("agentkit.agents")

FINALS_KEPT = 1000  # final statuses held whole in memory (older ones: the index and the record)


class RunObserver:
    """Subclass and override what you need; every hook defaults to doing nothing."""

    async def on_started(self, record: RunRecord) -> None:
        """A run started (or was re-adopted by a restarted controller)."""

    def on_event(self, run_id: str, event: Event) -> None:
        """The agent printed ``event`` (called inline: keep it cheap, never block)."""

    async def on_finished(self, record: RunRecord) -> None:
        """A run ended and its final record was written."""

    def on_session(self, run_id: str, notice: SessionNotice) -> None:
        """A running agent's phase changed: waiting for a message or an approval, running
        again, stalled (see :mod:`agentkit.containers.sessions`). Inline: keep it cheap."""


class RunRegistry:
    """Live runs and final statuses of one service, and who is told about them."""

    def __init__(self, index: RunIndex | None = None) -> None:
        #: every finished run, newest-first pages without reading history (``run_index.py``)
        self.index = index if index is not None else RunIndex()
        self.finals_kept = FINALS_KEPT
        self._live: dict[str, LiveRun] = {}
        self.finals: dict[str, AgentStatus] = {}
        self._observers: list[RunObserver] = []
        self._announced: set[str] = set()
        self._finished: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()

    def pruned(self, run_ids: list[str]) -> None:
        """Finished runs whose records were removed (retention): forget them everywhere."""
        for run_id in run_ids:
            self.finals.pop(run_id, None)
            self._announced.discard(run_id)
            self._finished.discard(run_id)
            self.index.discard(run_id)

    # --- observers ------------------------------------------------------------------------------

    def subscribe(self, observer: RunObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: RunObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _dispatch(self, what: str, calls: list[Awaitable[None]]) -> None:
        async def run_all() -> None:
            results = await asyncio.gather(*calls, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    logger.warning("run observer failed in %s: %r", what, result)

        if calls:
            task = asyncio.create_task(run_all(), name=f"run observers {what}")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def session_changed(self, run_id: str, notice: SessionNotice) -> None:
        """Tell observers a running agent's phase changed (inline, like events)."""
        for observer in self._observers:
            try:
                observer.on_session(run_id, notice)
            except Exception as exc:
                logger.warning("run observer failed in on_session: %r", exc)

    def _on_event(self, run: LiveRun, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.on_event(run.id, event)
            except Exception as exc:
                logger.warning("run observer failed in on_event: %r", exc)

    async def drain(self) -> None:
        """Wait for the observer calls made so far (on close, and in tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- live runs ------------------------------------------------------------------------------

    def get(self, run_id: str) -> LiveRun | None:
        return self._live.get(run_id)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._live

    def __iter__(self) -> Iterator[LiveRun]:
        return iter(list(self._live.values()))

    def add(self, run: LiveRun) -> LiveRun:
        """Hold ``run`` (replacing an earlier one of the same id) and route its events."""
        run.on_event = self._on_event
        self._live[run.id] = run
        return run

    def started(self, run: LiveRun) -> None:
        """Tell observers a run started (once per id)."""
        if run.id in self._announced or run.id in self.finals:
            return
        self._announced.add(run.id)
        record = RunRecord.running(run.id, run.meta, run.labels, started_at=run.started_at)
        self._dispatch("on_started", [o.on_started(record) for o in self._observers])

    def forget(self, run: LiveRun) -> None:
        """Drop a live run that ended (its output tail is freed; the record has everything)."""
        if self._live.get(run.id) is run:
            del self._live[run.id]

    def clear(self) -> None:
        self._live.clear()

    # --- ends -----------------------------------------------------------------------------------

    def final(self, run_id: str) -> AgentStatus | None:
        return self.finals.get(run_id)

    def decided(self, status: AgentStatus) -> AgentStatus:
        """Remember a final status (returns the one kept: the first decided wins).

        Only the newest :attr:`finals_kept` are held whole; older ones that the index holds are
        let go (status then reads the run's record), so a controller running all day stays
        bounded.
        """
        kept = self.finals.setdefault(status.id, status)
        if len(self.finals) > self.finals_kept:
            for run_id in [i for i in list(self.finals)[: -self.finals_kept] if i in self.index]:
                del self.finals[run_id]
        return kept

    def finished(self, record: RunRecord) -> None:
        """A final record was written: tell observers (once per id)."""
        if record.id in self._finished:
            return
        self._finished.add(record.id)
        self.index.put(AgentStatus.from_record(record.to_dict()))
        self._dispatch("on_finished", [o.on_finished(record) for o in self._observers])
