"""What the agent service reports: ids, states, statuses, wait results and output.

Pure data and pure functions (no I/O), shared by the service, the tools and callers.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agentkit.errors import PermissionDeniedError
from agentkit.runtimes.base import ExitReason

__all__ = [
    "ID_PATTERN",
    "LABEL_MANAGED_BY",
    "LABEL_ROOT",
    "MANAGED_BY",
    "AgentOutput",
    "AgentState",
    "AgentStatus",
    "WaitResult",
    "decide_state",
    "new_agent_id",
    "validate_agent_id",
]

ID_PATTERN = re.compile(r"^claude-agent-\d{13}-[a-z0-9]{6}$")
LABEL_PREFIX = "agentkit."
LABEL_MANAGED_BY = "agentkit.managed-by"
MANAGED_BY = "agentkit"
LABEL_ROOT = "agentkit.root"


class AgentState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    OOM_KILLED = "oom_killed"
    #: the node or engine running it went away: how it ended is unknown
    LOST = "lost"
    #: the gateway refused a model request: the run's or the fleet's budget was spent
    BUDGET_EXCEEDED = "budget_exceeded"


def new_agent_id(now_ms: int | None = None) -> str:
    """``claude-agent-<ms>-<6 random [a-z0-9]>``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    alphabet = string.ascii_lowercase + string.digits
    return f"claude-agent-{ms:013d}-{''.join(secrets.choice(alphabet) for _ in range(6))}"


def validate_agent_id(container_id: str) -> str:
    """Return the id if it has our shape; otherwise refuse without touching the engine."""
    candidate = container_id.strip() if isinstance(container_id, str) else ""
    if not ID_PATTERN.fullmatch(candidate):
        raise PermissionDeniedError(
            f"{container_id!r} is not an agent started by agentkit: only its own agents can be "
            "inspected, read or stopped. Agent ids look like claude-agent-1764240000000-a1b2c3; "
            "list_claude_agents shows them."
        )
    return candidate


def decide_state(
    *,
    reason: ExitReason | None,
    exit_code: int | None,
    stop_reason: str | None,
    finished_at: float | None,
    deadline: float | None,
    result_is_error: bool | None,
    budget_exceeded: bool = False,
) -> AgentState:
    """The final state of an agent from how its run ended (neutral words), its record and the
    gateway.

    ``reason`` is the runtime's :class:`~agentkit.runtimes.base.ExitReason` (``None``: the
    run was never seen ending, e.g. it vanished); ``stop_reason`` is why agentkit stopped it;
    ``budget_exceeded``: the gateway refused a model request over a budget.
    """
    if stop_reason == AgentState.STOPPED:
        return AgentState.STOPPED
    if stop_reason == AgentState.TIMED_OUT:
        return AgentState.TIMED_OUT
    if budget_exceeded or stop_reason == AgentState.BUDGET_EXCEEDED:
        return AgentState.BUDGET_EXCEEDED
    if reason == ExitReason.OOM:
        return AgentState.OOM_KILLED
    if reason == ExitReason.DEADLINE:
        return AgentState.TIMED_OUT
    if (
        reason == ExitReason.SIGNALLED
        and deadline is not None
        and finished_at is not None
        and finished_at >= deadline - 1.0
    ):
        return AgentState.TIMED_OUT
    if reason == ExitReason.LOST:
        return AgentState.LOST
    if reason == ExitReason.EXITED and exit_code == 0 and not result_is_error:
        return AgentState.SUCCEEDED
    return AgentState.FAILED


@dataclass(slots=True)
class AgentStatus:
    """What ``get_claude_status`` reports. ``to_dict()`` is the structured form."""

    id: str
    state: AgentState
    exit_code: int | None = None
    created: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None
    workspace: str | None = None
    task: str | None = None
    turns: int | None = None
    cost_usd: float | None = None
    max_cost_usd: float | None = None
    session_id: str | None = None
    last_text: str | None = None
    result_text: str | None = None
    is_error: bool | None = None
    oom_killed: bool = False
    error: str | None = None
    #: seconds a spawn waited for a slot (pacing); set on the status ``spawn`` returns only
    spawn_wait_s: float | None = None
    #: the run this one continued (continue_claude_agent), if any
    parent: str | None = None
    #: whether the session transcript was saved with the record (finished runs)
    session_saved: bool | None = None
    #: running agents: running / waiting (for waiting_for: message or approval); done otherwise
    phase: str | None = None
    waiting_for: str | None = None
    stalled: bool = False
    approvals: list[dict[str, Any]] | None = None

    @property
    def finished(self) -> bool:
        return self.state != AgentState.RUNNING

    @property
    def elapsed_s(self) -> float | None:
        start = self.started_at or self.created
        if start is None:
            return None
        end = self.finished_at if self.finished and self.finished_at else time.time()
        return max(end - start, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": str(self.state),
            "exit_code": self.exit_code,
            "created": self.created,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deadline": self.deadline,
            "elapsed_s": round(self.elapsed_s, 3) if self.elapsed_s is not None else None,
            "workspace": self.workspace,
            "task": self.task,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "max_cost_usd": self.max_cost_usd,
            "session_id": self.session_id,
            "last_text": self.last_text,
            "result_text": self.result_text,
            "is_error": self.is_error,
            "oom_killed": self.oom_killed,
            "error": self.error,
            "parent": self.parent,
            "session_saved": self.session_saved,
            "phase": "done" if self.finished else (self.phase or "running"),
            "waiting_for": None if self.finished else self.waiting_for,
            "stalled": self.stalled and not self.finished,
            "approvals": [] if self.finished else list(self.approvals or []),
        }

    def summary_dict(self) -> dict[str, Any]:
        """The short form a listing returns per agent (get_claude_status has the rest)."""
        return {
            "id": self.id,
            "state": str(self.state),
            "exit_code": self.exit_code,
            "created": self.created,
            "finished_at": self.finished_at,
            "workspace": self.workspace,
            "task": self.task,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "error": self.error,
            "parent": self.parent,
            "phase": self.phase,
            "waiting_for": self.waiting_for,
            "stalled": self.stalled,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> AgentStatus:
        def num(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        state = data.get("state")
        return cls(
            id=str(data.get("id")),
            state=AgentState(state)
            if isinstance(state, str) and state in AgentState._value2member_map_
            else AgentState.FAILED,
            exit_code=data.get("exit_code"),
            created=num("created"),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            deadline=num("deadline"),
            workspace=data.get("workspace"),
            task=data.get("task"),
            turns=data.get("turns"),
            cost_usd=num("cost_usd"),
            max_cost_usd=num("max_cost_usd"),
            session_id=data.get("session_id"),
            last_text=data.get("last_text"),
            result_text=data.get("result_text"),
            is_error=data.get("is_error"),
            oom_killed=bool(data.get("oom_killed")),
            error=data.get("error"),
            parent=data.get("parent") if isinstance(data.get("parent"), str) else None,
            session_saved=data.get("session_saved")
            if isinstance(data.get("session_saved"), bool)
            else None,
        )


@dataclass(slots=True)
class WaitResult:
    status: AgentStatus
    timed_out: bool
    #: the wait ended early because the agent needs an approval (it still runs)
    needs_approval: bool = False


@dataclass(slots=True)
class AgentOutput:
    id: str
    state: AgentState
    text: str
    events: int
