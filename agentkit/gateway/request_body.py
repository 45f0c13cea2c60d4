"""What the gateway reads in a request body before forwarding it: bounds, policy, worst case.

A body is untrusted bytes (up to 32 MiB). :func:`count_values` first bounds how many JSON
values it holds with a linear scan (a body of ``[],[],...`` would otherwise become millions of
Python objects: hundreds of MB from one request); only then is it parsed. The parsed request
is checked against the policy - by default no server-side tools, no MCP connector, no URL
sources: each makes the model API fetch addresses the agent picks, past the egress allowlist -
and its worst-case input is estimated from its content (JSON whitespace is not input), with a
fixed worst case per image and per document, whose few bytes can cost thousands of tokens.
:class:`BodyInspector` parses large bodies off the event loop, one at a time.
Standard library only: this module runs inside the gateway container.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DOCUMENT_TOKENS",
    "IMAGE_TOKENS",
    "LARGE_BODY",
    "MAX_CONTEXT_TOKENS",
    "MAX_JSON_VALUES",
    "BodyInspector",
    "BodyRefused",
    "Inspection",
    "count_values",
    "inspect",
]

#: most JSON values (keys included) a request body may hold; the largest real requests (a full
#: 1M-token context of short messages and tool results) stay far below
MAX_JSON_VALUES = 1_000_000
#: bodies from this size on are parsed in a worker thread, one at a time
LARGE_BODY = 256 * 1024
#: input tokens assumed per byte of text content when reserving a request's worst case
INPUT_TOKENS_PER_BYTE = 1 / 3
#: worst-case input tokens of one image block (the API scales images down to ~1.15 megapixels,
#: ~1,600 tokens; reserved with margin)
IMAGE_TOKENS = 5_000
#: worst-case input tokens of one document block whose data is binary (a PDF: each page is
#: read as text and as an image, ~1,500-3,000 tokens a page; the API takes at most 100 pages)
DOCUMENT_PAGES = 100
DOCUMENT_TOKENS = DOCUMENT_PAGES * 3_000
#: no request's input is more than the largest context window (tokens)
MAX_CONTEXT_TOKENS = 1_000_000
#: tool types the client (the agent) runs itself; any other typed tool runs on the API's side
CLIENT_TOOL_PREFIXES = ("custom", "bash_", "text_editor_", "computer_", "memory_")

#: a string (to its closing quote, or to the end when it has none: never a second try from a
#: later quote, which made a body of ``"\"\"\"...`` quadratic), or a mark that adds a value
_STRING_OR_MARK = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*"?|[,:\[{]')


class BodyRefused(ValueError):
    """The body is not forwarded; the message says why (shown to the agent as a 400)."""


@dataclass(frozen=True, slots=True)
class Inspection:
    """What a request body asks for: its model, output cap, and worst-case input tokens."""

    model: str = ""
    max_tokens: int = 0
    input_tokens: int = 0


def count_values(body: bytes, limit: int = MAX_JSON_VALUES) -> int:
    """An upper bound on the JSON values (and keys) in ``body``: the commas, colons and opening
    brackets outside strings, plus one. Linear; stops counting once past ``limit``."""
    marks = body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{")
    if marks <= limit:
        return marks + 1
    count = 1
    # in JSON, strings are separated by marks: more than 2 matches per mark is not JSON
    for seen, match in enumerate(_STRING_OR_MARK.finditer(body)):
        if match.end() - match.start() == 1 and match[0] != b'"':
            count += 1
        if count > limit or seen > 2 * limit + 2:
            return max(count, limit + 1)
    return count


def _policy(data: dict[str, Any], *, allow_server_tools: bool) -> None:
    if allow_server_tools:
        return
    how = "the gateway's operator can allow it (AGENTKIT_GATEWAY_SERVER_TOOLS=true)"
    if data.get("mcp_servers"):
        raise BodyRefused(
            "agentkit gateway: mcp_servers (the MCP connector) is refused: the model API "
            f"would reach servers outside the egress allowlist; {how}"
        )
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind is None:
            continue
        if not isinstance(kind, str) or not kind.startswith(CLIENT_TOOL_PREFIXES):
            raise BodyRefused(
                f"agentkit gateway: the server-side tool {str(kind)[:80]!r} is refused: the "
                f"model API would run it outside the egress allowlist; {how}"
            )


def _estimate(data: dict[str, Any], *, allow_url_sources: bool) -> int:
    """Worst-case input tokens of a parsed body: text bytes / 3, plus a fixed worst case for
    each image and binary document (their data is not counted as text)."""
    text = 0
    fixed = 0
    stack: list[Any] = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            text += len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
            text += 3  # quotes and separator
        elif isinstance(value, dict):
            kind = value.get("type")
            source = value.get("source")
            if kind in ("image", "document") and isinstance(source, dict):
                if source.get("type") == "url" and not allow_url_sources:
                    raise BodyRefused(
                        f"agentkit gateway: a {kind} with a URL source is refused: the model "
                        "API would fetch it outside the egress allowlist; send its data "
                        "(base64) instead, or the gateway's operator can allow it "
                        "(AGENTKIT_GATEWAY_SERVER_TOOLS=true)"
                    )
                if kind == "image" or source.get("type") in ("base64", "url", "file"):
                    fixed += IMAGE_TOKENS if kind == "image" else DOCUMENT_TOKENS
                    value = {k: v for k, v in value.items() if k != "source"}
            text += 2
            for key, item in value.items():
                text += len(key) + 4
                stack.append(item)
        elif isinstance(value, list):
            text += 2
            stack.extend(value)
        else:
            text += 8  # a number, true, false or null
    return min(int(text * INPUT_TOKENS_PER_BYTE) + 1 + fixed, MAX_CONTEXT_TOKENS)


def inspect(body: bytes, *, allow_server_tools: bool = False) -> Inspection:
    """Bound, parse, check and estimate a request body (blocking: large bodies in a thread).

    An empty body (``GET /v1/models``) is nothing to inspect. Raises :class:`BodyRefused`."""
    if not body.strip():
        return Inspection()
    values = count_values(body)
    if values > MAX_JSON_VALUES:
        raise BodyRefused(
            f"agentkit gateway: the request body holds over {MAX_JSON_VALUES} JSON values; "
            "not forwarded"
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BodyRefused(
            f"agentkit gateway: the request body is not valid JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise BodyRefused("agentkit gateway: the request body is not a JSON object")
    _policy(data, allow_server_tools=allow_server_tools)
    name = data.get("model")
    value = data.get("max_tokens")
    max_tokens = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return Inspection(
        model=name if isinstance(name, str) else "",
        max_tokens=max(max_tokens, 0),
        input_tokens=_estimate(data, allow_url_sources=allow_server_tools),
    )


class BodyInspector:
    """:func:`inspect` for the proxy: small bodies inline, large ones in a worker thread with
    at most one such parse at a time (its memory comes on top of the bodies in flight)."""

    def __init__(self, *, allow_server_tools: bool = False) -> None:
        self.allow_server_tools = allow_server_tools
        self._large = asyncio.Lock()

    async def inspect(self, body: bytes) -> Inspection:
        allow = self.allow_server_tools
        if len(body) < LARGE_BODY:
            return inspect(body, allow_server_tools=allow)
        async with self._large:
            return await asyncio.to_thread(inspect, body, allow_server_tools=allow)
