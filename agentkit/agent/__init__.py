"""agentkit.agent: the tool loop (:class:`ToolBasedAgent`), its events, hooks and conversations."""

from agentkit.agent.conversation import Conversation
from agentkit.agent.events import (
    AgentEvent,
    ErrorEvent,
    ModelText,
    RunFinished,
    RunResult,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    Usage,
)
from agentkit.agent.hooks import AfterTool, BeforeTool, deny_tools
from agentkit.agent.loop import DEFAULT_MODEL, Prompt, ToolBasedAgent

__all__ = [
    "DEFAULT_MODEL",
    "AfterTool",
    "AgentEvent",
    "BeforeTool",
    "Conversation",
    "ErrorEvent",
    "ModelText",
    "Prompt",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "TextDelta",
    "ToolBasedAgent",
    "ToolCall",
    "ToolCallEvent",
    "ToolResultEvent",
    "TurnFinished",
    "Usage",
    "deny_tools",
]
