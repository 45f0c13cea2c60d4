"""Chat conversation logic (what the Discord bot runs), driven by the real ToolBasedAgent against
the scripted Anthropic server, with a fake chat channel standing in for Discord."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest

from agentkit import Settings, ToolBasedAgent, ToolCall
from agentkit.adapters.chat_session import (
    REFUSAL,
    AccessPolicy,
    Author,
    ChatSessions,
    Outcome,
    ReplyView,
)
from agentkit.redact import Redactor
from agentkit.testing import ScriptedAnthropicServer, reply
from tests.adapter_toolsets import DELETED, make_toolset

ALICE = Author(id=111, name="alice")
ROLE_MEMBER = Author(id=222, role_ids=frozenset({900}), name="bob")
MALLORY = Author(id=666, role_ids=frozenset({1}), name="mallory")


@dataclass
class FakeMessage:
    text: str
    edits: list[str] = field(default_factory=list)

    async def edit(self, text: str) -> None:
        self.edits.append(text)
        self.text = text


@dataclass
class FakeChannel:
    """Stands in for a Discord channel: records what the session sends."""

    approve: bool | None = True  # None: never answers
    messages: list[FakeMessage] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    approvals: list[tuple[str, str, int]] = field(default_factory=list)

    async def send(self, text: str) -> FakeMessage:
        message = FakeMessage(text)
        self.messages.append(message)
        return message

    async def send_file(self, filename: str, data: bytes, text: str = "") -> None:
        self.files.append((filename, data))

    async def ask_approval(self, call: ToolCall, prompt: str, requester: Author) -> bool:
        self.approvals.append((call.name, prompt, requester.id))
        if self.approve is None:
            await asyncio.Event().wait()
        return bool(self.approve)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedAnthropicServer]:
    async with ScriptedAnthropicServer() as srv:
        yield srv


def sessions_for(server: ScriptedAnthropicServer, **options: Any) -> ChatSessions:
    toolset = make_toolset()
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-test-key", max_retries=0)

    def make_agent() -> ToolBasedAgent:
        return ToolBasedAgent(toolset, client=client, max_turns=5)

    options.setdefault("edit_interval", 0.01)
    return ChatSessions(make_agent, AccessPolicy([ALICE.id], [900]), **options)


async def test_strangers_get_a_polite_refusal_and_nothing_runs(
    server: ScriptedAnthropicServer,
) -> None:
    sessions = sessions_for(server)
    channel = FakeChannel()
    outcome = await sessions.handle_message(1, MALLORY, "delete everything", channel)
    assert outcome is Outcome.REFUSED
    assert [m.text for m in channel.messages] == [REFUSAL]
    assert server.requests == []  # no model request was made
    assert sessions.conversations == {}


def test_policy_denies_by_default_and_allows_users_and_roles() -> None:
    assert not AccessPolicy().allows(ALICE)
    policy = AccessPolicy.from_settings(
        Settings(discord_allowed_users="111", discord_allowed_roles="900,901")
    )
    assert policy.allows(ALICE)
    assert policy.allows(ROLE_MEMBER)
    assert not policy.allows(MALLORY)


async def test_reply_is_streamed_by_editing_and_history_is_kept_per_channel(
    server: ScriptedAnthropicServer,
) -> None:
    server.add(
        reply.text("Let me add them.") + reply.tool_use("add", {"a": 2, "b": 3}),
        reply.text("2 + 3 = 5."),
        reply.text("It was 5."),
        reply.text("Hello, other channel."),
    )
    sessions = sessions_for(server)
    first, second = FakeChannel(), FakeChannel()
    assert await sessions.handle_message(1, ALICE, "add 2 and 3", first) is Outcome.ANSWERED
    live = first.messages[0]
    assert live.edits, "the reply is edited in place"
    assert "2 + 3 = 5." in live.text
    assert "`add`" in live.text
    assert "✅" in live.text
    assert "Let me add them." in live.edits[-1]

    assert await sessions.handle_message(1, ROLE_MEMBER, "what was it?", first) is Outcome.ANSWERED
    assert await sessions.handle_message(2, ALICE, "hi", second) is Outcome.ANSWERED
    third, fourth = server.message_requests[2], server.message_requests[3]
    # the channel's history went with the follow-up; the other channel started fresh
    assert len(third.messages) == 5
    assert third.messages[0]["content"][0]["text"] == "add 2 and 3"
    assert len(fourth.messages) == 1
    assert len(sessions.conversation(1)) == 6
    assert len(sessions.conversation(2)) == 2
    server.check()


async def test_approved_destructive_tool_runs(server: ScriptedAnthropicServer) -> None:
    DELETED.clear()
    server.add(reply.tool_use("delete_thing", {"name": "old-ws"}), reply.text("Deleted."))
    sessions = sessions_for(server)
    channel = FakeChannel(approve=True)
    assert await sessions.handle_message(7, ALICE, "delete old-ws", channel) is Outcome.ANSWERED
    assert DELETED == ["old-ws"]
    ((name, prompt, requester),) = channel.approvals
    assert name == "delete_thing"
    assert "old-ws" in prompt
    assert requester == ALICE.id
    (result,) = server.message_requests[1].tool_results()
    assert result["content"] == "deleted old-ws"
    assert not result.get("is_error")


async def test_declined_destructive_tool_does_not_run_and_the_model_is_told(
    server: ScriptedAnthropicServer,
) -> None:
    DELETED.clear()
    server.add(
        reply.tool_use("delete_thing", {"name": "prod"}) + reply.tool_use("add", {"a": 1}),
        reply.text("OK, I left it alone."),
    )
    sessions = sessions_for(server)
    channel = FakeChannel(approve=False)
    assert await sessions.handle_message(7, ALICE, "delete prod", channel) is Outcome.ANSWERED
    assert DELETED == []
    assert [a[0] for a in channel.approvals] == ["delete_thing"]  # add is not destructive
    declined, added = server.message_requests[1].tool_results()
    assert declined["is_error"] is True
    assert "declined" in declined["content"]
    assert added["content"] == "2"
    assert "⚠️ `delete_thing`" in channel.messages[0].text


async def test_unanswered_approval_times_out_as_declined(server: ScriptedAnthropicServer) -> None:
    DELETED.clear()
    server.add(reply.tool_use("delete_thing", {"name": "x"}), reply.text("Waiting for you."))
    sessions = sessions_for(server, approval_timeout=0.1)
    channel = FakeChannel(approve=None)
    await sessions.handle_message(7, ALICE, "delete x", channel)
    assert DELETED == []
    (result,) = server.message_requests[1].tool_results()
    assert "nobody approved" in result["content"]


async def test_long_answers_are_attached_as_a_file(server: ScriptedAnthropicServer) -> None:
    answer = "\n".join(f"line {i}: " + "x" * 60 for i in range(100))
    server.add(reply.text(answer))
    sessions = sessions_for(server)
    channel = FakeChannel()
    await sessions.handle_message(3, ALICE, "write a lot", channel)
    ((filename, data),) = channel.files
    assert filename == "answer.md"
    assert data.decode() == answer
    assert len(channel.messages[0].text) <= 2000
    assert "attached" in channel.messages[0].text


async def test_model_failure_is_reported_in_the_reply(server: ScriptedAnthropicServer) -> None:
    server.add(reply.error(400, "prompt is too long"))
    sessions = sessions_for(server)
    channel = FakeChannel()
    assert await sessions.handle_message(3, ALICE, "hi", channel) is Outcome.FAILED
    assert "The run failed" in channel.messages[0].text
    assert "prompt is too long" in channel.messages[0].text


async def test_reset_clears_only_that_channel(server: ScriptedAnthropicServer) -> None:
    server.add(reply.text("one"), reply.text("two"))
    sessions = sessions_for(server)
    await sessions.handle_message(1, ALICE, "a", FakeChannel())
    await sessions.handle_message(2, ALICE, "b", FakeChannel())
    assert await sessions.handle_message(1, ALICE, "!reset", FakeChannel()) is Outcome.RESET
    assert len(sessions.conversation(1)) == 0
    assert len(sessions.conversation(2)) == 2


async def test_secrets_in_model_text_are_redacted(server: ScriptedAnthropicServer) -> None:
    token = "ghp_" + "Q" * 36
    server.add(reply.text(f"the token is {token}"))
    sessions = sessions_for(server)
    channel = FakeChannel()
    await sessions.handle_message(1, ALICE, "leak it", channel)
    assert token not in channel.messages[0].text
    assert all(token not in edit for edit in channel.messages[0].edits)
    assert "[REDACTED]" in channel.messages[0].text


async def test_a_secret_cut_by_clipping_is_still_redacted(server: ScriptedAnthropicServer) -> None:
    secret = "EL7f3a9c2e1b4d8f6a0c5e9d7b"  # registered, no well-known shape
    # the tool line shows ~120 characters of the input: the cut falls inside the secret
    server.add(
        reply.tool_use("lookup", {"key": "k" * 95 + secret}),
        reply.text("z" * 1990 + secret),  # streamed: the newest 2000 characters start inside it
    )
    sessions = sessions_for(server, redactor=Redactor([secret]))
    channel = FakeChannel()
    await sessions.handle_message(1, ALICE, "look it up", channel)
    shown = [channel.messages[0].text, *channel.messages[0].edits]
    shown += [data.decode() for _, data in channel.files]
    assert all(secret[:6] not in text and secret[-6:] not in text for text in shown)


async def test_an_approval_prompt_redacts_before_clipping(server: ScriptedAnthropicServer) -> None:
    secret = "EL7f3a9c2e1b4d8f6a0c5e9d7b"
    server.add(reply.tool_use("delete_thing", {"name": "n" * 375 + secret}), reply.text("ok"))
    sessions = sessions_for(server, redactor=Redactor([secret]))
    channel = FakeChannel(approve=False)
    await sessions.handle_message(1, ALICE, "delete it", channel)
    [(_, prompt, _)] = channel.approvals
    assert secret[:6] not in prompt


async def test_a_failure_message_is_redacted_before_clipping() -> None:
    secret = "EL7f3a9c2e1b4d8f6a0c5e9d7b"

    def make_agent() -> ToolBasedAgent:
        raise RuntimeError("f" * 495 + secret)

    sessions = ChatSessions(make_agent, AccessPolicy([ALICE.id]), redactor=Redactor([secret]))
    channel = FakeChannel()
    assert await sessions.handle_message(1, ALICE, "go", channel) is Outcome.FAILED
    assert "The run failed" in channel.messages[0].text
    assert secret[:4] not in channel.messages[0].text


def test_streaming_view_redacts_before_cutting() -> None:
    secret = "EL7f3a9c2e1b4d8f6a0c5e9d7b"
    view = ReplyView(text="y" * 1990 + secret, redact=Redactor([secret]).redact)
    assert secret[-6:] not in view.render()


def test_streaming_view_keeps_the_newest_text_within_the_limit() -> None:
    view = ReplyView(text="y" * 5000)
    rendered = view.render()
    assert len(rendered) == 2000
    assert rendered.startswith("…")
    assert rendered.endswith("y")


async def test_edits_are_throttled_while_text_streams_in(server: ScriptedAnthropicServer) -> None:
    text = " ".join(f"w{i}" for i in range(150))
    server.add(reply.text(text).streamed(chunk_size=4, chunk_delay=0.005))  # ~150 deltas, ~0.7 s
    sessions = sessions_for(server, edit_interval=0.25)
    channel = FakeChannel()
    started = time.monotonic()
    await sessions.handle_message(1, ALICE, "talk", channel)
    elapsed = time.monotonic() - started
    edits = channel.messages[0].edits
    assert text in edits[-1]  # the last edit shows everything
    # at most one edit per interval (plus the final one), not one per delta
    assert 2 <= len(edits) <= elapsed / 0.25 + 2
    assert len(edits) < 50


async def test_a_reused_agent_is_refused(server: ScriptedAnthropicServer) -> None:
    server.add(reply.text("one"))
    toolset = make_toolset()
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0)
    shared = ToolBasedAgent(toolset, client=client)
    sessions = ChatSessions(lambda: shared, AccessPolicy([ALICE.id]), edit_interval=0.01)
    assert await sessions.handle_message(1, ALICE, "a", FakeChannel()) is Outcome.ANSWERED
    channel = FakeChannel()
    assert await sessions.handle_message(2, ALICE, "b", channel) is Outcome.FAILED
    assert "new agent on every call" in channel.messages[0].text
    assert len(server.message_requests) == 1
