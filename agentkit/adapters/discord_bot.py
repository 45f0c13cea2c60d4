"""A Discord bot for agentkit: thin discord.py glue around :class:`ChatSessions`.

All decisions (allowlist, history per channel, approvals, streamed replies, files) live in
:mod:`agentkit.adapters.chat_session`; this module only translates Discord objects:

* a message that mentions the bot, is a DM, or is in one of ``channel_ids`` becomes
  ``ChatSessions.handle_message(channel.id, author, text, DiscordChannel(...))``;
* approvals are a message with **Approve** / **Deny** buttons; only people the allowlist allows
  may press them (others get an ephemeral refusal);
* nothing the bot posts can ping anyone (``AllowedMentions.none()``).

The bot needs the privileged *Message Content* intent (Developer Portal -> Bot). See
``docs/adapters.md`` and ``examples/discord_bot.py``. Needs the ``discord`` extra:
``pip install 'claude-agentkit[discord]'``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentkit.adapters.chat_session import (
    AccessPolicy,
    Author,
    ChatSessions,
    Outcome,
    ReplyMessage,
)
from agentkit.agent.events import ToolCall
from agentkit.errors import ConfigError

try:
    import discord
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigError(
        "the Discord bot needs the discord extra: pip install 'claude-agentkit[discord]'"
    ) from exc

if TYPE_CHECKING:
    from agentkit.agent.loop import ToolBasedAgent
    from agentkit.config import Settings

logger = logging.getLogger("agentkit.adapters.discord")

NO_MENTIONS = discord.AllowedMentions.none()


def author_of(user: Any) -> Author:
    """An :class:`Author` for a ``discord.User`` / ``discord.Member`` (roles only in guilds)."""
    roles = getattr(user, "roles", None) or []
    return Author(
        id=int(user.id),
        role_ids=frozenset(int(role.id) for role in roles),
        name=str(getattr(user, "display_name", None) or user),
    )


class DiscordReply:
    """A sent message the session edits while streaming."""

    def __init__(self, message: Any) -> None:
        self.message = message

    async def edit(self, text: str) -> None:
        await self.message.edit(content=text, allowed_mentions=NO_MENTIONS)


class ApprovalView(discord.ui.View):
    """Approve / Deny buttons; only people ``policy`` allows can press them."""

    def __init__(self, policy: AccessPolicy) -> None:
        super().__init__(timeout=None)  # the session enforces the timeout
        self.policy = policy
        self.decision: asyncio.Future[tuple[bool, Author]] = (
            asyncio.get_running_loop().create_future()
        )

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if self.policy.allows(author_of(interaction.user)):
            return True
        await interaction.response.send_message(
            "You are not on this bot's allowlist, so you cannot approve this.", ephemeral=True
        )
        return False

    async def _decide(self, interaction: discord.Interaction[Any], approved: bool) -> None:
        who = author_of(interaction.user)
        if not self.decision.done():
            self.decision.set_result((approved, who))
        verdict = "✅ Approved" if approved else "🛑 Denied"
        content = f"{interaction.message.content if interaction.message else ''}\n"
        await interaction.response.edit_message(
            content=f"{content}{verdict} by {who.name}", view=None
        )
        self.stop()

    @discord.ui.button(label="Approve", style=discord.ButtonStyle.danger)
    async def approve(
        self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
    ) -> None:
        await self._decide(interaction, True)

    @discord.ui.button(label="Deny", style=discord.ButtonStyle.secondary)
    async def deny(
        self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]
    ) -> None:
        await self._decide(interaction, False)


class DiscordChannel:
    """:class:`~agentkit.adapters.chat_session.ChatChannel` over a discord.py ``Messageable``."""

    def __init__(self, channel: Any, policy: AccessPolicy) -> None:
        self.channel = channel
        self.policy = policy

    async def send(self, text: str) -> ReplyMessage:
        message = await self.channel.send(text, allowed_mentions=NO_MENTIONS)
        return DiscordReply(message)

    async def send_file(self, filename: str, data: bytes, text: str = "") -> None:
        await self.channel.send(
            text or None,
            file=discord.File(io.BytesIO(data), filename=filename),
            allowed_mentions=NO_MENTIONS,
        )

    async def ask_approval(self, call: ToolCall, prompt: str, requester: Author) -> bool:
        view = ApprovalView(self.policy)
        message = await self.channel.send(prompt, view=view, allowed_mentions=NO_MENTIONS)
        try:
            approved, _ = await view.decision
            return approved
        except asyncio.CancelledError:  # the session's timeout
            view.stop()
            try:
                await message.edit(content=f"{prompt}\n⌛ No answer: not run.", view=None)
            except discord.HTTPException:
                logger.debug("could not mark the approval as expired", exc_info=True)
            raise


_MENTION = re.compile(r"<@!?(\d+)>")


class AgentkitDiscordBot(discord.Client):
    """A ``discord.Client`` that hands messages addressed to it to ``sessions``.

    Args:
        sessions: the conversation logic.
        channel_ids: channels where every message is for the bot (elsewhere: mention or DM).
        intents: defaults to ``Intents.default()`` plus ``message_content``.
    """

    def __init__(
        self,
        sessions: ChatSessions,
        *,
        channel_ids: Iterable[int] = (),
        intents: discord.Intents | None = None,
        **options: Any,
    ) -> None:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self.sessions = sessions
        self.channel_ids = frozenset(int(c) for c in channel_ids)
        #: (agent service, channel id): where agents' approval requests go once connected
        self.approvals_to: tuple[Any, int] | None = None
        self._relay: Any = None

    async def on_ready(self) -> None:
        logger.info("agentkit Discord bot ready as %s", self.user)
        if self.approvals_to is not None and self._relay is None:
            agents, channel_id = self.approvals_to
            channel = self.get_channel(channel_id)
            if channel is None:
                logger.warning("approval channel %s not found: approvals only by tool", channel_id)
            else:
                self._relay = self.relay_agent_approvals(agents, channel)

    def relay_agent_approvals(self, agents: Any, channel: Any) -> Any:
        """Post ``agents``' (an ``AgentService``) approval requests to ``channel`` with buttons
        only allowed people can press; returns the subscribed
        :class:`~agentkit.adapters.discord_approvals.AgentApprovalRelay`."""
        from agentkit.adapters.discord_approvals import AgentApprovalRelay

        relay = AgentApprovalRelay(
            agents.answer, channel, self.sessions.policy, redactor=agents.redactor
        )
        agents.subscribe(relay)
        return relay

    def addressed(self, message: discord.Message) -> bool:
        if self.user is None or message.author.bot or message.author.id == self.user.id:
            return False
        if isinstance(message.channel, discord.DMChannel):
            return True
        if message.channel.id in self.channel_ids:
            return True
        return any(user.id == self.user.id for user in message.mentions)

    def clean_text(self, message: discord.Message) -> str:
        own = self.user.id if self.user else None
        return _MENTION.sub(
            lambda m: "" if own is not None and int(m.group(1)) == own else m.group(0),
            message.content,
        ).strip()

    async def on_message(self, message: discord.Message) -> None:
        if not self.addressed(message):
            return
        channel = DiscordChannel(message.channel, self.sessions.policy)
        outcome = await self.sessions.handle_message(
            message.channel.id, author_of(message.author), self.clean_text(message), channel
        )
        if outcome is Outcome.IGNORED:
            await message.channel.send(
                "Tell me what to do, e.g. `@agentkit list the workspaces`.",
                allowed_mentions=NO_MENTIONS,
            )


def check_settings(settings: Settings, *, need_token: bool = True) -> None:
    """Raise :class:`ConfigError` unless the bot can run: a token and a non-empty allowlist."""
    if need_token and (
        settings.discord_bot_token is None or not settings.discord_bot_token.get_secret_value()
    ):
        raise ConfigError("DISCORD_BOT_TOKEN is not set: create a bot in the Developer Portal")
    if AccessPolicy.from_settings(settings).empty:
        raise ConfigError(
            "the Discord bot denies everyone by default: set AGENTKIT_DISCORD_ALLOWED_USERS "
            "and/or AGENTKIT_DISCORD_ALLOWED_ROLES (comma-separated ids)"
        )


def build_bot(
    make_agent: Callable[[], ToolBasedAgent],
    settings: Settings,
    *,
    channel_ids: Iterable[int] = (),
    **session_options: Any,
) -> AgentkitDiscordBot:
    """A bot whose allowlist comes from ``settings`` (``AGENTKIT_DISCORD_ALLOWED_USERS/ROLES``)."""
    from agentkit.redact import Redactor

    check_settings(settings, need_token=False)
    policy = AccessPolicy.from_settings(settings)
    session_options.setdefault("redactor", Redactor(settings.secrets()))
    session_options.setdefault("approval_timeout", settings.discord_approval_timeout)
    sessions = ChatSessions(make_agent, policy, **session_options)
    channels = list(channel_ids) or settings.discord_channels
    return AgentkitDiscordBot(sessions, channel_ids=channels)


async def run_discord_bot(
    make_agent: Callable[[], ToolBasedAgent],
    settings: Settings,
    *,
    channel_ids: Iterable[int] = (),
    agents: Any = None,
    **session_options: Any,
) -> None:
    """Run the bot until cancelled (``DISCORD_BOT_TOKEN`` from ``settings``).

    ``agents`` (an ``AgentService``, e.g. ``conn.agents``): its agents' approval requests are
    posted with buttons to the first of the bot's channels (``AGENTKIT_DISCORD_CHANNELS``).
    """
    check_settings(settings)
    assert settings.discord_bot_token is not None
    bot = build_bot(make_agent, settings, channel_ids=channel_ids, **session_options)
    channels = list(channel_ids) or settings.discord_channels
    if agents is not None and channels:
        bot.approvals_to = (agents, int(channels[0]))
    async with bot:
        await bot.start(settings.discord_bot_token.get_secret_value())
