"""agentkit: let Claude drive Claude Code agents in hardened containers, locally or over SSH.

The public surface::

    from agentkit import ToolBasedAgent, Tool, tool, Toolset, ToolResult, Settings, connect

Heavy modules (the anthropic SDK, Docker and SSH clients) load on first use, so importing
``agentkit`` — and starting the ``agentkit`` command — stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkit.config import Settings

# Bound eagerly, not lazily: importing the submodule ``agentkit.connect`` (as the CLI and serve
# do) sets the package attribute ``connect`` to that module, which a lazy ``__getattr__`` would
# never get to replace. This import binds the function after the submodule is loaded.
from agentkit.connect import Connection, connect
from agentkit.tools.base import Tool, ToolContext, ToolResult, tool
from agentkit.tools.toolset import Toolset

if TYPE_CHECKING:
    from agentkit.agent import (
        AgentEvent,
        Conversation,
        ErrorEvent,
        ModelText,
        RunFinished,
        RunResult,
        RunStarted,
        TextDelta,
        ToolBasedAgent,
        ToolCall,
        ToolCallEvent,
        ToolResultEvent,
        TurnFinished,
        Usage,
    )

_LAZY = {
    "ToolBasedAgent": "agentkit.agent.loop",
    "Conversation": "agentkit.agent.conversation",
    **{
        name: "agentkit.agent.events"
        for name in (
            "AgentEvent",
            "ErrorEvent",
            "ModelText",
            "RunFinished",
            "RunResult",
            "RunStarted",
            "TextDelta",
            "ToolCall",
            "ToolCallEvent",
            "ToolResultEvent",
            "TurnFinished",
            "Usage",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentEvent",
    "Connection",
    "Conversation",
    "ErrorEvent",
    "ModelText",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "Settings",
    "TextDelta",
    "Tool",
    "ToolBasedAgent",
    "ToolCall",
    "ToolCallEvent",
    "ToolContext",
    "ToolResult",
    "ToolResultEvent",
    "Toolset",
    "TurnFinished",
    "Usage",
    "connect",
    "tool",
]
__version__ = "0.1.0"
