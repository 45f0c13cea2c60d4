"""`RunIndex`: every finished run in memory, in id (= creation) order, persisted compactly.

``list_claude_agents`` must not read history: the index is loaded ONCE per controller (one read
of ``runs/index.jsonl``), kept in memory as compact :class:`AgentStatus` entries (texts
clipped), and extended as runs finish here. Lines other controllers append are picked up by
reading only the bytes added since the last read (``tail -c +N``, one command, at most every
``REFRESH_INTERVAL`` seconds or at once when a run it saw running left the engine).

The file is append-only (one JSON line per finished run; a later line for an id wins; a
``{"id": ..., "pruned": true}`` line drops one). When it holds many more lines than live
entries (rewrites, pruned runs) it is compacted: rewritten atomically from memory.

Ids are ``claude-agent-<ms>-<rand>``: sorting by id sorts by creation time, so "newest first"
is a reverse walk of one sorted list and a cursor is simply the last id of a page.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import ID_PATTERN, AgentState, AgentStatus
from agentkit.errors import ToolError

if TYPE_CHECKING:
    from agentkit.containers.runs import RunStore

__all__ = ["REFRESH_INTERVAL", "RunFilter", "RunIndex", "compact_status", "parse_since"]

REFRESH_INTERVAL = 2.0  # seconds between reads of lines other controllers appended
CLIP_CHARS = 400  # task / texts kept per entry in memory and in the compacted file
MAX_LIMIT = 500
_RELATIVE = re.compile(r"(\d{1,9})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= CLIP_CHARS else text[: CLIP_CHARS - 1] + "…"


def compact_status(status: AgentStatus) -> AgentStatus:
    """``status`` with its free texts clipped (what the index keeps per run)."""
    return AgentStatus(
        id=status.id,
        state=status.state,
        exit_code=status.exit_code,
        created=status.created,
        started_at=status.started_at,
        finished_at=status.finished_at,
        deadline=status.deadline,
        workspace=status.workspace,
        task=_clip(status.task),
        turns=status.turns,
        cost_usd=status.cost_usd,
        session_id=status.session_id,
        last_text=_clip(status.last_text),
        result_text=_clip(status.result_text),
        is_error=status.is_error,
        oom_killed=status.oom_killed,
        error=_clip(status.error),
        parent=status.parent,
        session_saved=status.session_saved,
    )


def parse_since(value: str | float | None, *, now: float | None = None) -> float | None:
    """``since`` as epoch seconds: an ISO 8601 time, epoch seconds, or an age like ``2h``."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if len(text) > 64:
        raise ToolError("since is too long: give an ISO 8601 time or an age like 30m, 2h, 7d")
    relative = _RELATIVE.fullmatch(text)
    if relative:
        seconds = int(relative.group(1)) * _UNIT[relative.group(2)]
        return (time.time() if now is None else now) - seconds
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"since {text!r} is not a time: give an ISO 8601 time "
            "(2026-01-31T12:00:00Z), epoch seconds, or an age like 30m, 2h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing wants (all optional; ``None`` matches everything)."""

    states: frozenset[AgentState] | None = None
    workspace: str | None = None
    since: float | None = None

    def matches(self, status: AgentStatus) -> bool:
        if self.states is not None and status.state not in self.states:
            return False
        if self.workspace is not None and not _same_workspace(status.workspace, self.workspace):
            return False
        return not (self.since is not None and (status.created or 0.0) < self.since)

    @property
    def wants_running(self) -> bool:
        return self.states is None or AgentState.RUNNING in self.states


def _same_workspace(path: str | None, wanted: str) -> bool:
    """A run's workspace (a host path) matches a name or the same path."""
    if not path:
        return False
    return path == wanted or path.rstrip("/").rsplit("/", 1)[-1] == wanted.rstrip("/")


class RunIndex:
    """The finished runs of one runs root, newest-first pages without reading history."""

    def __init__(self, store: RunStore | None = None) -> None:
        self.store = store
        self._ids: list[str] = []  # ascending
        self._by_id: dict[str, AgentStatus] = {}
        self._offset = 0  # bytes of index.jsonl read so far
        self._lines = 0  # lines in the file as far as we know (for compaction)
        self._loaded = False
        self._read_at = 0.0

    # --- memory ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._by_id

    def get(self, run_id: str) -> AgentStatus | None:
        return self._by_id.get(run_id)

    def ids(self) -> list[str]:
        """Every indexed id, oldest first."""
        return list(self._ids)

    def put(self, status: AgentStatus) -> None:
        """Hold a finished run (replacing an earlier entry of the same id)."""
        if not ID_PATTERN.fullmatch(status.id) or status.state == AgentState.RUNNING:
            return
        if status.id not in self._by_id:
            bisect.insort(self._ids, status.id)
        self._by_id[status.id] = compact_status(status)

    def discard(self, run_id: str) -> None:
        if self._by_id.pop(run_id, None) is not None:
            i = bisect.bisect_left(self._ids, run_id)
            if i < len(self._ids) and self._ids[i] == run_id:
                del self._ids[i]

    def newest_first(self, before: str | None = None) -> Iterator[AgentStatus]:
        """Entries newer-to-older, starting just below the id ``before`` (a cursor)."""
        end = len(self._ids) if before is None else bisect.bisect_left(self._ids, before)
        by_id = self._by_id
        for i in range(end - 1, -1, -1):
            yield by_id[self._ids[i]]

    def take_lines(self, raw: bytes) -> None:
        """Apply index lines (complete lines only; the caller keeps the byte offset)."""
        for line in raw.splitlines():
            if not line.strip():
                continue
            self._lines += 1
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            run_id = str(data.get("id"))
            if data.get("pruned") is True:
                self.discard(run_id)
            else:
                self.put(AgentStatus.from_record(data))

    # --- persistence ----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def wasted_lines(self) -> int:
        """Lines in the file that a compaction would drop."""
        return max(self._lines - len(self._ids), 0)

    async def load(self) -> None:
        """Read the whole file once (a controller's first listing)."""
        assert self.store is not None
        raw = await self.store.read_index_bytes()
        self._ids.clear()
        self._by_id.clear()
        self._lines = 0
        whole = raw[: raw.rfind(b"\n") + 1]  # a line being appended right now comes later
        self.take_lines(whole)
        self._offset = len(whole)
        self._loaded = True
        self._read_at = time.monotonic()

    async def refresh(self, *, force: bool = False) -> None:
        """Take the lines appended since the last read (other controllers' runs)."""
        if not self._loaded:
            await self.load()
            return
        if not force and time.monotonic() - self._read_at < REFRESH_INTERVAL:
            return
        assert self.store is not None
        self._read_at = time.monotonic()
        added = await self.store.read_index_from(self._offset)
        if added is None:  # the file shrank: another controller compacted it
            await self.load()
            return
        whole = added[: added.rfind(b"\n") + 1]
        self.take_lines(whole)
        self._offset += len(whole)

    def compact_bytes(self) -> bytes:
        """The whole file as a compaction writes it: one compact line per run, oldest first."""
        return b"".join(_line(self._by_id[i].to_dict()) for i in self._ids)

    async def compact(self) -> int:
        """Rewrite the file from memory (atomic); returns the lines dropped."""
        assert self.store is not None
        await self.refresh(force=True)  # take what others appended right before rewriting
        dropped = self.wasted_lines
        data = self.compact_bytes()
        await self.store.write_index(data)
        self._offset = len(data)
        self._lines = len(self._ids)
        return dropped

    async def drop(self, run_ids: Iterable[str]) -> None:
        """Forget runs (pruned) in memory and with one ``pruned`` line each in the file."""
        assert self.store is not None
        ids = list(run_ids)
        for run_id in ids:
            self.discard(run_id)
        if ids:  # read back by the next refresh, like every appended line
            await self.store.append_index_bytes(
                b"".join(_line({"id": i, "pruned": True}) for i in ids)
            )


def _line(data: Mapping[str, Any]) -> bytes:
    return (
        json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
    ).encode("utf-8")
