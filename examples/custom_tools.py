"""Your own tools next to agentkit's, tested offline with the scripted model server.

python examples/custom_tools.py
"""

from __future__ import annotations

import asyncio

from anthropic import AsyncAnthropic

from agentkit import ToolBasedAgent, Toolset, tool
from agentkit.testing import ScriptedAnthropicServer, reply


@tool
async def word_count(text: str) -> str:
    """Count the words in a text.

    Args:
        text: the text to count.
    """
    return str(len(text.split()))


async def main() -> None:
    script = [
        reply.tool_use("word_count", {"text": "the quick brown fox"}),
        reply.text("It has 4 words."),
    ]
    async with ScriptedAnthropicServer(script) as server:
        client = AsyncAnthropic(base_url=server.url, api_key="test")
        agent = ToolBasedAgent(Toolset([word_count]), client=client)
        result = await agent.run("How many words in 'the quick brown fox'?")
    print(result.text)
    print(server.message_requests[1].tool_results()[0]["content"])


if __name__ == "__main__":
    asyncio.run(main())
