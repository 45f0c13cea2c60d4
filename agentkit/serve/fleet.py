"""`FleetHub`: one live stream of the whole fleet for ``GET /v1/events`` and the dashboard.

What it is built on today (the only module to change when a run registry with observers
exists - see ``docs/serve.md`` "Rewiring"):

* the engine's container ``start`` events (``ContainerRuntime.events`` on the service's own
  labels) say when any agent of this root starts - spawned here, by the CLI or another
  controller - with no polling;
* for each running agent one task follows :meth:`AgentService.watch_numbered` (the service's
  own in-memory fan-out of the agent's log stream) and publishes its events, its status as
  turns and cost change, and its final status when the stream ends;
* ``AgentService.list`` gives the snapshot a new subscriber starts from (and heals a start
  missed while the engine stream was reconnecting).

Messages carry ids ``<epoch>-<seq>``: a subscriber that reconnects with ``Last-Event-ID``
gets exactly the messages after it from a ring buffer, or - when the server restarted (new
epoch) or the buffer no longer reaches back - a fresh ``snapshot`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import ID_PATTERN
from agentkit.containers.streamjson import Event, RunSummary
from agentkit.errors import AgentkitError
from agentkit.serve.encode import agent_event
from agentkit.serve.sse import Message, Position, format_position

if TYPE_CHECKING:
    from agentkit.containers.models import AgentStatus
    from agentkit.containers.service import AgentService
    from agentkit.redact import Redactor

__all__ = ["REWATCH_DELAY", "FleetHub", "positioned"]

logger = logging.getLogger("agentkit.serve")

RECONNECT_DELAY = 1.0  # seconds before reopening a broken engine event stream
REWATCH_DELAY = 1.0  # seconds before watching a still running agent whose stream ended


async def positioned(
    agents: AgentService, agent_id: str, after: Position | None
) -> AsyncGenerator[tuple[Position, Event], None]:
    """The agent's events with their ``(line, index)`` positions, those after ``after`` only."""
    async with contextlib.aclosing(agents.watch_numbered(agent_id)) as events:
        async for line, index, event in events:
            if after is None or (line, index) > after:
                yield (line, index), event


class FleetHub:
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
        self._tracked: dict[str, asyncio.Task[None]] = {}
        self._engine: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # --- state the tests and /healthz read ------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the engine and follow the running agents (once; later calls return)."""
        async with self._lock:
            if self._engine is not None or self._closed:
                return
            await self._agents.start()
            self._engine = asyncio.create_task(self._follow_engine(), name="fleet engine events")
        await self._catch_up()

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._engine, *self._tracked.values()) if t is not None]
        self._engine = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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
                statuses = await self._catch_up()
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

    # --- sources --------------------------------------------------------------------------------

    async def _catch_up(self) -> list[AgentStatus]:
        """List the fleet and follow every running agent not followed yet."""
        statuses = await self._agents.list()
        for status in statuses:
            if not status.finished:
                self._track(status.id)
        return statuses

    async def _follow_engine(self) -> None:
        runtime = await self._agents.runtime()
        while not self._closed:
            try:
                async for event in runtime.events(self._agents.labels, actions=("start",)):
                    if ID_PATTERN.fullmatch(event.name):
                        self._track(event.name)
            except AgentkitError as exc:
                logger.debug("fleet engine events ended (%s); reopening", exc)
            if self._closed:
                return
            await asyncio.sleep(RECONNECT_DELAY)  # back-off before reconnecting, not polling
            with contextlib.suppress(AgentkitError):
                await self._catch_up()

    def _track(self, agent_id: str) -> None:
        if agent_id in self._tracked or self._closed:
            return
        self._tracked[agent_id] = asyncio.create_task(
            self._follow_agent(agent_id), name=f"fleet {agent_id}"
        )

    async def _follow_agent(self, agent_id: str) -> None:
        try:
            status = await self._agents.status(agent_id)
            base = status.to_dict()
            self._publish("agent", base)
            summary = RunSummary()
            shown = (base["turns"], base["cost_usd"], base["last_text"])
            last: Position | None = None
            while True:
                async with contextlib.aclosing(positioned(self._agents, agent_id, last)) as events:
                    async for position, event in events:
                        last = position
                        summary.add(event)
                        self._publish(
                            "agent.event",
                            {
                                "agent": agent_id,
                                "position": format_position(position),
                                "event": agent_event(event, self._redactor),
                            },
                        )
                        now = (
                            summary.turns or base["turns"],
                            base["cost_usd"] if summary.cost_usd is None else summary.cost_usd,
                            summary.last_text or base["last_text"],
                        )
                        if now != shown and not status.finished:
                            shown = now
                            update = dict(base, turns=now[0], cost_usd=now[1], last_text=now[2])
                            self._publish("agent", self._redactor.redact_data(update))
                final = await self._agents.status(agent_id)
                if final.finished:
                    if not status.finished:
                        self._publish("agent", final.to_dict())
                    return
                await asyncio.sleep(REWATCH_DELAY)  # still running: its stream broke; again
        except AgentkitError as exc:
            logger.warning("fleet: following %s failed: %s", agent_id, exc)
        finally:
            self._tracked.pop(agent_id, None)
