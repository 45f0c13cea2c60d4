"""agentkit: let Claude drive Claude Code agents in hardened containers, locally or over SSH."""

from agentkit.config import Settings
from agentkit.tools.base import Tool, ToolContext, ToolResult, tool
from agentkit.tools.toolset import Toolset

__all__ = ["Settings", "Tool", "ToolContext", "ToolResult", "Toolset", "tool"]
__version__ = "0.1.0"
