"""Claude Code's ``--output-format stream-json`` events: parse, summarize, render for readers.

One output line is one JSON object with a ``type``: ``system`` (``subtype`` ``init``,
``api_retry``, ...), ``assistant`` (a message whose content blocks are ``text``, ``tool_use``,
``thinking``), ``user`` (``tool_result`` blocks), ``result`` (the final line). The parser is
tolerant: unknown fields are ignored (and kept in ``raw``), unknown types become
:class:`UnknownEvent`, a line that is not JSON becomes :class:`InvalidLine`; key order never
matters. One line can yield several events (one per content block).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiRetry",
    "AssistantText",
    "AssistantToolUse",
    "Event",
    "InvalidLine",
    "ResultEvent",
    "RunSummary",
    "SessionNotice",
    "SystemEvent",
    "SystemInit",
    "ToolResultEvent",
    "UnknownEvent",
    "parse_line",
    "parse_lines",
    "render_event",
    "render_events",
]


@dataclass(frozen=True, slots=True)
class SystemInit:
    session_id: str | None
    model: str | None
    cwd: str | None
    tools: list[str]
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ApiRetry:
    attempt: int | None
    max_retries: int | None
    error_status: int | None
    error: str | None
    retry_delay_ms: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """Any other ``system`` event (``subtype`` kept as sent)."""

    subtype: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AssistantText:
    text: str
    thinking: bool = False
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class AssistantToolUse:
    id: str | None
    name: str
    input: Any
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    tool_use_id: str | None
    content: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class ResultEvent:
    subtype: str | None
    is_error: bool
    result: str | None
    total_cost_usd: float | None
    num_turns: int | None
    session_id: str | None
    duration_ms: float | None
    usage: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    type: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class InvalidLine:
    text: str


@dataclass(frozen=True, slots=True)
class SessionNotice:
    """Not printed by Claude Code: agentkit's word that a run's phase changed (pushed to
    watchers). ``kind``: ``running``, ``waiting``, ``needs_approval``, ``approved``,
    ``denied``, ``stalled``, ``resumed``."""

    kind: str
    run_id: str
    phase: str
    waiting_for: str | None = None
    stalled: bool = False
    approval: dict[str, Any] | None = None


Event = (
    SystemInit
    | ApiRetry
    | SystemEvent
    | AssistantText
    | AssistantToolUse
    | ToolResultEvent
    | ResultEvent
    | UnknownEvent
    | InvalidLine
    | SessionNotice
)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _content_text(content: Any) -> str:
    """A tool result's content: a string, or a list of blocks (text kept, others named)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                else:
                    parts.append(f"[{block.get('type', 'block')}]")
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    if content is None:
        return ""
    return json.dumps(content, ensure_ascii=False)


def _blocks(obj: dict[str, Any]) -> list[Any]:
    message = obj.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _parse_obj(obj: dict[str, Any]) -> list[Event]:
    kind = _str(obj.get("type"))
    if kind == "system":
        subtype = _str(obj.get("subtype"))
        if subtype == "init":
            tools = obj.get("tools")
            return [
                SystemInit(
                    session_id=_str(obj.get("session_id")),
                    model=_str(obj.get("model")),
                    cwd=_str(obj.get("cwd")),
                    tools=[t for t in tools if isinstance(t, str)]
                    if isinstance(tools, list)
                    else [],
                    raw=obj,
                )
            ]
        if subtype == "api_retry":
            error = obj.get("error")
            return [
                ApiRetry(
                    attempt=_int(obj.get("attempt")),
                    max_retries=_int(obj.get("max_retries")),
                    error_status=_int(obj.get("error_status")),
                    error=error
                    if isinstance(error, str)
                    else (json.dumps(error) if error else None),
                    retry_delay_ms=_num(obj.get("retry_delay_ms")),
                    raw=obj,
                )
            ]
        return [SystemEvent(subtype=subtype, raw=obj)]
    if kind == "assistant":
        message = obj.get("message")
        mid = _str(message.get("id")) if isinstance(message, dict) else None
        out: list[Event] = []
        for block in _blocks(obj):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text" and isinstance(block.get("text"), str):
                out.append(AssistantText(block["text"], message_id=mid))
            elif btype == "thinking" and isinstance(block.get("thinking"), str):
                out.append(AssistantText(block["thinking"], thinking=True, message_id=mid))
            elif btype in ("tool_use", "server_tool_use"):
                out.append(
                    AssistantToolUse(
                        id=_str(block.get("id")),
                        name=_str(block.get("name")) or "?",
                        input=block.get("input"),
                        message_id=mid,
                    )
                )
        return out or [UnknownEvent(type=kind, raw=obj)]
    if kind == "user":
        results: list[Event] = []
        for block in _blocks(obj):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                results.append(
                    ToolResultEvent(
                        tool_use_id=_str(block.get("tool_use_id")),
                        content=_content_text(block.get("content")),
                        is_error=block.get("is_error") is True,
                    )
                )
        return results or [UnknownEvent(type=kind, raw=obj)]
    if kind == "result":
        usage = obj.get("usage")
        result = obj.get("result")
        return [
            ResultEvent(
                subtype=_str(obj.get("subtype")),
                is_error=obj.get("is_error") is True,
                result=result if isinstance(result, str) else None,
                total_cost_usd=_num(obj.get("total_cost_usd")),
                num_turns=_int(obj.get("num_turns")),
                session_id=_str(obj.get("session_id")),
                duration_ms=_num(obj.get("duration_ms")),
                usage=usage if isinstance(usage, dict) else None,
                raw=obj,
            )
        ]
    return [UnknownEvent(type=kind, raw=obj)]


def parse_line(line: str | bytes) -> list[Event]:
    """The events in one output line (empty for a blank line)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return []
    try:
        obj = json.loads(text)
    except ValueError:
        return [InvalidLine(text)]
    if not isinstance(obj, dict):
        return [InvalidLine(text)]
    return _parse_obj(obj)


def parse_lines(lines: Iterable[str | bytes]) -> list[Event]:
    out: list[Event] = []
    for line in lines:
        out.extend(parse_line(line))
    return out


@dataclass(slots=True)
class RunSummary:
    """What status needs, folded incrementally from events (cheap to keep per running agent)."""

    session_id: str | None = None
    model: str | None = None
    turns: int = 0
    tool_calls: int = 0
    last_text: str | None = None
    result: ResultEvent | None = None
    retries: int = 0
    last_error: str | None = None
    _messages: set[str] = field(default_factory=set, repr=False)

    def add(self, event: Event) -> None:
        if isinstance(event, SystemInit):
            self.session_id = event.session_id or self.session_id
            self.model = event.model or self.model
        elif isinstance(event, AssistantText) and not event.thinking:
            self.last_text = event.text
        elif isinstance(event, AssistantToolUse):
            self.tool_calls += 1
        elif isinstance(event, ApiRetry):
            self.retries += 1
            self.last_error = event.error or (
                f"HTTP {event.error_status}" if event.error_status else None
            )
        elif isinstance(event, ResultEvent):
            self.result = event
            self.session_id = event.session_id or self.session_id
            if event.num_turns is not None:
                self.turns = event.num_turns
            if event.is_error and event.result:
                self.last_error = event.result
        # while running, turns = distinct assistant messages seen (the result has the truth)
        if (
            isinstance(event, AssistantText | AssistantToolUse)
            and event.message_id
            and event.message_id not in self._messages
        ):
            self._messages.add(event.message_id)
            if self.result is None:
                self.turns = len(self._messages)

    def add_line(self, line: str | bytes) -> None:
        for event in parse_line(line):
            self.add(event)

    @property
    def cost_usd(self) -> float | None:
        return self.result.total_cost_usd if self.result else None

    def to_dict(self) -> dict[str, Any]:
        res = self.result
        return {
            "session_id": self.session_id,
            "model": self.model,
            "turns": res.num_turns if res and res.num_turns is not None else self.turns,
            "tool_calls": self.tool_calls,
            "cost_usd": self.cost_usd,
            "last_text": self.last_text,
            "result_text": res.result if res else None,
            "result_subtype": res.subtype if res else None,
            "is_error": res.is_error if res else None,
            "duration_ms": res.duration_ms if res else None,
            "api_retries": self.retries,
            "last_error": self.last_error,
        }


# --- rendering for readers --------------------------------------------------------------------


def _short(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def _one_line(text: str, limit: int) -> str:
    return _short(" ".join(text.split()), limit)


def _tool_input(name: str, value: Any, limit: int) -> str:
    if isinstance(value, dict):
        # the most telling field first for the common tools
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            if isinstance(value.get(key), str):
                return _one_line(f"{key}={value[key]}", limit)
        try:
            return _one_line(json.dumps(value, ensure_ascii=False, sort_keys=True), limit)
        except (TypeError, ValueError):
            return _one_line(repr(value), limit)
    if value is None:
        return ""
    return _one_line(str(value), limit)


def render_event(event: Event, *, text_limit: int = 600, input_limit: int = 160) -> str | None:
    """One event as a short line (or a few) for a human or a model; ``None`` to skip it."""
    if isinstance(event, SystemInit):
        model = f" model {event.model}" if event.model else ""
        return f"[start] session {event.session_id or '?'}{model}"
    if isinstance(event, ApiRetry):
        status = f"HTTP {event.error_status}" if event.error_status else (event.error or "error")
        attempt = f" (attempt {event.attempt}/{event.max_retries})" if event.attempt else ""
        return f"[api retry] {_one_line(status, 120)}{attempt}"
    if isinstance(event, SystemEvent):
        return None
    if isinstance(event, AssistantText):
        if event.thinking or not event.text.strip():
            return None
        return f"agent: {_short(event.text, text_limit)}"
    if isinstance(event, AssistantToolUse):
        return f"tool {event.name}: {_tool_input(event.name, event.input, input_limit)}".rstrip()
    if isinstance(event, ToolResultEvent):
        head = "tool error" if event.is_error else "tool result"
        body = _one_line(event.content, input_limit)
        return f"  {head}: {body}" if body else f"  {head}: (empty)"
    if isinstance(event, ResultEvent):
        state = "error" if event.is_error else (event.subtype or "done")
        bits = [state]
        if event.num_turns is not None:
            bits.append(f"{event.num_turns} turns")
        if event.total_cost_usd is not None:
            bits.append(f"${event.total_cost_usd:.4f}")
        text = f": {_short(event.result, text_limit)}" if event.result else ""
        return f"[finished] {', '.join(bits)}{text}"
    if isinstance(event, InvalidLine):
        return f"[output] {_one_line(event.text, text_limit)}"
    if isinstance(event, SessionNotice):
        if event.approval:
            tool = event.approval.get("tool", "?")
            shown = _tool_input(str(tool), event.approval.get("input"), input_limit)
            return f"[{event.kind}] {tool}: {shown} (request {event.approval.get('id')})"
        waiting = f" for {event.waiting_for}" if event.waiting_for else ""
        return f"[{event.kind}] {event.phase}{waiting}"
    if isinstance(event, UnknownEvent) and event.type == "control_request":
        return None
    return None


def render_events(
    events: Iterable[Event], *, max_bytes: int = 8000, lines: int | None = None
) -> str:
    """The last events rendered for a reader, newest last, within ``max_bytes`` UTF-8 bytes.

    When the budget is exceeded the oldest lines are dropped and a marker says how many.
    """
    rendered = [r for r in (render_event(e) for e in events) if r]
    if lines is not None:
        rendered = rendered[-lines:] if lines > 0 else []
    kept: list[str] = []
    used = 0
    for line in reversed(rendered):
        size = len(line.encode("utf-8")) + 1
        if used + size > max_bytes and kept:
            break
        if used + size > max_bytes:
            line = _short(line, max(max_bytes // 2, 40))
            size = len(line.encode("utf-8")) + 1
        kept.append(line)
        used += size
    kept.reverse()
    dropped = len(rendered) - len(kept)
    if dropped:
        kept.insert(0, f"[... {dropped} earlier lines omitted]")
    return "\n".join(kept)
