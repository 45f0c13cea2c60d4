"""The three session tools: continue a finished agent, message a running one, answer its
approval requests. Thin, like the other agent tools (``agentkit/containers/sessions.py`` holds
the logic)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agentkit.containers.launch import MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from agentkit.tools.base import Tool, ToolContext, ToolResult, tool
from agentkit.tools.containers import _duration, _status_text

__all__ = [
    "approve_claude_agent",
    "continue_claude_agent",
    "send_to_claude_agent",
    "session_tools",
]


@tool
async def continue_claude_agent(
    ctx: ToolContext,
    container_id: str,
    message: str,
    timeout: Annotated[  # noqa: ASYNC109 - public parameter name
        int, Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)
    ] = 600000,
) -> ToolResult:
    """Continue a finished agent: a new agent on the same workspace resumes its Claude Code
    session (it remembers the whole earlier conversation) and works on your message. Works
    after the first agent's container is gone. Returns the new agent's id.

    Args:
        container_id: the finished agent to continue (claude-agent-<ms>-<suffix>).
        message: what to do next, as you would say it to the same agent.
        timeout: deadline of the new run in milliseconds (default 600000 = 10 minutes).
    """
    status = await ctx.require_agents().continue_(container_id, message, timeout)
    return ToolResult(
        f"Continued agent {container_id} as {status.id} in {status.workspace} (deadline in "
        f"{_duration(timeout / 1000)}). Use wait_for_claude_agent with {status.id}.",
        data=status.to_dict(),
    )


@tool
async def send_to_claude_agent(
    ctx: ToolContext, container_id: str, message: str, interrupt: bool = False
) -> ToolResult:
    """Send a message to a running agent. It takes the message when its current turn ends
    (or at once with interrupt=true, which stops what it is doing first).

    Args:
        container_id: a running agent's id.
        message: what to tell the agent.
        interrupt: stop the agent's current work first (default false).
    """
    status = await ctx.require_agents().send(container_id, message, interrupt=interrupt)
    return ToolResult(
        ("Interrupted and sent" if interrupt else "Sent")
        + " the message.\n"
        + _status_text(status, detail=False),
        data=status.to_dict(),
    )


# destructive: adapters that ask people before such tools (Discord, chat) confirm it, and voice
# leaves it out - a model must not approve its own agent's risky actions unasked
@tool(destructive=True)
async def approve_claude_agent(
    ctx: ToolContext,
    container_id: str,
    request_id: str,
    approve: bool,
    reason: str | None = None,
) -> ToolResult:
    """Answer a running agent's approval request (get_claude_status lists them): approve lets
    the tool call run; otherwise it is denied and the agent is told the reason.

    Args:
        container_id: the agent's id.
        request_id: the approval request's id from get_claude_status.
        approve: true to allow the tool call, false to deny it.
        reason: optional, told to the agent when denying.
    """
    status = await ctx.require_agents().answer(container_id, request_id, approve, reason)
    verb = "Approved" if approve else "Denied"
    return ToolResult(
        f"{verb} request {request_id}.\n" + _status_text(status, detail=False),
        data=status.to_dict(),
    )


def session_tools() -> list[Tool[Any]]:
    """The three session tools, in their public order."""
    return [continue_claude_agent, send_to_claude_agent, approve_claude_agent]
