"""JSON views of the events ``agentkit serve`` streams (bounded, redacted, no raw payloads).

* :func:`agent_event` - one Claude Code stream-json event of a container agent (what
  :meth:`AgentService.watch` yields), with ``text``: the one-line rendering ``agentkit logs``
  prints;
* :func:`run_event` - one :class:`~agentkit.agent.events.AgentEvent` of a ``POST /v1/runs`` run.
"""

from __future__ import annotations

import json
from typing import Any

from agentkit.agent.events import AgentEvent, ErrorEvent
from agentkit.cli.render import event_to_dict
from agentkit.containers.streamjson import (
    ApiRetry,
    AssistantText,
    AssistantToolUse,
    Event,
    InvalidLine,
    ResultEvent,
    SessionNotice,
    SystemEvent,
    SystemInit,
    ToolResultEvent,
    UnknownEvent,
    render_event,
)
from agentkit.redact import Redactor

__all__ = ["MAX_FIELD_CHARS", "agent_event", "clip", "run_event"]

#: the longest text field of one streamed event (tool outputs can be megabytes)
MAX_FIELD_CHARS = 8000


def clip(text: str | None, limit: int = MAX_FIELD_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters with a marker saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _bounded(value: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    """A tool input as JSON, or a clipped string when it is large."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return clip(repr(value), limit)
    return value if len(text) <= limit else clip(text, limit)


def agent_event(event: Event, redactor: Redactor) -> dict[str, Any]:
    """A container agent's event as JSON: ``type`` plus its fields, and ``text`` to show."""
    out: dict[str, Any]
    match event:
        case SystemInit():
            out = {"type": "init", "session_id": event.session_id, "model": event.model}
        case ApiRetry():
            out = {
                "type": "api_retry",
                "attempt": event.attempt,
                "max_retries": event.max_retries,
                "error_status": event.error_status,
                "error": clip(event.error, 500),
            }
        case SystemEvent():
            out = {"type": "system", "subtype": event.subtype}
        case AssistantText():
            out = {
                "type": "thinking" if event.thinking else "text",
                "content": clip(event.text),
                "message_id": event.message_id,
            }
        case AssistantToolUse():
            out = {
                "type": "tool_use",
                "tool_use_id": event.id,
                "name": event.name,
                "input": _bounded(event.input),
                "message_id": event.message_id,
            }
        case ToolResultEvent():
            out = {
                "type": "tool_result",
                "tool_use_id": event.tool_use_id,
                "content": clip(event.content),
                "is_error": event.is_error,
            }
        case ResultEvent():
            out = {
                "type": "result",
                "subtype": event.subtype,
                "is_error": event.is_error,
                "result": clip(event.result),
                "total_cost_usd": event.total_cost_usd,
                "num_turns": event.num_turns,
                "session_id": event.session_id,
                "duration_ms": event.duration_ms,
            }
        case UnknownEvent():
            out = {"type": "unknown", "event_type": event.type}
        case InvalidLine():
            out = {"type": "output", "content": clip(event.text, 2000)}
        case SessionNotice():
            out = {
                "type": "session",
                "kind": event.kind,
                "phase": event.phase,
                "waiting_for": event.waiting_for,
                "stalled": event.stalled,
                "approval": _bounded(event.approval),
            }
    out["text"] = render_event(event)
    # the service redacts lines before it keeps them; this is a second belt for the HTTP edge
    return redactor.redact_data(out)  # type: ignore[no-any-return]


def run_event(event: AgentEvent, redactor: Redactor) -> dict[str, Any]:
    """A ``ToolBasedAgent`` event as JSON (the shape ``agentkit run --json`` prints)."""
    out = event_to_dict(event)
    if isinstance(event, ErrorEvent):
        out["message"] = event.message
    for key in ("content", "text", "prompt", "message"):
        if isinstance(out.get(key), str):
            out[key] = clip(out[key])
    return redactor.redact_data(out)  # type: ignore[no-any-return]
