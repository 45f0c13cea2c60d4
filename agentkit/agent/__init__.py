"""agentkit.agent: the tool loop (:class:`ToolBasedAgent`), its events, hooks and conversations."""

from typing import TYPE_CHECKING, Any

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
from agentkit.config import DEFAULT_MODEL

if TYPE_CHECKING:
    from agentkit.agent.loop import Prompt, ToolBasedAgent


def __getattr__(name: str) -> Any:
    # The loop pulls in the anthropic SDK (~1 s to import); load it only when asked for.
    if name in ("Prompt", "ToolBasedAgent"):
        from agentkit.agent import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'agentkit.agent' has no attribute {name!r}")


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
