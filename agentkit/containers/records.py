"""`RunRecord`: the typed form of one run record (``meta.json`` at spawn, ``result.json`` at end).

The files stay plain JSON objects (older records, other tools and ``index.jsonl`` read them);
this model is what the code passes around, builds and checks. Unknown keys are kept in
``extra`` and written back, so a newer controller's fields survive an older one's rewrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentkit.containers.models import AgentState

__all__ = ["RunRecord"]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(slots=True)
class RunRecord:
    """One agent run: what it was asked and where (meta), and how it ended (result)."""

    id: str
    task: str | None = None
    workspace: str | None = None
    created: float | None = None
    deadline: float | None = None
    timeout_ms: int | None = None
    image: str | None = None
    runtime: str | None = None
    node: str | None = None
    network: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    # the end (absent while running)
    state: AgentState = AgentState.RUNNING
    exit_code: int | None = None
    exit_reason: str | None = None
    oom_killed: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    turns: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    model: str | None = None
    last_text: str | None = None
    result_text: str | None = None
    is_error: bool | None = None
    api_retries: int | None = None
    stop_reason: str | None = None
    error: str | None = None
    output_lines: int | None = None
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.state != AgentState.RUNNING

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """Parse a record file's object (tolerant: wrong types become ``None``)."""
        state = data.get("state")
        known = {f.name for f in dataclasses.fields(cls)}
        limits = data.get("limits")
        usage = data.get("usage")
        is_error = data.get("is_error")
        return cls(
            id=str(data.get("id")),
            task=_str(data.get("task")),
            workspace=_str(data.get("workspace")),
            created=_num(data.get("created")),
            deadline=_num(data.get("deadline")),
            timeout_ms=_int(data.get("timeout_ms")),
            image=_str(data.get("image")),
            runtime=_str(data.get("runtime")),
            node=_str(data.get("node")),
            network=_str(data.get("network")),
            limits=dict(limits) if isinstance(limits, Mapping) else {},
            state=AgentState(state)
            if isinstance(state, str) and state in AgentState._value2member_map_
            else (AgentState.RUNNING if state is None else AgentState.FAILED),
            exit_code=_int(data.get("exit_code")),
            exit_reason=_str(data.get("exit_reason")),
            oom_killed=bool(data.get("oom_killed")),
            started_at=_num(data.get("started_at")),
            finished_at=_num(data.get("finished_at")),
            turns=_int(data.get("turns")),
            cost_usd=_num(data.get("cost_usd")),
            session_id=_str(data.get("session_id")),
            model=_str(data.get("model")),
            last_text=_str(data.get("last_text")),
            result_text=_str(data.get("result_text")),
            is_error=is_error if isinstance(is_error, bool) else None,
            api_retries=_int(data.get("api_retries")),
            stop_reason=_str(data.get("stop_reason")),
            error=_str(data.get("error")),
            output_lines=_int(data.get("output_lines")),
            usage=dict(usage) if isinstance(usage, Mapping) else None,
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def running(
        cls,
        run_id: str,
        meta: Mapping[str, Any],
        labels: Mapping[str, str],
        *,
        started_at: float | None = None,
    ) -> RunRecord:
        """A running run from its meta (or, for a re-adopted one, its labels)."""
        record = cls.from_dict({**_from_labels(labels), **meta, "id": run_id, "state": None})
        record.started_at = started_at
        return record

    def meta(self) -> dict[str, Any]:
        """What ``meta.json`` holds (written at spawn)."""
        return {
            "id": self.id,
            "task": self.task,
            "workspace": self.workspace,
            "created": self.created,
            "deadline": self.deadline,
            "timeout_ms": self.timeout_ms,
            "image": self.image,
            "runtime": self.runtime,
            "node": self.node,
            "network": self.network,
            "limits": dict(self.limits),
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole record (``result.json`` and the index line)."""
        out = {**self.extra}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, AgentState) else value
        return out


def _from_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    """Meta fields a run's labels carry (for runs whose meta is not at hand)."""
    out: dict[str, Any] = {}
    for key, name in (("agentkit.task", "task"), ("agentkit.workspace", "workspace")):
        if key in labels:
            out[name] = labels[key]
    for key, name in (("agentkit.created", "created"), ("agentkit.deadline", "deadline")):
        with contextlib.suppress(KeyError, ValueError):
            out[name] = float(labels[key])
    return out
