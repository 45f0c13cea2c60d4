"""Drive Claude Code agents from your own code: one prompt, streamed.

ANTHROPIC_API_KEY=... python examples/basic.py "Have an agent add hello.py to workspace hi"
"""

from __future__ import annotations

import asyncio
import sys

import agentkit
from agentkit.agent.events import ModelText, RunFinished, ToolCallEvent, ToolResultEvent


async def main(prompt: str) -> None:
    async with agentkit.connect() as conn:
        agent = conn.agent(system="You manage Claude Code agents. Report results briefly.")
        async for event in agent.stream(prompt):
            if isinstance(event, ModelText):
                print(event.text)
            elif isinstance(event, ToolCallEvent):
                print(f"-> {event.call.name} {event.call.input}")
            elif isinstance(event, ToolResultEvent):
                status = "error" if event.result.is_error else "ok"
                print(f"<- {event.call.name} {status}: {event.result.content[:200]}")
            elif isinstance(event, RunFinished):
                usage = event.result.usage
                print(f"[{event.result.turns} turns, {usage.output_tokens} tokens out]")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "List my workspaces and running agents."))
