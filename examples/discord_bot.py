"""Run agentkit as a Discord bot.

Setup (details in docs/adapters.md):

1. Discord Developer Portal -> New Application -> Bot: copy the token, enable the
   **Message Content** intent, invite the bot with the ``bot`` scope and the Send Messages,
   Read Message History and Attach Files permissions.
2. ``pip install 'claude-agentkit[discord]'`` and set in the environment or ``.env``::

       DISCORD_BOT_TOKEN=...
       AGENTKIT_DISCORD_ALLOWED_USERS=123456789012345678       # who may use it (required)
       AGENTKIT_DISCORD_ALLOWED_ROLES=                         # and/or role ids
       AGENTKIT_DISCORD_CHANNELS=                              # answer every message here
       DISCORD_WEBHOOK_URL=...                                 # optional: progress notifications
       ANTHROPIC_API_KEY=...                                   # plus AGENTKIT_HOST etc.

3. ``python examples/discord_bot.py``, then in Discord: ``@agentkit clone octocat/Hello-World
   and have an agent add a CONTRIBUTING.md``. Destructive tools (stop, delete, push) wait for
   an **Approve** click; ``!reset`` forgets the channel's conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentkit import Settings, ToolBasedAgent
from agentkit.adapters.discord_bot import check_settings, run_discord_bot
from agentkit.adapters.notify import DiscordWebhookNotifier
from agentkit.connect import connect
from agentkit.errors import ConfigError

SYSTEM = (
    "You are agentkit, a Discord assistant that runs Claude Code agents in containers and "
    "manages their git workspaces. Keep replies short; use Discord markdown."
)


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    settings = Settings()
    check_settings(settings)  # token and allowlist, before connecting to the host
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(connect(settings))
        notifier = None
        if settings.discord_webhook_url is not None:
            notifier = await stack.enter_async_context(
                DiscordWebhookNotifier.from_settings(settings)
            )

        def make_agent() -> ToolBasedAgent:
            after_tool = notifier.after_tool if notifier is not None else None
            return conn.agent(system=SYSTEM, after_tool=after_tool)

        # agents' approval requests (ask_tools) get buttons in the first AGENTKIT_DISCORD_CHANNELS
        await run_discord_bot(make_agent, settings, agents=conn.agents)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ConfigError as exc:
        raise SystemExit(f"discord_bot: {exc}") from None
    except KeyboardInterrupt:
        pass
