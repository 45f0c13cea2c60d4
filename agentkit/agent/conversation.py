"""`Conversation`: message history kept across prompts (a Discord channel, a chat REPL)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["Conversation", "repair_messages"]

INTERRUPTED = (
    "The run was interrupted before this tool call returned a result; its effect is unknown. "
    "Check the state before repeating it."
)


class Conversation:
    """History of one conversation, valid for the Messages API at every point.

    Pass it to :meth:`ToolBasedAgent.run` / :meth:`~ToolBasedAgent.stream` (or bind an agent to it
    with ``ToolBasedAgent(..., conversation=conv)``); each prompt continues where the last ended.

    Guarantees:

    * one run at a time: concurrent runs on the same conversation queue on an ``asyncio.Lock``;
    * the history is updated as turns complete; if a run fails or is cancelled, every
      ``tool_use`` without a ``tool_result`` is answered with an error result saying the call was
      interrupted, so the next prompt is a valid request and the model knows what happened;
    * a refused prompt (``stop_reason == "refusal"``) is rolled back, as the API docs advise.
    """

    def __init__(self, messages: Iterable[dict[str, Any]] = ()) -> None:
        self.messages: list[dict[str, Any]] = repair_messages(copy.deepcopy(list(messages)))
        self.lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"Conversation({len(self.messages)} messages)"

    def clear(self) -> None:
        """Forget everything (a ``/reset`` command)."""
        self.messages = []

    def to_json(self) -> str:
        """Serialize the history (persist a channel's conversation)."""
        return json.dumps(self.messages, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> Conversation:
        loaded = json.loads(data)
        if not isinstance(loaded, list):
            raise ValueError("a conversation is a JSON list of messages")
        return cls(loaded)


def _tool_use_ids(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if message.get("role") != "assistant" or not isinstance(content, list):
        return []
    return [str(b["id"]) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]


def _tool_result_ids(message: dict[str, Any]) -> set[str]:
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return set()
    return {
        str(b.get("tool_use_id"))
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_result"
    }


def repair_messages(
    messages: list[dict[str, Any]], note: str = INTERRUPTED
) -> list[dict[str, Any]]:
    """Answer every ``tool_use`` that has no ``tool_result`` in the next message (in place).

    Missing results are added as ``is_error`` results carrying ``note``; when the assistant
    message is the last one, a user message with those results is appended.
    """
    i = 0
    while i < len(messages):
        ids = _tool_use_ids(messages[i])
        if ids:
            following = messages[i + 1] if i + 1 < len(messages) else None
            answered = _tool_result_ids(following) if following is not None else set()
            missing = [
                {"type": "tool_result", "tool_use_id": tid, "content": note, "is_error": True}
                for tid in ids
                if tid not in answered
            ]
            if missing:
                if following is not None and following.get("role") == "user":
                    content = following.get("content")
                    if isinstance(content, str):
                        content = [{"type": "text", "text": content}]
                    # tool_result blocks must come first in the user message
                    following["content"] = missing + list(content or [])
                else:
                    messages.insert(i + 1, {"role": "user", "content": missing})
        i += 1
    return messages
