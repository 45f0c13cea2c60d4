"""agentkit: let Claude drive Claude Code agents in hardened containers, locally or over SSH."""

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
from agentkit.config import Settings
from agentkit.tools.base import Tool, ToolContext, ToolResult, tool
from agentkit.tools.toolset import Toolset

__all__ = [
    "AgentEvent",
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
    "tool",
]
__version__ = "0.1.0"
