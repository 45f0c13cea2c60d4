"""`LiveRun`: what the service holds in memory about one agent it follows.

The run record on the host is the truth; a :class:`LiveRun` is the fast path while the agent
runs: its stream-json summary, a bounded tail of its output lines, its stderr, the live
:meth:`AgentService.watch` queues, how the engine said it ended, and the final status once known.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import AgentState, AgentStatus
from agentkit.containers.streamjson import Event, RunSummary, parse_line
from agentkit.runtimes.base import STDERR, ExitEvent

if TYPE_CHECKING:
    from agentkit.redact import Redactor
    from agentkit.runtimes.base import LogChunk, RunInfo

__all__ = ["MAX_LINE_BYTES", "NOTICE_INDEX", "STDERR_BYTES", "TAIL_BYTES", "LiveRun", "as_float"]

TAIL_BYTES = 256 * 1024  # rendered-output tail kept in memory per followed agent
#: index of agentkit's own notices within a line: after any event the line itself holds
NOTICE_INDEX = 1_000_000
STDERR_BYTES = 64 * 1024
#: An output line longer than this is dropped (a marker line says so) before it is redacted,
#: parsed or kept: an agent printing one endless line cannot grow the controller's memory or
#: stall its event loop. Claude Code's own lines stay far below it (tool output is capped).
MAX_LINE_BYTES = 1024 * 1024


def _dropped(size: int) -> str:
    return f"[agentkit: an output line of {size} bytes was dropped (over {MAX_LINE_BYTES} bytes)]"


def as_float(value: Any) -> float | None:
    """``float(value)``, or ``None`` for a missing or malformed label/record field."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class LiveRun:
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
    #: live watchers get ``(line number, index in the line, event)``; ``None`` ends the stream
    watchers: set[asyncio.Queue[tuple[int, int, Event] | None]] = field(default_factory=set)
    # from the runtime's exit stream: how the run ended (faster than asking for it)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit: ExitEvent | None = None
    started_at: float | None = None
    #: called with every event parsed from the output (the registry's observers)
    on_event: Callable[[LiveRun, Event], None] | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = None
    # bytes of an over-long stdout line dropped so far (0: not inside one)
    overlong: int = 0
    final: AgentStatus | None = None
    #: agentkit's own notices pushed to watchers so far (sessions: phase changes)
    notices: int = 0
    #: the number of the line whose events are being delivered (``None`` between lines)
    reading: int | None = None

    @property
    def deadline(self) -> float | None:
        return as_float(self.labels.get("agentkit.deadline"))

    def ended(self, event: ExitEvent) -> None:
        """The runtime said how the run ended (the first word wins)."""
        if self.exit is None:
            self.exit = event
        self.exited.set()

    @property
    def first_line(self) -> int:
        """The number of the oldest output line still in :attr:`tail` (0-based)."""
        return self.lines - len(self.tail)

    def add_line(self, line: str) -> None:
        events = parse_line(line)
        self.reading = self.lines
        for index, event in enumerate(events):
            self.summary.add(event)
            for queue in self.watchers:  # before observers: what they push follows the event
                queue.put_nowait((self.lines, index, event))
            if self.on_event is not None:
                self.on_event(self, event)
        self.reading = None
        self.lines += 1
        self.tail.append(line)
        self.tail_bytes += len(line)
        while self.tail_bytes > TAIL_BYTES and len(self.tail) > 1:
            self.tail_bytes -= len(self.tail.popleft())

    def push_notice(self, event: Event) -> None:
        """Push an event agentkit made (not printed by the agent) to the live watchers. Its
        position follows the events of the line being read (or the last one read), so
        ``(line, index)`` stays ordered and unique for resuming streams."""
        self.notices += 1
        line = self.reading if self.reading is not None else max(self.lines - 1, 0)
        for queue in self.watchers:
            queue.put_nowait((line, NOTICE_INDEX + self.notices, event))

    def take_line(self, raw: bytes, redactor: Redactor, out: bytearray) -> None:
        """Redact one raw stdout line, append it to ``out`` (to persist) and take it in."""
        if len(raw) > MAX_LINE_BYTES:
            line = _dropped(len(raw))
        else:
            line = redactor.redact(raw.decode("utf-8", "replace")).rstrip("\r")
        self.take_line_text(line, out)

    def take_chunk(
        self, chunk: LogChunk, partial: bytes, redactor: Redactor, out: bytearray
    ) -> bytes:
        """Take one log chunk: stderr is kept (its last ``STDERR_BYTES``), stdout's complete
        lines go through :meth:`take_line`. Returns the unfinished line, for the next chunk."""
        if chunk.stream == STDERR:
            self.stderr.extend(chunk.data)
            del self.stderr[: max(len(self.stderr) - STDERR_BYTES, 0)]
            return partial
        data = chunk.data
        if self.overlong:  # inside a dropped line: skip to its end
            end = data.find(b"\n")
            if end < 0:
                self.overlong += len(data)
                return b""
            self.take_line_text(_dropped(self.overlong + end), out)
            self.overlong, data, partial = 0, data[end + 1 :], b""
        *lines, partial = (partial + data).split(b"\n")
        for raw in lines:
            self.take_line(raw, redactor, out)
        if len(partial) > MAX_LINE_BYTES:
            self.overlong, partial = len(partial), b""
        return partial

    def take_line_text(self, line: str, out: bytearray) -> None:
        """Take a line agentkit wrote itself (no redaction needed)."""
        out.extend(line.encode("utf-8") + b"\n")
        self.add_line(line)

    def running_status(
        self, *, info: RunInfo | None = None, started_at: float | None = None
    ) -> AgentStatus:
        """The ``running`` status from the labels and what the agent printed so far."""
        labels = self.labels
        data = self.summary.to_dict()
        return AgentStatus(
            id=self.id,
            state=AgentState.RUNNING,
            created=as_float(labels.get("agentkit.created")),
            started_at=(info.started_at if info else None) or started_at,
            deadline=self.deadline,
            workspace=labels.get("agentkit.workspace"),
            task=labels.get("agentkit.task"),
            turns=data["turns"],
            cost_usd=data["cost_usd"],
            session_id=data["session_id"],
            last_text=data["last_text"],
            error=data["last_error"],
            parent=labels.get("agentkit.parent"),
        )
