"""The six agent tools. Thin: parse args, call one AgentService method, render for the model.

Each result carries ``data=`` (the structured form) for programmatic callers (CLI ``--json``,
MCP structured content); the model reads only ``content``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from agentkit.containers.launch import MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from agentkit.containers.service import AgentState, AgentStatus
from agentkit.tools.base import Tool, ToolContext, ToolResult, tool

MAX_LINES = 2000
MAX_LIST = 500


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_text(status: AgentStatus, *, detail: bool = True) -> str:
    parts = [f"Agent {status.id}: {status.state}"]
    if status.exit_code is not None and status.finished:
        parts.append(f"exit code {status.exit_code}")
    parts.append(f"elapsed {_duration(status.elapsed_s)}")
    if status.turns is not None:
        parts.append(f"{status.turns} turns")
    if status.cost_usd is not None:
        cost = f"cost ${status.cost_usd:.4f}"
        if status.max_cost_usd is not None:
            cost += f" of max ${status.max_cost_usd:.4f}"
        parts.append(cost)
    lines = [", ".join(parts) + "."]
    if status.state == AgentState.RUNNING and status.deadline:
        lines.append(f"Deadline in {_duration(max(status.deadline - time.time(), 0))}.")
    if status.state == AgentState.RUNNING:
        phase = status.phase or "running"
        if status.waiting_for:
            phase += f" (waiting for {'an ' if status.waiting_for == 'approval' else 'a '}"
            phase += f"{status.waiting_for})"
        lines.append(
            f"Phase: {phase}{', STALLED: no event for a long time' if status.stalled else ''}."
        )
        for approval in status.approvals or []:
            shown = _clip(str(approval.get("input")), 300)
            lines.append(
                f"Needs approval {approval.get('id')}: {approval.get('tool')} {shown} "
                "(answer with approve_claude_agent)"
            )
    if status.parent:
        lines.append(f"Continues agent {status.parent}.")
    if detail:
        if status.session_id:
            lines.append(f"Session id: {status.session_id}")
        if status.workspace:
            lines.append(f"Workspace: {status.workspace}")
        if status.task:
            lines.append(f"Task: {_clip(status.task, 200)}")
        if status.result_text:
            lines.append(f"Result: {_clip(status.result_text, 1500)}")
        elif status.last_text:
            lines.append(f"Last message: {_clip(status.last_text, 800)}")
        if status.error and status.state != AgentState.SUCCEEDED:
            lines.append(f"Error: {_clip(status.error, 600)}")
    return "\n".join(lines)


@tool
async def spawn_claude_agent(
    ctx: ToolContext,
    task: str,
    workspace_path: str,
    timeout: Annotated[  # noqa: ASYNC109 - public parameter name
        int, Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)
    ] = 600000,
    max_cost_usd: Annotated[float | None, Field(gt=0)] = None,
    ask_tools: Annotated[list[str], Field(max_length=32)] | None = None,
) -> ToolResult:
    """Start an autonomous Claude Code agent in a sandboxed container to work on a task.

    The agent runs headless with full permissions inside its container, which sees only the
    given workspace (mounted at /workspace). It returns at once with the agent's container id;
    follow it with wait_for_claude_agent (blocks until done), get_claude_status or
    get_claude_output. The agent is stopped automatically at its deadline.

    Args:
        task: complete instructions for the agent, self-contained: it sees nothing of this
            conversation, only the task text and the workspace files.
        workspace_path: a workspace name (see list_workspaces), or the workspace's path
            <workspaces root>/<name> on the agent host; created if missing. Paths deeper
            inside a workspace are refused.
        timeout: deadline in milliseconds, 1000 to 86400000 (default 600000 = 10 minutes).
        max_cost_usd: budget in US dollars for the agent's model requests; once spent, its
            requests are refused and it ends as budget_exceeded (default: the configured one).
        ask_tools: optional permission rules whose tool calls wait for a person's approval
            instead of running free, e.g. ["Bash(git push:*)", "WebFetch"]; the agent then
            shows "needs approval" in get_claude_status (answer with approve_claude_agent).
            Unanswered requests are denied after a while.
    """
    status = await ctx.require_agents().spawn(
        task,
        workspace_path,
        timeout,
        max_cost_usd=max_cost_usd,
        ask_tools=tuple(ask_tools or ()),
    )
    data = status.to_dict()
    paced = ""
    if status.spawn_wait_s:
        data["spawn_wait_s"] = round(status.spawn_wait_s, 3)
        paced = (
            f" It waited {_duration(status.spawn_wait_s)} for a spawn slot: other spawns were "
            "starting (at most AGENTKIT_SPAWN_CONCURRENCY at once)."
        )
    return ToolResult(
        f"Spawned agent {status.id} in {status.workspace} (deadline in "
        f"{_duration(timeout / 1000)}). Use wait_for_claude_agent with this container_id to "
        f"get its result.{paced}",
        data=data,
    )


@tool
async def get_claude_status(ctx: ToolContext, container_id: str) -> ToolResult:
    """Report an agent's state (running, succeeded, failed, timed_out, stopped, oom_killed,
    budget_exceeded),
    exit code, elapsed time, turns, cost in USD, session id and its last message or result.

    Works for running and finished agents, also after the container is gone.

    Args:
        container_id: the id returned by spawn_claude_agent (claude-agent-<ms>-<suffix>).
    """
    status = await ctx.require_agents().status(container_id)
    return ToolResult(_status_text(status), data=status.to_dict())


@tool(truncation_hint="Ask for fewer lines.")
async def get_claude_output(
    ctx: ToolContext,
    container_id: str,
    lines: Annotated[int, Field(ge=1)] = 100,
) -> ToolResult:
    """Show what an agent has done so far: the last events of its session rendered as text
    (what it said, which tools it ran with short inputs, tool errors, the final result).

    Args:
        container_id: the id returned by spawn_claude_agent.
        lines: how many of the most recent events to show, 1 to 2000 (default 100).
    """
    lines = min(lines, MAX_LINES)
    out = await ctx.require_agents().output(container_id, lines)
    header = f"Agent {out.id} ({out.state}), most recent last:"
    body = out.text or "(no output yet)"
    return ToolResult(
        f"{header}\n{body}",
        data={"id": out.id, "state": str(out.state), "events": out.events, "text": out.text},
    )


@tool(destructive=True)
async def stop_claude_agent(ctx: ToolContext, container_id: str) -> ToolResult:
    """Stop a running agent now. Its work so far stays in the workspace and its output stays
    readable; its state becomes "stopped". Stopping a finished agent changes nothing.

    Args:
        container_id: the id returned by spawn_claude_agent.
    """
    status = await ctx.require_agents().stop(container_id)
    text = _status_text(status, detail=False)
    if status.state != AgentState.STOPPED:
        text = f"It had already finished; nothing to stop.\n{text}"
    return ToolResult(text, data=status.to_dict())


ListState = Literal[
    "running",
    "finished",
    "succeeded",
    "failed",
    "timed_out",
    "stopped",
    "oom_killed",
    "lost",
    "budget_exceeded",
]


@tool
async def list_claude_agents(
    ctx: ToolContext,
    state: ListState | None = None,
    workspace: Annotated[str | None, Field(max_length=4096)] = None,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST)] = 20,
    since: Annotated[str | None, Field(max_length=64)] = None,
    cursor: Annotated[str | None, Field(max_length=64)] = None,
) -> ToolResult:
    """List agents on the host, running and finished, newest first, with state, age, cost
    and task. All parameters are optional; a long history comes in pages (get_claude_status
    gives one agent's full record).

    Args:
        state: only agents in this state; "finished" means any end state.
        workspace: only agents that worked in this workspace (name or host path).
        limit: at most this many agents (default 20, at most 500).
        since: only agents started at or after this: an ISO 8601 time
            (2026-01-31T12:00:00Z) or an age such as 30m, 2h, 7d.
        cursor: the next_cursor of the previous call, to get the next (older) page.
    """
    page = await ctx.require_agents().page(
        state=state, workspace=workspace, since=since, limit=limit, cursor=cursor
    )
    agents = page.agents
    data: dict[str, Any] = {
        "agents": [a.summary_dict() for a in agents],
        "next_cursor": page.next_cursor,
        "running": page.running,
        "finished_total": page.finished_total,
    }
    if not agents:
        if cursor or state or workspace or since:
            return ToolResult("No agents match.", data=data)
        return ToolResult("No agents yet. Start one with spawn_claude_agent.", data=data)
    running = sum(1 for a in agents if a.state == AgentState.RUNNING)
    noun = "agent" if len(agents) == 1 else "agents"
    lines = [f"{len(agents)} {noun} ({running} running), newest first:"]
    now = time.time()
    for agent in agents:
        age = _duration(now - agent.created) if agent.created else "?"
        cost = f", ${agent.cost_usd:.4f}" if agent.cost_usd is not None else ""
        shown = str(agent.state)
        if agent.state == AgentState.RUNNING and agent.waiting_for:
            shown += f" (waiting for {agent.waiting_for})"
        if agent.stalled and agent.state == AgentState.RUNNING:
            shown += " (stalled)"
        chain = f" [continues {agent.parent}]" if agent.parent else ""
        lines.append(f"- {agent.id} {shown}, {age} ago{cost}{chain}: {_clip(agent.task, 80)}")
    if page.next_cursor:
        lines.append(f'(more: call again with cursor="{page.next_cursor}")')
    return ToolResult("\n".join(lines), data=data)


@tool
async def wait_for_claude_agent(
    ctx: ToolContext,
    container_id: str,
    timeout: Annotated[int, Field(ge=0, le=MAX_TIMEOUT_MS)] = 600000,  # noqa: ASYNC109
) -> ToolResult:
    """Wait until an agent finishes and return its final result: state, summary text, cost,
    turns and session id. If the wait times out the agent keeps running; wait again or stop it.

    Args:
        container_id: the id returned by spawn_claude_agent.
        timeout: how long to wait in milliseconds (default 600000 = 10 minutes).
    """
    waited = await ctx.require_agents().wait(container_id, timeout)
    status = waited.status
    data = {
        **status.to_dict(),
        "wait_timed_out": waited.timed_out,
        "needs_approval": waited.needs_approval,
    }
    if waited.needs_approval:
        return ToolResult(
            "The agent is waiting for an approval before it can go on.\n"
            + _status_text(status)
            + "\nAsk the user, then answer with approve_claude_agent.",
            data=data,
        )
    if waited.timed_out:
        return ToolResult(
            f"Still running after waiting {_duration(timeout / 1000)}.\n"
            + _status_text(status)
            + "\nWait again, read get_claude_output, or stop_claude_agent.",
            data=data,
        )
    return ToolResult(_status_text(status), data=data)


def container_tools() -> list[Tool[Any]]:
    """The six agent tools, in their public order."""
    return [
        spawn_claude_agent,
        get_claude_status,
        get_claude_output,
        stop_claude_agent,
        list_claude_agents,
        wait_for_claude_agent,
    ]
