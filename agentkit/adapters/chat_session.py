"""Chat conversation logic, independent of any chat platform (the Discord bot is a thin shell).

:class:`ChatSessions` keeps one :class:`~agentkit.Conversation` per channel and answers a
message by running the agent on it:

* **deny by default**: only the user ids and role ids of the :class:`AccessPolicy` may use it;
  anyone else gets a polite refusal and nothing runs (no model request, no tool);
* **approvals**: tools marked ``destructive`` (stop, delete, push) run only after someone allowed
  approves them through :meth:`ChatChannel.ask_approval`; declined or unanswered, the tool does
  not run and the model is told why (through the agent's ``before_tool`` hook);
* **streamed replies**: one message is created and edited as events arrive (at most one edit per
  ``edit_interval`` seconds, and always once at the end);
* **long answers** are attached as a file instead of being cut.

A platform provides a :class:`ChatChannel` (send, edit, attach a file, ask for approval); tests use
a fake one. ``make_agent()`` builds the agent for each message, e.g. ``connection.agent`` from
:func:`agentkit.connect` or ``lambda: ToolBasedAgent(toolset, client=client)``; the approval hook
is chained after any ``before_tool`` hook the agent already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from agentkit.adapters._text import DISCORD_CONTENT_LIMIT, clip, short_input
from agentkit.agent.conversation import Conversation
from agentkit.agent.events import (
    ErrorEvent,
    RunFinished,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
)
from agentkit.agent.hooks import BeforeTool
from agentkit.errors import ConfigError
from agentkit.redact import Redactor
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.agent.loop import ToolBasedAgent
    from agentkit.config import Settings
    from agentkit.tools.toolset import Toolset

logger = logging.getLogger("agentkit.adapters.chat")

REFUSAL = (
    "Sorry, I can only take instructions from people on this bot's allowlist. "
    "Ask an administrator to add your user id or one of your roles."
)
RESET_COMMANDS = frozenset({"!reset", "/reset"})


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message (or pressed a button): a user id and the ids of their roles."""

    id: int
    role_ids: frozenset[int] = frozenset()
    name: str = ""


class AccessPolicy:
    """Allowlist of user ids and role ids. Empty lists allow nobody (deny by default)."""

    def __init__(self, user_ids: Iterable[int] = (), role_ids: Iterable[int] = ()) -> None:
        self.user_ids = frozenset(int(u) for u in user_ids)
        self.role_ids = frozenset(int(r) for r in role_ids)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(settings.discord_allowed_users, settings.discord_allowed_roles)

    def allows(self, author: Author) -> bool:
        return author.id in self.user_ids or bool(self.role_ids & author.role_ids)

    @property
    def empty(self) -> bool:
        return not self.user_ids and not self.role_ids


class ReplyMessage(Protocol):
    """A message the session sent and may edit (the streamed reply)."""

    async def edit(self, text: str) -> None: ...


class ChatChannel(Protocol):
    """What the session needs from a chat platform's channel."""

    async def send(self, text: str) -> ReplyMessage:
        """Post a message; return a handle to edit it."""
        ...

    async def send_file(self, filename: str, data: bytes, text: str = "") -> None:
        """Post a message with a file attached."""
        ...

    async def ask_approval(self, call: ToolCall, prompt: str, requester: Author) -> bool:
        """Ask allowed people to approve ``call``; True only for an explicit approval.

        The session cancels the request after its ``approval_timeout`` (declined).
        """
        ...


class Outcome(Enum):
    REFUSED = "refused"
    ANSWERED = "answered"
    FAILED = "failed"
    RESET = "reset"
    IGNORED = "ignored"


def _same(text: str) -> str:
    return text


@dataclass(slots=True)
class ReplyView:
    """The text of a streamed reply, rebuilt from agent events.

    ``redact`` is applied before anything is clipped or cut (a cut secret no longer matches).
    """

    tool_lines: list[str] = field(default_factory=list)
    text: str = ""
    footer: str = ""
    redact: Callable[[str], str] = _same
    _line_of: dict[str, int] = field(default_factory=dict)

    def apply(self, event: Any) -> bool:
        """Update from ``event``; True when the visible text changed."""
        if isinstance(event, TextDelta):
            self.text += event.text
            return True
        if isinstance(event, ToolCallEvent):
            if self.text and not self.text.endswith("\n"):
                self.text += "\n"
            self._line_of[event.call.id] = len(self.tool_lines)
            args = clip(self.redact(short_input(event.call.input, 10**9)), 120)
            self.tool_lines.append(f"🔧 `{event.call.name}` {args} …".replace("  ", " "))
            return True
        if isinstance(event, ToolResultEvent):
            index = self._line_of.get(event.call.id)
            mark = "⚠️" if event.result.is_error else "✅"
            summary = clip(self.redact(" ".join(event.result.content.split())), 120)
            line = f"{mark} `{event.call.name}` ({event.duration:.1f} s): {summary}"
            if index is None:
                self.tool_lines.append(line)
            else:
                self.tool_lines[index] = line
            return True
        return False

    def render(self, limit: int = DISCORD_CONTENT_LIMIT) -> str:
        parts = [*self.tool_lines]
        if self.text.strip():
            parts.append(self.text.strip())
        if self.footer:
            parts.append(self.footer)
        body = self.redact("\n".join(parts) or "…")
        if len(body) <= limit:
            return body
        return "…" + body[len(body) - limit + 1 :]  # keep the newest part while streaming


class _Streamer:
    """Edits one message with the newest text, at most once per ``interval`` seconds."""

    def __init__(self, message: ReplyMessage, interval: float) -> None:
        self.message = message
        self.interval = interval
        self.edits = 0
        self._latest: str | None = None
        self._shown: str | None = None
        self._dirty = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chat-edits")

    def update(self, text: str) -> None:
        self._latest = text
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._push()
            await asyncio.sleep(self.interval)

    async def _push(self) -> None:
        text = self._latest
        if text is None or text == self._shown:
            return
        try:
            await self.message.edit(text)
            self._shown = text
            self.edits += 1
        except Exception:
            logger.warning("could not edit the reply message", exc_info=True)

    async def finish(self, text: str) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._latest = text
        await self._push()


class ChatSessions:
    """One conversation per channel, with allowlist, approvals and streamed replies.

    Args:
        make_agent: ``make_agent() -> ToolBasedAgent``, called for each message; it must build
            a new agent every time (the session sets the agent's ``before_tool``).
        policy: who may talk to the agent and approve destructive tools.
        approval_timeout: seconds to wait for an approval before treating it as declined.
        edit_interval: least seconds between two edits of a streamed reply.
        max_inline: longest final answer posted inline; longer ones are attached as a file.
        redactor: redacts replies (the toolset's redactor is used as well).
        approve_destructive: ask before running ``destructive`` tools (on by default).
    """

    def __init__(
        self,
        make_agent: Callable[[], ToolBasedAgent],
        policy: AccessPolicy,
        *,
        approval_timeout: float = 300.0,
        edit_interval: float = 1.0,
        max_inline: int = 1900,
        redactor: Redactor | None = None,
        approve_destructive: bool = True,
    ) -> None:
        self.make_agent = make_agent
        self.policy = policy
        self.approval_timeout = approval_timeout
        self.edit_interval = edit_interval
        self.max_inline = min(max_inline, DISCORD_CONTENT_LIMIT)
        self.redactor = redactor or Redactor()
        self.approve_destructive = approve_destructive
        self.conversations: dict[int | str, Conversation] = {}
        if policy.empty:
            logger.warning("the chat allowlist is empty: every message will be refused")

    def conversation(self, channel_id: int | str) -> Conversation:
        """The conversation of a channel (created on first use)."""
        conv = self.conversations.get(channel_id)
        if conv is None:
            conv = self.conversations[channel_id] = Conversation()
        return conv

    def approval_hook(
        self, agent_toolset: Toolset, channel: ChatChannel, requester: Author
    ) -> BeforeTool:
        """A ``before_tool`` hook asking ``channel`` to approve destructive tools."""

        async def hook(call: ToolCall) -> ToolResult | None:
            if not self.approve_destructive:
                return None
            if call.name not in agent_toolset or not agent_toolset[call.name].destructive:
                return None
            full = short_input(call.input, 10**9)
            args = clip(agent_toolset.context.redactor.redact(self.redactor.redact(full)), 400)
            prompt = self.redactor.redact(
                f"⚠️ The agent wants to run **{call.name}** {args}\n"
                f"Approve within {self.approval_timeout:.0f} s?"
            )
            try:
                approved = await asyncio.wait_for(
                    channel.ask_approval(call, prompt, requester), self.approval_timeout
                )
            except TimeoutError:
                return ToolResult.error(
                    f"Not run: nobody approved {call.name} within {self.approval_timeout:.0f} s. "
                    "Tell the user it needs their approval; do not retry unless they ask."
                )
            except Exception as exc:
                logger.warning("approval request failed: %s", exc, exc_info=True)
                return ToolResult.error(
                    f"Not run: {call.name} needs an approval and asking for it failed."
                )
            if approved:
                return None
            return ToolResult.error(
                f"Not run: the user declined {call.name}. Do not retry it unless they ask again."
            )

        return hook

    async def handle_message(
        self, channel_id: int | str, author: Author, text: str, channel: ChatChannel
    ) -> Outcome:
        """Answer one message in ``channel``. Never raises for agent failures."""
        if not self.policy.allows(author):
            logger.info("refused a message from user %s", author.id)
            await channel.send(REFUSAL)
            return Outcome.REFUSED
        text = text.strip()
        if not text:
            return Outcome.IGNORED
        if text.lower() in RESET_COMMANDS:
            self.conversation(channel_id).clear()
            await channel.send("Conversation cleared. What next?")
            return Outcome.RESET
        return await self._run(channel_id, author, text, channel)

    def _redact(self, text: str, agent: ToolBasedAgent) -> str:
        return agent.toolset.context.redactor.redact(self.redactor.redact(text))

    async def _run(
        self, channel_id: int | str, author: Author, text: str, channel: ChatChannel
    ) -> Outcome:
        conv = self.conversation(channel_id)
        message = await channel.send("💭 …")
        streamer = _Streamer(message, self.edit_interval)
        view = ReplyView()
        agent: ToolBasedAgent | None = None
        outcome = Outcome.ANSWERED
        try:
            agent = self.make_agent()
            if getattr(agent.before_tool, _MARK, False):
                raise ConfigError(
                    "make_agent() returned an agent already used for another message; "
                    "it must build a new agent on every call"
                )
            agent.before_tool = _chain(
                agent.before_tool, self.approval_hook(agent.toolset, channel, author)
            )
            redactor = agent.toolset.context.redactor
            view.redact = lambda text: redactor.redact(self.redactor.redact(text))
            started = time.monotonic()
            async for event in agent.stream(text, conversation=conv):
                if isinstance(event, TurnFinished) and view.text and not view.text.endswith("\n"):
                    view.text += "\n"
                if view.apply(event):
                    streamer.update(self._redact(view.render(), agent))
                if isinstance(event, RunFinished):
                    elapsed = time.monotonic() - started
                    view.footer = f"-# {event.result.turns} turns · {elapsed:.1f} s"
                elif isinstance(event, ErrorEvent):
                    outcome = Outcome.FAILED
        except Exception as exc:
            outcome = Outcome.FAILED
            detail = view.redact(self.redactor.redact(str(exc) or type(exc).__name__))
            view.footer = f"❌ The run failed: {clip(detail, 500)}"
            logger.warning("chat run failed: %s", type(exc).__name__, exc_info=True)
        redact = (lambda t: self._redact(t, agent)) if agent is not None else self.redactor.redact
        final = redact(view.render(limit=10**9))
        if len(final) <= self.max_inline:
            await streamer.finish(final)
            return outcome
        short = ReplyView(tool_lines=view.tool_lines, footer=view.footer)
        short.text = "(The full answer is attached.)"
        await streamer.finish(redact(short.render()))
        await channel.send_file("answer.md", redact(view.text.strip()).encode(), "")
        return outcome


_MARK = "_agentkit_chat_approval"


def _chain(first: BeforeTool | None, second: BeforeTool) -> BeforeTool:
    """``first``'s answer wins; when it lets the call through, ask ``second``."""

    async def hook(call: ToolCall) -> ToolResult | None:
        result = await first(call) if first is not None else None
        return result if result is not None else await second(call)

    setattr(hook, _MARK, True)
    return hook
