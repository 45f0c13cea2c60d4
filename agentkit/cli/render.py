"""Render agent events and tool results to the terminal (rich) or as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from agentkit.agent.events import (
    AgentEvent,
    ErrorEvent,
    ModelText,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
)


def short_json(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_to_dict(event: AgentEvent) -> dict[str, Any]:
    """A JSON-serialisable view of an event, for ``--json`` output."""
    match event:
        case RunStarted(prompt=prompt):
            return {"type": "run_started", "prompt": prompt}
        case TextDelta(text=text, turn=turn):
            return {"type": "text_delta", "text": text, "turn": turn}
        case ModelText(text=text, turn=turn):
            return {"type": "text", "text": text, "turn": turn}
        case ToolCallEvent(call=call, turn=turn):
            return {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "input": call.input,
                "turn": turn,
            }
        case ToolResultEvent(call=call, result=result, duration=duration, turn=turn):
            return {
                "type": "tool_result",
                "id": call.id,
                "name": call.name,
                "is_error": result.is_error,
                "content": result.content,
                "duration": round(duration, 4),
                "turn": turn,
            }
        case TurnFinished(turn=turn, stop_reason=stop_reason, usage=usage):
            return {
                "type": "turn_finished",
                "turn": turn,
                "stop_reason": stop_reason,
                "usage": asdict(usage),
            }
        case RunFinished(result=result):
            return {
                "type": "run_finished",
                "text": result.text,
                "turns": result.turns,
                "stop_reason": result.stop_reason,
                "max_turns_reached": result.max_turns_reached,
                "usage": asdict(result.usage),
            }
        case ErrorEvent(error=error, message=message):
            return {"type": "error", "error": type(error).__name__, "message": message}
    return {"type": type(event).__name__}


class EventRenderer:
    """Shows a run as it happens: streamed text, tool calls with a spinner, results, totals."""

    def __init__(self, console: Console | None = None, *, as_json: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.as_json = as_json
        self._status: Status | None = None
        self._pending: dict[str, float] = {}
        self._streamed_text = False

    def __call__(self, event: AgentEvent) -> None:
        if self.as_json:
            if not isinstance(event, TextDelta):
                sys.stdout.write(json.dumps(event_to_dict(event), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            return
        match event:
            case TextDelta(text=text):
                self._stop_status()
                self.console.print(text, end="", markup=False, soft_wrap=True)
                self._streamed_text = True
            case ModelText():
                if self._streamed_text:
                    self.console.print()
                    self._streamed_text = False
            case ToolCallEvent(call=call):
                self._pending[call.id] = time.monotonic()
                self.console.print(
                    f"[cyan]→ {call.name}[/] [dim]{short_json(call.input)}[/]", soft_wrap=True
                )
                self._start_status()
            case ToolResultEvent(call=call, result=result, duration=duration):
                self._pending.pop(call.id, None)
                first = escape((result.content.strip().splitlines() or [""])[0][:200])
                style = "red" if result.is_error else "green"
                mark = "✗" if result.is_error else "✓"
                self.console.print(
                    f"[{style}]{mark} {call.name}[/] [dim]({duration:.1f}s)[/] {first}",
                    soft_wrap=True,
                )
                if self._pending:
                    self._start_status()
                else:
                    self._stop_status()
            case RunFinished(result=result):
                self._stop_status()
                u = result.usage
                note = " [yellow](max turns reached)[/]" if result.max_turns_reached else ""
                self.console.print(
                    f"[dim]— {result.turns} turn(s), {u.total_input_tokens} in "
                    f"({u.cache_read_input_tokens} cached) / {u.output_tokens} out tokens, "
                    f"${u.cost_usd:.4f}[/]{note}"
                )
            case ErrorEvent(message=message):
                self._stop_status()
                self.console.print(f"[red]error:[/] {escape(message)}")
            case _:
                pass

    def _start_status(self) -> None:
        names = ", ".join(sorted(self._pending)) if len(self._pending) > 1 else ""
        label = f"running {len(self._pending)} tool(s) {names}".strip()
        if self._status is None:
            self._status = self.console.status(label, spinner="dots")
            self._status.start()
        else:
            self._status.update(label)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop_status()
