"""Usage read from Messages API responses as they stream through the gateway.

:class:`SSEUsage` is fed the response bytes exactly as they are forwarded and keeps only what
``message_start`` (input, cache read, cache write, first output count, model) and
``message_delta`` (cumulative output, and on newer API versions cumulative input/cache counts)
say. Other events are skipped without being parsed, and memory stays bounded: a line longer than
:data:`MAX_LINE` is dropped (usage events are small). Standard library only: this module also
runs inside the gateway container.
"""

from __future__ import annotations

import json
from typing import Any

from .pricing import TokenCounts

__all__ = ["MAX_LINE", "SSEUsage", "usage_from_json"]

#: longest SSE line kept for parsing (bytes); longer lines (big text deltas) are skipped
MAX_LINE = 1 << 20
_WANTED = (b"message_start", b"message_delta", b"error")
#: nested usage objects kept (for pricing): the 1-hour part of the cache writes, web searches
_PARTS = ("cache_creation", "server_tool_use")


class SSEUsage:
    """Incremental SSE parser that keeps the usage and model of one streamed message."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line
        self._event = b""
        self._fields: dict[str, Any] = {}
        self.model: str | None = None
        self.error: str | None = None
        self.stopped = False  # a message_delta arrived (the message completed)
        self.seen_start = False

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                rest = chunk[start:]
                if not self._skipping:
                    self._buf += rest
                    if len(self._buf) > MAX_LINE:
                        self._buf.clear()
                        self._skipping = True
                return
            if self._skipping:
                self._skipping = False
            else:
                self._buf += chunk[start:end]
                self._line(bytes(self._buf).rstrip(b"\r"))
            self._buf.clear()
            start = end + 1

    def _line(self, line: bytes) -> None:
        if not line:
            self._event = b""
            return
        if line.startswith(b"event:"):
            self._event = line[6:].strip()
            return
        if not line.startswith(b"data:") or self._event not in _WANTED:
            return
        try:
            data = json.loads(line[5:])
        except ValueError:
            return
        if isinstance(data, dict):
            self.take_event(data)

    def take_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.seen_start = True
                if isinstance(message.get("model"), str):
                    self.model = message["model"]
                self._merge(message.get("usage"))
        elif kind == "message_delta":
            self.stopped = True
            self._merge(data.get("usage"))
        elif kind == "error":
            err = data.get("error")
            if isinstance(err, dict):
                self.error = str(err.get("type") or "error")[:100]

    def _merge(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self._fields[key] = value  # counts in message_delta are cumulative
            elif key in _PARTS and isinstance(value, dict):  # the 1h cache writes, web searches
                self._fields[key] = {
                    k: v for k, v in value.items() if isinstance(v, int) and v >= 0
                }

    @property
    def tokens(self) -> TokenCounts:
        return TokenCounts.from_mapping(self._fields)


def usage_from_json(body: bytes) -> tuple[TokenCounts, str | None]:
    """Usage and model of a non-streamed Messages API answer (zeros if it has none)."""
    try:
        data = json.loads(body)
    except ValueError:
        return TokenCounts(), None
    if not isinstance(data, dict):
        return TokenCounts(), None
    usage = data.get("usage")
    model = data.get("model") if isinstance(data.get("model"), str) else None
    return (TokenCounts.from_mapping(usage) if isinstance(usage, dict) else TokenCounts()), model
