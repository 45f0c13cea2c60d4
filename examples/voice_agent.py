"""Talk to agentkit: its tools as ElevenLabs conversational-AI client tools.

The ElevenLabs agent (speech, turn-taking, its own LLM) calls agentkit's tools, which run here
and answer with a short, speakable summary.

Setup (details in docs/adapters.md):

1. ``pip install 'claude-agentkit[voice]'`` (and ``pyaudio`` for microphone and speaker).
2. Create an agent at elevenlabs.io (Agents) and add the tools printed by
   ``python examples/voice_agent.py --print-tools`` as *client* tools (or send them with the
   agents API), then set::

       ELEVENLABS_AGENT_ID=...
       ELEVENLABS_API_KEY=...          # needed for private agents
       AGENTKIT_VOICE_MAX_CHARS=300    # longest spoken tool answer

3. ``python examples/voice_agent.py`` and speak ("list my workspaces", "spawn an agent in demo
   that fixes the failing test"). ``--text`` types instead of speaking (no pyaudio needed).

Destructive tools (stop an agent, push, delete a workspace) are left out: voice cannot ask for
approval. ``--allow-destructive`` offers them too (give it to ``--print-tools`` as well).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from agentkit import Settings, Toolset
from agentkit.adapters.voice import client_tool_configs, register_voice_tools
from agentkit.connect import connect


async def main(text_mode: bool, allow_destructive: bool = False) -> int:
    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import AsyncConversation

    settings = Settings()
    if not settings.elevenlabs_agent_id:
        print("Set ELEVENLABS_AGENT_ID (see the docstring of this file).", file=sys.stderr)
        return 2
    api_key = settings.elevenlabs_api_key
    client = ElevenLabs(api_key=api_key.get_secret_value() if api_key else None)

    async with connect(settings) as conn:
        # registered from this loop: tool calls are sent back to it from the SDK's thread
        client_tools = register_voice_tools(
            conn.toolset,
            max_chars=settings.voice_max_chars,
            allow_destructive=allow_destructive,
        )
        audio = None
        if not text_mode:
            from elevenlabs.conversational_ai.default_audio_interface import (
                AsyncDefaultAudioInterface,
            )

            audio = AsyncDefaultAudioInterface()

        async def said(text: str) -> None:
            print(f"agent: {text}")

        async def heard(text: str) -> None:
            print(f"you:   {text}")

        conversation = AsyncConversation(
            client,
            settings.elevenlabs_agent_id,
            requires_auth=api_key is not None,
            audio_interface=audio,
            client_tools=client_tools,
            callback_agent_response=said,
            callback_user_transcript=heard,
        )
        await conversation.start_session()
        try:
            if text_mode:
                loop = asyncio.get_running_loop()
                while line := await loop.run_in_executor(None, sys.stdin.readline):
                    if line.strip():
                        await conversation.send_user_message(line.strip())
            else:
                print("Listening. Ctrl+C to stop.")
                await conversation.wait_for_session_end()
        finally:
            await conversation.end_session()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", action="store_true", help="type instead of speaking")
    parser.add_argument(
        "--print-tools",
        action="store_true",
        help="print the client-tool definitions to add to the ElevenLabs agent, then exit",
    )
    parser.add_argument(
        "--allow-destructive",
        action="store_true",
        help="also offer destructive tools (stop, push, delete): voice cannot ask for approval",
    )
    args = parser.parse_args()
    if args.print_tools:
        from agentkit.connect import default_tools

        configs = client_tool_configs(
            Toolset(default_tools()), allow_destructive=args.allow_destructive
        )
        print(json.dumps(configs, indent=2))
        sys.exit(0)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.text, args.allow_destructive)))
