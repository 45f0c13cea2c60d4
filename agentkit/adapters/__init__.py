"""Adapters that attach agentkit to chat, voice, MCP clients and notebooks (see docs/adapters.md).

Import the module you need; each imports its optional dependency itself and names the extra to
install when it is missing:

* :mod:`agentkit.adapters.notify` — Discord webhook notifications (no extra)
  (the messages themselves: :mod:`agentkit.adapters.discord_messages`)
* :mod:`agentkit.adapters.chat_session` — platform-independent chat logic (no extra)
* :mod:`agentkit.adapters.discord_bot` — the Discord bot (``discord``)
* :mod:`agentkit.adapters.voice` — ElevenLabs client tools (``voice``)
* :mod:`agentkit.adapters.mcp_server` — the MCP stdio server (``mcp``)
* :mod:`agentkit.adapters.notebook` — Jupyter display helpers (``notebook``)
"""
