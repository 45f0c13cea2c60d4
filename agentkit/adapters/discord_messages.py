"""Discord webhook messages for agent events: what is reported, and how it fits Discord's limits.

:class:`EventRenderer` turns agent events and tool results into webhook payloads: run start, tool
use (name and a short input), agent start (task and container id, from ``spawn_claude_agent``),
agent completion (result, cost, duration; reported once per container), errors, run completion.
:func:`embed_messages` and :func:`text_messages` split long texts within Discord's content and
embed limits. Delivery (queueing, rate limits, drop counting) is
:class:`agentkit.adapters.notify.DiscordWebhookNotifier`'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from agentkit.adapters._text import (
    DISCORD_CONTENT_LIMIT,
    EMBED_DESCRIPTION_LIMIT,
    EMBED_FIELD_NAME_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_MAX_FIELDS,
    EMBED_TITLE_LIMIT,
    EMBED_TOTAL_LIMIT,
    clip,
    field_of,
    find_container_id,
    short_input,
    split_text,
)
from agentkit.agent.events import (
    AgentEvent,
    ErrorEvent,
    RunFinished,
    RunStarted,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
)
from agentkit.redact import Redactor
from agentkit.tools.base import ToolResult

Payload = dict[str, Any]

BLUE = 0x5865F2
GREEN = 0x57F287
YELLOW = 0xFEE75C
RED = 0xED4245
GREY = 0x99AAB5

#: Tools whose results announce an agent's end (when they carry a result, status or cost).
FINISH_TOOLS = frozenset({"wait_for_claude_agent", "get_claude_status", "stop_claude_agent"})
_RUNNING = frozenset({"running", "created", "starting", "restarting", "pending"})
_FAILED = frozenset({"failed", "timed_out", "oom_killed", "error"})


def embed_length(embed: dict[str, Any]) -> int:
    """Characters Discord counts against the 6000 total of one embed."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    for item in embed.get("fields", []):
        total += len(item.get("name", "")) + len(item.get("value", ""))
    return total


def embed_messages(
    title: str,
    description: str = "",
    *,
    color: int = BLUE,
    fields: Iterable[tuple[str, str]] = (),
) -> list[Payload]:
    """Payloads (one embed each) for a titled message, split within Discord's embed limits.

    Fields go on the first embed; a description too long for one embed continues in further
    messages titled ``(continued)``.
    """
    title = clip(title, EMBED_TITLE_LIMIT)
    embed_fields: list[dict[str, Any]] = [
        {
            "name": clip(name, EMBED_FIELD_NAME_LIMIT),
            "value": clip(value or "-", EMBED_FIELD_VALUE_LIMIT),
            "inline": True,
        }
        for name, value in list(fields)[:EMBED_MAX_FIELDS]
    ]
    fields_size: int = sum(len(f["name"]) + len(f["value"]) for f in embed_fields)
    while embed_fields and len(title) + fields_size > EMBED_TOTAL_LIMIT - 500:
        dropped = embed_fields.pop()
        fields_size -= len(dropped["name"]) + len(dropped["value"])
    first_budget = min(EMBED_DESCRIPTION_LIMIT, EMBED_TOTAL_LIMIT - len(title) - fields_size)
    payloads: list[Payload] = []
    first = split_text(description, max(first_budget, 1))[0] if description else ""
    rest = description[len(first) :]
    if rest[:1] in ("\n", " "):
        rest = rest[1:]
    embed: dict[str, Any] = {"title": title, "color": color}
    if first:
        embed["description"] = first
    if embed_fields:
        embed["fields"] = embed_fields
    payloads.append({"embeds": [embed]})
    if rest:
        cont_title = clip(f"{title} (continued)", EMBED_TITLE_LIMIT)
        for chunk in split_text(rest, EMBED_DESCRIPTION_LIMIT):
            payloads.append(
                {"embeds": [{"title": cont_title, "description": chunk, "color": color}]}
            )
    return payloads


def text_messages(text: str) -> list[Payload]:
    """Plain-content payloads, split at 2000 characters."""
    return [{"content": chunk} for chunk in split_text(text, DISCORD_CONTENT_LIMIT) if chunk]


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class EventRenderer:
    """Renders agent events and tool results as webhook payloads, redacting their texts.

    Keeps what a run needs to be reported once: when it started (for its duration) and which
    agents' ends were already announced (their status may be polled again).

    Args:
        redactor: redacts secrets from every text before it is clipped or split.
        tool_use: render a line for every tool call.
    """

    def __init__(self, redactor: Redactor, *, tool_use: bool = True) -> None:
        self.redactor = redactor
        self.tool_use = tool_use
        self._run_started: float | None = None
        self._announced: set[str] = set()

    def render(self, event: AgentEvent) -> list[Payload]:
        """The payloads an event produces; empty for events not reported.

        Texts are redacted *before* they are clipped or split (a secret cut in two would no
        longer match); the notifier redacts whole payloads once more when it queues them.
        """
        redact = self.redactor.redact
        if isinstance(event, RunStarted):
            self._run_started = time.monotonic()
            return embed_messages("▶️ Run started", redact(event.prompt), color=BLUE)
        if isinstance(event, ToolCallEvent):
            return self.tool_use_messages(self.clean_call(event.call)) if self.tool_use else []
        if isinstance(event, ToolResultEvent):
            call, result = self.clean_call(event.call), self.clean_result(event.result)
            return self.tool_result_messages(call, result, event.duration)
        if isinstance(event, RunFinished):
            return self._run_finished(event)
        if isinstance(event, ErrorEvent):
            return embed_messages("❌ Run failed", redact(event.message), color=RED)
        return []

    def clean_call(self, call: ToolCall) -> ToolCall:
        """The call with its input redacted."""
        return ToolCall(call.id, call.name, self.redactor.redact_data(call.input), call.index)

    def clean_result(self, result: ToolResult) -> ToolResult:
        """The result with its content and data redacted."""
        return ToolResult(
            self.redactor.redact(result.content),
            result.is_error,
            self.redactor.redact_data(result.data),
        )

    def tool_use_messages(self, call: ToolCall) -> list[Payload]:
        """One line naming the tool and a short input (regardless of ``tool_use``)."""
        args = short_input(call.input, 300)
        line = f"🔧 `{call.name}`" + (f" {args}" if args else "")
        return text_messages(clip(line, DISCORD_CONTENT_LIMIT))

    def tool_result_messages(
        self, call: ToolCall, result: ToolResult, duration: float | None
    ) -> list[Payload]:
        """Failures, agent starts and agent ends; other results give none (pass them cleaned)."""
        if result.is_error:
            fields = [("Input", short_input(call.input, 500) or "-")]
            return embed_messages(
                f"⚠️ {call.name} failed", result.content, color=YELLOW, fields=fields
            )
        if call.name == "spawn_claude_agent":
            container = find_container_id(result.data, result.content) or "unknown"
            fields = [("Container", f"`{container}`")]
            workspace = field_of(result.data, "workspace") or call.input.get("workspace_path")
            if workspace:
                fields.append(("Workspace", str(workspace)))
            task = str(call.input.get("task") or field_of(result.data, "task") or "")
            return embed_messages("🚀 Agent started", task, color=BLUE, fields=fields)
        if call.name in FINISH_TOOLS:
            return self._agent_finished(call, result)
        return []

    def agent_ended(self, record: Mapping[str, Any]) -> list[Payload]:
        """An agent's end from its run record (a run registry's ``on_finished``): reported
        like a wait/status result, and only once per agent whichever comes first."""
        data = dict(record)
        started, finished = data.get("started_at") or data.get("created"), data.get("finished_at")
        if isinstance(started, int | float) and isinstance(finished, int | float):
            data["elapsed_s"] = max(finished - started, 0.0)
        call = ToolCall("", "wait_for_claude_agent", {"container_id": str(data.get("id"))})
        result = self.clean_result(ToolResult("", False, data))
        return self._agent_finished(call, result)

    def _agent_finished(self, call: ToolCall, result: ToolResult) -> list[Payload]:
        data = result.data
        status = field_of(data, "state", "status")
        state = str(status).lower() if status is not None else None
        if state in _RUNNING:
            return []
        cost = field_of(data, "cost_usd", "total_cost_usd", "cost")
        text = field_of(data, "result_text", "result")
        error = field_of(data, "error")
        if cost is None and text is None and state is None:
            return []
        container = find_container_id(data, result.content) or call.input.get("container_id") or "?"
        if container in self._announced:  # status polled again: already reported
            return []
        self._announced.add(container)
        fields = [("Container", f"`{container}`")]
        if state is not None:
            fields.append(("State", state))
        if cost is not None:
            with contextlib.suppress(TypeError, ValueError):
                fields.append(("Cost", f"${float(cost):.4f}"))
        seconds = field_of(data, "elapsed_s")
        if seconds is None and field_of(data, "duration_ms") is not None:
            seconds = float(field_of(data, "duration_ms")) / 1000
        if seconds is not None:
            with contextlib.suppress(TypeError, ValueError):
                fields.append(("Duration", _format_duration(float(seconds))))
        turns = field_of(data, "turns", "num_turns")
        if turns is not None:
            fields.append(("Turns", str(turns)))
        if state == "stopped":
            title, color = "⏹️ Agent stopped", GREY
        elif state == "budget_exceeded":
            title, color = "💸 Agent stopped: budget exceeded", YELLOW
        elif state in _FAILED or bool(field_of(data, "is_error")):
            title, color = "❌ Agent failed", RED
        else:
            title, color = "✅ Agent finished", GREEN
        body = str(text) if text else (str(error) if error else result.content)
        return embed_messages(title, body, color=color, fields=fields)

    def _run_finished(self, event: RunFinished) -> list[Payload]:
        run = event.result
        fields = [("Turns", str(run.turns))]
        if self._run_started is not None:
            fields.append(("Duration", _format_duration(time.monotonic() - self._run_started)))
            self._run_started = None
        fields.append(
            ("Tokens", f"{run.usage.total_input_tokens} in / {run.usage.output_tokens} out")
        )
        cost = getattr(run, "cost_usd", None)
        if isinstance(cost, int | float):
            fields.append(("Cost", f"${cost:.4f}"))
        title = "⏹️ Run stopped (max turns)" if run.max_turns_reached else "✅ Run finished"
        text = self.redactor.redact(run.text) if run.text else "(no text)"
        return embed_messages(title, text, color=GREEN, fields=fields)
