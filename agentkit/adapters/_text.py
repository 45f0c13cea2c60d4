"""Text helpers shared by the adapters: Discord limits, splitting, short renderings of inputs."""

from __future__ import annotations

import json
import re
from typing import Any

#: Discord message ``content`` limit (characters).
DISCORD_CONTENT_LIMIT = 2000
#: Discord embed limits (characters).
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_NAME_LIMIT = 256
EMBED_FIELD_VALUE_LIMIT = 1024
EMBED_FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
EMBED_MAX_FIELDS = 25

_CONTAINER_ID = re.compile(r"\bclaude-agent-\d{10,16}-[a-z0-9]{4,12}\b")


def clip(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``marker`` when cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Cuts prefer a newline, then a space, in the second half of a chunk; code fences are not
    rebalanced (callers that need them send long text as a file). Never returns an empty list.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:]
        if rest[:1] in ("\n", " "):
            rest = rest[1:]
    if rest:
        chunks.append(rest)
    return chunks


def short_input(tool_input: Any, limit: int = 200) -> str:
    """A one-line rendering of a tool's input, for notifications and status lines."""
    if isinstance(tool_input, dict) and not tool_input:
        return ""
    try:
        text = json.dumps(tool_input, ensure_ascii=False, default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(tool_input)
    return clip(" ".join(text.split()), limit)


def find_container_id(data: Any, content: str = "") -> str | None:
    """The agent container id in a tool result's ``data`` (or, failing that, its text)."""
    for key in ("container_id", "id", "name"):
        value = data.get(key) if isinstance(data, dict) else getattr(data, key, None)
        if isinstance(value, str) and _CONTAINER_ID.fullmatch(value):
            return value
    if isinstance(data, dict):
        value = data.get("container_id")
        if isinstance(value, str) and value:
            return value
    found = _CONTAINER_ID.search(content)
    return found.group(0) if found else None


def field_of(data: Any, *names: str) -> Any:
    """The first present attribute/key among ``names`` of ``data`` (dict or object), else None."""
    for name in names:
        value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
        if value is not None:
            return value
    return None
