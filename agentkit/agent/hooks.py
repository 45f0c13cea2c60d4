"""Hooks around tool calls (approval/policy before, observation after) and model usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentkit.agent.events import ToolCall, Usage
from agentkit.tools.base import ToolResult

#: Called before a tool runs. Return a ``ToolResult`` to answer instead of running the tool
#: (a refusal, a cached answer); return ``None`` to let it run.
BeforeTool = Callable[[ToolCall], Awaitable[ToolResult | None]]

#: Called after a tool ran (or was answered by a ``BeforeTool`` hook). Observes only.
AfterTool = Callable[[ToolCall, ToolResult], Awaitable[None]]

#: Called after every model turn with that turn's usage (cost included) and the model name,
#: e.g. to record it in the cost ledger. Its failures are logged, never raised into the run.
OnUsage = Callable[[Usage, str], Awaitable[None]]


def deny_tools(names: set[str], reason: str = "is not allowed here") -> BeforeTool:
    """A ``before_tool`` hook that refuses the named tools with an error result."""

    async def hook(call: ToolCall) -> ToolResult | None:
        if call.name in names:
            return ToolResult.error(f"Tool {call.name} {reason}.")
        return None

    return hook
