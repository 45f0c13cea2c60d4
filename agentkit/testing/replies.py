"""Reply builders for :class:`~agentkit.testing.ScriptedAnthropicServer`.

A :class:`Reply` is one scripted answer of the fake Messages API: content blocks (text,
``tool_use``, or any raw block), a stop reason, token usage, optional latency, or an HTTP error.
Build them with the module functions and combine with ``+``::

    from agentkit.testing import reply

    reply.text("Let me look.") + reply.tool_use("get_weather", {"city": "Oslo"})
    reply.text("Done.", usage=reply.usage(input_tokens=10, cache_read_input_tokens=900))
    reply.error(529)                      # overloaded; the SDK retries it
    reply.text("slow").delayed(2.0)       # answer after two seconds
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ERROR_TYPES",
    "Reply",
    "block",
    "delay",
    "error",
    "from_json",
    "message",
    "new_id",
    "pause_turn",
    "refusal",
    "stream_error",
    "text",
    "tool_use",
    "usage",
]

#: Anthropic error ``type`` for each HTTP status the API uses.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id in the API's style, e.g. ``toolu_01a2b3...``."""
    return f"{prefix}_01{secrets.token_hex(8)}{next(_counter):06d}"


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> dict[str, int]:
    """A ``usage`` object; pass it to any builder's ``usage=``."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. Immutable; the ``with_*`` / ``delayed`` methods return copies.

    Attributes:
        content: Anthropic content blocks (``{"type": "text", ...}``, ``{"type": "tool_use"}``).
        stop_reason: ``None`` means ``tool_use`` if there is a tool_use block, else ``end_turn``.
        usage: token usage reported for this answer (see :func:`usage`).
        delay: seconds to wait before answering (a slow model, a timeout test).
        status: HTTP status; anything but 200 answers with an Anthropic error body.
        error_message: message of the error body when ``status != 200``.
        headers: extra response headers (``retry-after``, ...).
        chunk_size: text and tool input are streamed in pieces of this many characters.
        chunk_delay: seconds between streamed events (watch deltas arrive live).
        stream_error: an error ``type`` sent as an SSE ``error`` event after the content
            (instead of ``message_delta``/``message_stop``); JSON requests get the HTTP error.
        model: the ``model`` reported; ``None`` echoes the request's model.
    """

    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str | None = None
    usage: Mapping[str, int] = field(default_factory=usage)
    delay: float = 0.0
    status: int = 200
    error_message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    chunk_size: int = 24
    model: str | None = None
    stop_sequence: str | None = None
    chunk_delay: float = 0.0
    stream_error: str | None = None

    # --- combination ----------------------------------------------------------------------

    def __add__(self, other: Reply) -> Reply:
        """Concatenate content; the right operand's explicit settings win."""
        if not isinstance(other, Reply):
            return NotImplemented
        if self.status != 200 or other.status != 200:
            raise ValueError("error replies cannot be combined with content")
        return dataclasses.replace(
            self,
            content=self.content + other.content,
            stop_reason=other.stop_reason or self.stop_reason,
            delay=max(self.delay, other.delay),
        )

    def with_stop_reason(self, stop_reason: str | None) -> Reply:
        return dataclasses.replace(self, stop_reason=stop_reason)

    def with_usage(self, **tokens: int) -> Reply:
        """Copy with usage fields replaced, e.g. ``with_usage(cache_read_input_tokens=900)``."""
        return dataclasses.replace(self, usage={**self.usage, **tokens})

    def delayed(self, seconds: float) -> Reply:
        """Copy that answers after ``seconds``."""
        return dataclasses.replace(self, delay=seconds)

    def streamed(self, chunk_size: int = 24, chunk_delay: float = 0.0) -> Reply:
        """Copy streamed in ``chunk_size`` pieces with ``chunk_delay`` seconds between events."""
        return dataclasses.replace(self, chunk_size=chunk_size, chunk_delay=chunk_delay)

    # --- rendering ------------------------------------------------------------------------

    @property
    def is_error(self) -> bool:
        return self.status != 200

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        if any(b.get("type") == "tool_use" for b in self.content):
            return "tool_use"
        return "end_turn"

    def message(self, model: str, message_id: str | None = None) -> dict[str, Any]:
        """The complete ``Message`` object (the non-streaming response body)."""
        return {
            "id": message_id or new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model or model,
            "content": [dict(b) for b in self.content],
            "stop_reason": self.effective_stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": dict(self.usage),
        }

    def error_body(self, request_id: str) -> dict[str, Any]:
        kind = ERROR_TYPES.get(self.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": self.error_message or f"scripted {kind}"},
            "request_id": request_id,
        }

    def sse_events(self, model: str, message_id: str | None = None) -> list[dict[str, Any]]:
        """The streaming events, in the API's exact order (``ping`` after the first block start)."""
        msg = self.message(model, message_id)
        start_usage = {**msg["usage"], "output_tokens": min(1, msg["usage"]["output_tokens"])}
        events: list[dict[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    **msg,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            }
        ]
        for index, blk in enumerate(msg["content"]):
            events.extend(_block_events(index, blk, self.chunk_size))
            if index == 0:
                events.insert(2, {"type": "ping"})
        if self.stream_error:
            if events[-1]["type"] == "content_block_stop":
                events.pop()  # the error interrupts the block
            events.append(
                {
                    "type": "error",
                    "error": {
                        "type": self.stream_error,
                        "message": self.error_message or f"scripted {self.stream_error}",
                    },
                }
            )
            return events
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]},
                "usage": dict(msg["usage"]),
            }
        )
        events.append({"type": "message_stop"})
        return events


def _chunks(value: str, size: int) -> list[str]:
    size = max(size, 1)
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def _block_events(index: int, blk: dict[str, Any], chunk_size: int) -> list[dict[str, Any]]:
    kind = blk.get("type")
    events: list[dict[str, Any]] = []
    if kind == "text":
        events.append(
            {"type": "content_block_start", "index": index, "content_block": {**blk, "text": ""}}
        )
        for piece in _chunks(blk.get("text", ""), chunk_size):
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
    elif kind in ("tool_use", "server_tool_use"):
        events.append(
            {"type": "content_block_start", "index": index, "content_block": {**blk, "input": {}}}
        )
        encoded = json.dumps(blk.get("input", {}), ensure_ascii=False)
        for piece in _chunks(encoded, chunk_size):
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
            )
    elif kind == "thinking":
        events.append(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        )
        events.append(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "thinking_delta", "thinking": blk.get("thinking", "")},
            }
        )
        events.append(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "signature_delta", "signature": blk.get("signature", "sig")},
            }
        )
    else:  # any other block arrives whole
        events.append({"type": "content_block_start", "index": index, "content_block": blk})
    events.append({"type": "content_block_stop", "index": index})
    return events


# --- builders ---------------------------------------------------------------------------------


def text(
    value: str,
    *,
    stop_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    delay: float = 0.0,
) -> Reply:
    """A reply with one text block (``end_turn`` unless combined with a tool_use)."""
    return _reply(({"type": "text", "text": value},), stop_reason, usage, delay)


def tool_use(
    name: str,
    input: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    stop_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    delay: float = 0.0,
) -> Reply:
    """A reply with one ``tool_use`` block (stop reason ``tool_use``)."""
    blk = {
        "type": "tool_use",
        "id": id or new_id("toolu"),
        "name": name,
        "input": dict(input or {}),
    }
    return _reply((blk,), stop_reason, usage, delay)


def block(raw: Mapping[str, Any]) -> Reply:
    """A reply with one raw content block, sent as given (thinking, server_tool_use, ...)."""
    return Reply(content=(dict(raw),))


def message(
    *parts: Reply,
    stop_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    delay: float = 0.0,
) -> Reply:
    """Combine the content of ``parts`` into one reply with the given settings."""
    content: tuple[dict[str, Any], ...] = ()
    for part in parts:
        content += part.content
    return _reply(content, stop_reason, usage, delay)


def refusal(value: str = "") -> Reply:
    """A reply the model stopped with ``stop_reason="refusal"``."""
    content = ({"type": "text", "text": value},) if value else ()
    return Reply(content=content, stop_reason="refusal")


def pause_turn(value: str = "") -> Reply:
    """A ``pause_turn`` reply: the client should resend to let the model continue its turn."""
    content = ({"type": "text", "text": value},) if value else ()
    return Reply(content=content, stop_reason="pause_turn")


def error(
    status: int = 529,
    message: str | None = None,
    *,
    retry_after: float | None = 0.001,
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    """An HTTP error in the Anthropic error format.

    ``retry_after`` (seconds) is sent as ``retry-after-ms`` and ``retry-after`` headers, which
    the SDKs obey, so scripted retries are fast. ``None`` sends neither (SDK backoff applies).
    """
    if status == 200:
        raise ValueError("error() needs a non-200 status")
    extra = dict(headers or {})
    if retry_after is not None:
        extra.setdefault("retry-after-ms", str(max(1, round(retry_after * 1000))))
        extra.setdefault("retry-after", str(max(1, round(retry_after))))
    return Reply(status=status, error_message=message, headers=extra, delay=delay)


def stream_error(
    kind: str = "overloaded_error", message: str | None = None, *, partial_text: str = ""
) -> Reply:
    """A streamed answer that fails midway with an SSE ``error`` event (after ``partial_text``).

    The real API does this when it becomes overloaded during a response. A non-streaming
    request gets the matching HTTP error instead.
    """
    content = ({"type": "text", "text": partial_text},) if partial_text else ()
    return Reply(content=content, stream_error=kind, error_message=message)


def delay(seconds: float, then: Reply | None = None) -> Reply:
    """``then`` (default: a short text) answered after ``seconds``."""
    return (then or text("ok")).delayed(seconds)


def _reply(
    content: tuple[dict[str, Any], ...],
    stop_reason: str | None,
    usage_: Mapping[str, int] | None,
    delay_: float,
) -> Reply:
    return Reply(
        content=content,
        stop_reason=stop_reason,
        usage=dict(usage_) if usage_ is not None else usage(),
        delay=delay_,
    )


def from_json(data: Mapping[str, Any]) -> Reply:
    """A reply from its JSON form (used by ``python -m agentkit.testing``).

    Forms: ``{"text": "..."}``, ``{"tool_use": {"name": ..., "input": {...}, "id": ...}}``,
    ``{"content": [<form or raw block>, ...]}``, ``{"error": 529, "message": "..."}``; each may
    add ``stop_reason``, ``usage`` (partial is fine) and ``delay`` (seconds).
    """
    if "error" in data:
        return error(int(data["error"]), data.get("message"), delay=float(data.get("delay", 0)))
    if "text" in data:
        base = text(str(data["text"]))
    elif "tool_use" in data:
        spec = data["tool_use"]
        base = tool_use(str(spec["name"]), spec.get("input") or {}, id=spec.get("id"))
    elif "content" in data:
        parts = [
            from_json(item)
            if ("text" in item and "type" not in item) or "tool_use" in item
            else block(item)
            for item in data["content"]
        ]
        base = message(*parts)
    else:
        raise ValueError(f"cannot read a reply from {dict(data)!r}")
    if "usage" in data:
        base = base.with_usage(**{k: int(v) for k, v in data["usage"].items()})
    if data.get("stop_reason"):
        base = base.with_stop_reason(str(data["stop_reason"]))
    if data.get("delay"):
        base = base.delayed(float(data["delay"]))
    return base
