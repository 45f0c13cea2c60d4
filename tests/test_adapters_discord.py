"""The discord.py glue: fakes stand in for Discord's objects (no network)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from agentkit import Settings, ToolCall
from agentkit.adapters.chat_session import AccessPolicy, Author
from agentkit.adapters.discord_bot import (
    NO_MENTIONS,
    ApprovalView,
    DiscordChannel,
    author_of,
    build_bot,
    check_settings,
)
from agentkit.errors import ConfigError

ALLOWED = SimpleNamespace(id=111, roles=[], display_name="alice")
ROLE_HOLDER = SimpleNamespace(id=222, roles=[SimpleNamespace(id=900)], display_name="bob")
STRANGER = SimpleNamespace(id=666, roles=[SimpleNamespace(id=1)], display_name="mallory")
POLICY = AccessPolicy([111], [900])


@dataclass
class FakeSentMessage:
    content: str
    view: Any = None
    edits: list[dict[str, Any]] = field(default_factory=list)

    async def edit(self, **kwargs: Any) -> None:
        self.edits.append(kwargs)


@dataclass
class FakeMessageable:
    sent: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    last: FakeSentMessage | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, content: Any = None, **kwargs: Any) -> FakeSentMessage:
        self.sent.append((content, kwargs))
        self.last = FakeSentMessage(content, kwargs.get("view"))
        self.arrived.set()
        return self.last

    async def next_message(self) -> FakeSentMessage:
        """Wait (generously) until something was sent; return the newest message."""
        await asyncio.wait_for(self.arrived.wait(), 30)
        self.arrived.clear()
        assert self.last is not None
        return self.last


@dataclass
class FakeResponse:
    calls: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)

    async def send_message(self, content: Any = None, **kwargs: Any) -> None:
        self.calls.append(("send_message", content, kwargs))

    async def edit_message(self, **kwargs: Any) -> None:
        self.calls.append(("edit_message", None, kwargs))


def interaction(user: Any) -> Any:
    return SimpleNamespace(
        user=user, response=FakeResponse(), message=SimpleNamespace(content="Run it?")
    )


def test_author_of_reads_user_id_and_guild_roles() -> None:
    assert author_of(ROLE_HOLDER) == Author(222, frozenset({900}), "bob")
    assert author_of(SimpleNamespace(id=5, display_name="dm-user")).role_ids == frozenset()


async def test_sends_never_ping_and_files_are_attached() -> None:
    target = FakeMessageable()
    channel = DiscordChannel(target, POLICY)
    reply = await channel.send("hello @everyone")
    await reply.edit("edited")
    await channel.send_file("answer.md", b"long text")
    assert target.sent[0][1]["allowed_mentions"] is NO_MENTIONS
    assert target.last is not None
    (file_kwargs,) = [kw for _, kw in target.sent if "file" in kw]
    attached = file_kwargs["file"]
    assert isinstance(attached, discord.File)
    assert attached.filename == "answer.md"
    assert attached.fp.read() == b"long text"


async def test_only_allowed_people_can_press_the_approval_buttons() -> None:
    target = FakeMessageable()
    channel = DiscordChannel(target, POLICY)
    call = ToolCall(id="t1", name="delete_workspace", input={"workspace_name": "demo"})
    pending = asyncio.create_task(channel.ask_approval(call, "Delete demo?", Author(111)))
    view = (await target.next_message()).view
    assert isinstance(view, ApprovalView)

    stranger = interaction(STRANGER)
    assert await view.interaction_check(stranger) is False
    assert stranger.response.calls[0][2] == {"ephemeral": True}
    assert not pending.done()

    member = interaction(ROLE_HOLDER)
    assert await view.interaction_check(member) is True
    await view.deny.callback(member)
    assert await pending is False
    ((kind, _, kwargs),) = member.response.calls
    assert kind == "edit_message"
    assert "Denied by bob" in kwargs["content"]


async def test_approve_button_approves() -> None:
    target = FakeMessageable()
    channel = DiscordChannel(target, POLICY)
    call = ToolCall(id="t1", name="push_workspace", input={})
    pending = asyncio.create_task(channel.ask_approval(call, "Push?", Author(111)))
    view = (await target.next_message()).view
    await view.approve.callback(interaction(ALLOWED))
    assert await pending is True


async def test_an_expired_approval_is_marked_on_the_message() -> None:
    target = FakeMessageable()
    channel = DiscordChannel(target, POLICY)
    call = ToolCall(id="t1", name="stop_claude_agent", input={})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(channel.ask_approval(call, "Stop?", Author(111)), 0.05)
    assert target.last is not None
    assert "No answer" in target.last.edits[-1]["content"]


async def test_bot_refuses_to_start_with_an_empty_allowlist() -> None:
    with pytest.raises(ConfigError, match="ALLOWED_USERS"):
        build_bot(lambda: None, Settings(discord_allowed_users="", discord_allowed_roles=""))  # type: ignore[arg-type,return-value]
    bot = build_bot(
        lambda: None,  # type: ignore[arg-type,return-value]
        Settings(discord_allowed_users="111", discord_channels="42"),
    )
    assert bot.channel_ids == frozenset({42})
    assert bot.intents.message_content
    assert bot.sessions.policy.allows(Author(111))
    await bot.close()


def test_settings_check_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        check_settings(Settings(discord_bot_token=None, discord_allowed_users="1"))
    with pytest.raises(ConfigError, match="denies everyone"):
        check_settings(Settings(discord_bot_token="x" * 30, discord_allowed_users=""))
    check_settings(Settings(discord_bot_token="x" * 30, discord_allowed_roles="5"))


async def test_on_message_runs_the_agent_for_mentions_and_refuses_strangers() -> None:
    import anthropic

    from agentkit import ToolBasedAgent
    from agentkit.testing import ScriptedAnthropicServer, reply
    from tests.adapter_toolsets import make_toolset

    async with ScriptedAnthropicServer([reply.text("Hello from the agent.")]) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0)
        settings = Settings(discord_allowed_users="111", discord_channels="77")
        bot = build_bot(
            lambda: ToolBasedAgent(make_toolset(), client=client),
            settings,
            edit_interval=0.01,
        )
        bot._connection.user = SimpleNamespace(id=999)  # as if logged in
        me = SimpleNamespace(id=999)

        def message(author: Any, content: str, channel_id: int, mentions: list[Any]) -> Any:
            author.bot = False
            return SimpleNamespace(
                author=author,
                content=content,
                mentions=mentions,
                channel=FakeChannelWithId(id=channel_id),
            )

        unaddressed = message(ALLOWED, "just chatting", 5, [])
        await bot.on_message(unaddressed)
        assert unaddressed.channel.sent == []

        stranger = message(STRANGER, "<@999> delete it all", 5, [me])
        await bot.on_message(stranger)
        assert "allowlist" in stranger.channel.sent[0][0]

        hello = message(ALLOWED, "<@999>   say hello", 5, [me])
        await bot.on_message(hello)
        await bot.close()
    (request,) = server.message_requests
    assert request.last_user_text() == "say hello"  # the mention is stripped
    assert hello.channel.last is not None
    assert "Hello from the agent." in hello.channel.last.edits[-1]["content"]
    assert bot.channel_ids == frozenset({77})


@dataclass
class FakeChannelWithId(FakeMessageable):
    id: int = 0
