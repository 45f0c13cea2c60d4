"""agentkit.testing: test your agent app offline against a scripted Anthropic Messages API.

::

    from agentkit.testing import ScriptedAnthropicServer, reply

    script = [reply.tool_use("echo", {"text": "hi"}), reply.text("done")]
    async with ScriptedAnthropicServer(script) as srv:
        agent = ToolBasedAgent(toolset, client=AsyncAnthropic(base_url=srv.url, api_key="test"))
        result = await agent.run("say hi")

See ``docs/testing.md``. :mod:`agentkit.testing.scripts` holds ready-made Claude Code scripts.
"""

from agentkit.testing import replies as reply
from agentkit.testing import scripts
from agentkit.testing.replies import Reply
from agentkit.testing.server import (
    Handler,
    RecordedRequest,
    ScriptedAnthropicServer,
)

__all__ = [
    "Handler",
    "RecordedRequest",
    "Reply",
    "ScriptedAnthropicServer",
    "reply",
    "scripts",
]
