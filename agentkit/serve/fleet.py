"""`FleetHub`: one live stream of the whole fleet for ``GET /v1/events`` and the dashboard.

It is a :class:`~agentkit.containers.registry.RunObserver` of the agent service's run registry:

* ``on_started`` / ``on_finished`` publish an agent's status (``agent``) when it starts (spawned
  here, or adopted: listed, asked about, reconciled) and when it ended;
* ``on_event`` publishes each stream event (``agent.event``, with its ``<line>.<index>``
  position, the same id as ``GET /v1/agents/{id}/events``) and the agent's status again when
  its turns, cost or last text changed - from memory, no engine call, no polling;
* ``AgentService.list`` gives the snapshot a new subscriber starts from (listing also adopts
  running agents another controller spawned, which then stream here too).

Messages carry ids ``<epoch>-<seq>``: a subscriber that reconnects with ``Last-Event-ID``
gets exactly the messages after it from a ring buffer, or - when the server restarted (new
epoch) or the buffer no longer reaches back - a fresh ``snapshot`` first.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import AgentStatus
from agentkit.containers.registry import RunObserver
from agentkit.containers.streamjson import (
    AssistantText,
    AssistantToolUse,
    Event,
    ResultEvent,
)
from agentkit.serve.encode import agent_event
from agentkit.serve.sse import Message, Position, format_position

SNAPSHOT_FINISHED = 200  # finished runs in a subscriber's snapshot (every running one is in it)

if TYPE_CHECKING:
    from agentkit.containers.records import RunRecord
    from agentkit.containers.service import AgentService
    from agentkit.redact import Redactor

__all__ = ["FleetHub"]


class FleetHub(RunObserver):
    """Publishes fleet messages to every subscriber; keeps the last ``backlog`` for resumes.

    Message kinds (SSE ``event:``): ``snapshot`` (``{"agents": [status, ...]}``), ``agent``
    (one agent's status: started, progressed, finished), ``agent.event`` (``{"agent": id,
    "position": "<line>.<index>", "event": {...}}``, one event of its stream).
    """

    def __init__(
        self,
        agents: AgentService,
        redactor: Redactor,
        *,
        backlog: int = 4096,
        queue_size: int = 8192,
    ) -> None:
        self._agents = agents
        self._redactor = redactor
        self.epoch = secrets.token_hex(4)
        self._seq = 0
        self._ring: deque[tuple[int, Message]] = deque(maxlen=backlog)
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Message | None]] = set()
        # per running agent: the last position published, and the (turns, cost, text) shown
        self._positions: dict[str, Position] = {}
        self._shown: dict[str, tuple[object, ...]] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False

    # --- state the tests and /healthz read ------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def tracked(self) -> int:
        """Running agents whose events this hub has seen."""
        return len(self._positions)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Observe the run registry (once; later calls return)."""
        async with self._lock:
            if self._started or self._closed:
                return
            await self._agents.start()
            self._agents.registry.subscribe(self)
            self._started = True

    async def aclose(self) -> None:
        self._closed = True
        self._agents.registry.unsubscribe(self)
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    # --- subscribing ----------------------------------------------------------------------------

    async def subscribe(
        self, last_event_id: str | None = None, *, agent_events: bool = True
    ) -> AsyncGenerator[Message, None]:
        """The messages after ``last_event_id`` (or a snapshot first), then live ones;
        without ``agent.event`` messages unless ``agent_events``."""
        await self.start()
        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=self._queue_size)
        replay = self._after(last_event_id)
        mark = self._current_id()
        self._subscribers.add(queue)
        try:
            if replay is None:
                statuses = await self._snapshot()
                yield Message("snapshot", {"agents": [s.to_dict() for s in statuses]}, mark)
            else:
                for message in replay:
                    if agent_events or message.event != "agent.event":
                        yield message
            while True:
                live = await queue.get()
                if live is None:  # closing, or this subscriber fell too far behind
                    return
                if agent_events or live.event != "agent.event":
                    yield live
        finally:
            self._subscribers.discard(queue)

    async def _snapshot(self) -> list[AgentStatus]:
        """Every running agent (also adopts them) and the newest finished runs, newest first:
        a long history never makes a subscriber's first message large."""
        running, finished = await asyncio.gather(
            self._agents.page(state="running", limit=None),
            self._agents.page(state="finished", limit=SNAPSHOT_FINISHED),
        )
        by_id = {s.id: s for s in running.agents}
        by_id.update((s.id, s) for s in finished.agents)  # one that ended meanwhile: its end
        return sorted(by_id.values(), key=lambda s: s.id, reverse=True)

    def _current_id(self) -> str:
        return f"{self.epoch}-{self._seq}"

    def _after(self, last_event_id: str | None) -> list[Message] | None:
        """Buffered messages after ``last_event_id``; ``None`` when they cannot be complete."""
        if not last_event_id:
            return None
        epoch, _, seq_text = last_event_id.strip().partition("-")
        if epoch != self.epoch or not seq_text.isdigit() or len(seq_text) > 18:
            return None
        seq = int(seq_text)
        if seq > self._seq:
            return None
        oldest = self._ring[0][0] if self._ring else self._seq + 1
        if seq + 1 < oldest:
            return None  # the buffer no longer reaches back: start from a snapshot
        return [message for number, message in self._ring if number > seq]

    def _publish(self, event: str, data: Any) -> None:
        self._seq += 1
        message = Message(event, data, f"{self.epoch}-{self._seq}")
        self._ring.append((self._seq, message))
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # too slow: end its stream; it resumes from the buffer with Last-Event-ID
                self._subscribers.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    # --- the registry's observer hooks ---------------------------------------------------------

    async def on_started(self, record: RunRecord) -> None:
        self._publish("agent", self._status(record))

    async def on_finished(self, record: RunRecord) -> None:
        self._positions.pop(record.id, None)
        self._shown.pop(record.id, None)
        self._publish("agent", self._status(record))

    def on_event(self, run_id: str, event: Event) -> None:
        run = self._agents.registry.get(run_id)
        if run is None:
            return
        # called while the run takes in one output line (before it counts it): ``run.lines`` is
        # that line's number; events of one line come in order
        last = self._positions.get(run_id)
        position = (run.lines, last[1] + 1 if last and last[0] == run.lines else 0)
        if last is not None and position <= last:
            return  # the output is being read again from the start (after a broken follow)
        self._positions[run_id] = position
        self._publish(
            "agent.event",
            {
                "agent": run_id,
                "position": format_position(position),
                "event": agent_event(event, self._redactor),
            },
        )
        if isinstance(event, AssistantText | AssistantToolUse | ResultEvent):
            status = run.running_status().to_dict()
            shown = (status["turns"], status["cost_usd"], status["last_text"])
            if self._shown.get(run_id) != shown:
                self._shown[run_id] = shown
                self._publish("agent", self._redactor.redact_data(status))

    def _status(self, record: RunRecord) -> dict[str, Any]:
        status = AgentStatus.from_record(record.to_dict())
        return self._redactor.redact_data(status.to_dict())  # type: ignore[no-any-return]
