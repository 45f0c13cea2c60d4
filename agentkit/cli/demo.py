"""``agentkit demo``: the whole path offline, on the local executor.

One scripted Anthropic-compatible server plays two models: the *controller* (our
``ToolBasedAgent``, which calls ``create_workspace``, ``spawn_claude_agent`` and
``wait_for_claude_agent``) and the *agent* (the real Claude Code CLI in a container, which uses
its ``Write`` tool). Nothing leaves the machine; no API key is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from agentkit.agent.events import RunFinished, ToolCall
from agentkit.cli.render import EventRenderer
from agentkit.config import Settings, load_settings
from agentkit.errors import RuntimeUnavailable
from agentkit.testing import ScriptedAnthropicServer, scripts
from agentkit.testing import replies as reply
from agentkit.testing.replies import Reply
from agentkit.testing.server import RecordedRequest
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.connect import Connection

PROGRAM = '''"""Written by a Claude Code agent that agentkit ran in a container."""


def fizzbuzz(n: int) -> str:
    if n % 15 == 0:
        return "FizzBuzz"
    if n % 3 == 0:
        return "Fizz"
    if n % 5 == 0:
        return "Buzz"
    return str(n)


if __name__ == "__main__":
    print(" ".join(fizzbuzz(i) for i in range(1, 16)))
'''
TASK = "Write fizzbuzz.py in the workspace: print FizzBuzz for 1..15 on one line."
ID_RE = re.compile(r"claude-agent-\d{13}-[a-z0-9]{6}")

console = Console(highlight=False)


class ControllerScript:
    """The controller model's side of the demo, decided from the conversation so far."""

    def __init__(self, workspace: str) -> None:
        self.workspace = workspace

    def __call__(self, request: RecordedRequest) -> Reply | None:
        if "spawn_claude_agent" not in request.tool_names:
            return None
        turn = sum(1 for m in request.messages if m.get("role") == "assistant")
        results = request.tool_results()
        last = _text(results[-1]) if results else ""
        if turn == 0:
            return reply.text(f"I'll make a fresh workspace, {self.workspace}.") + reply.tool_use(
                "create_workspace", {"workspace_name": self.workspace}
            )
        if turn == 1:
            return reply.text("Now a Claude Code agent can write the program.") + reply.tool_use(
                "spawn_claude_agent",
                {"task": TASK, "workspace_path": self.workspace, "timeout": 300_000},
            )
        if turn == 2:
            found = ID_RE.search(last)
            if not found:
                return reply.text(f"The agent did not start: {last}")
            return reply.tool_use(
                "wait_for_claude_agent", {"container_id": found.group(0), "timeout": 300_000}
            )
        return reply.text(f"Done. The agent reported:\n{last}")


def _text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def _router(controller: ControllerScript, agent: scripts.ClaudeCodeScript) -> Any:
    def route(request: RecordedRequest) -> Reply | None:
        return controller(request) or agent(request)

    return route


async def _bridge_gateway(settings: Settings) -> str:
    from agentkit.executors import make_executor
    from agentkit.runtimes.docker_engine import open_docker

    async with make_executor(settings) as executor:
        docker = await open_docker(executor, settings)
        try:
            network = await docker.networks.get("bridge")
            data = await network.show()
        finally:
            await docker.close()
    for cfg in data.get("IPAM", {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    return "172.17.0.1"


async def demo(args: argparse.Namespace) -> int:
    base = load_settings()
    workspace = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"

    def say(text: str) -> None:
        if not args.as_json:
            console.print(text, soft_wrap=True)

    say("[bold]agentkit demo[/] — offline: scripted model, real container, real Claude Code\n")
    probe = base.model_copy(update={"host": None})
    try:
        gateway = await _bridge_gateway(probe)
    except RuntimeUnavailable as exc:
        console.print(f"[red]Docker is not available:[/] {exc}")
        console.print(
            "Get one: `apt-get install docker.io && dockerd &` (or `systemctl start docker`), "
            "or run `bash scripts/setup.sh` from the repository. Then `agentkit doctor`."
        )
        return 1
    agent_script = scripts.write_file("/workspace/fizzbuzz.py", PROGRAM, "Wrote fizzbuzz.py.")
    controller = ControllerScript(workspace)
    async with ScriptedAnthropicServer(
        _router(controller, agent_script),
        host="0.0.0.0",  # noqa: S104 - containers reach it
    ) as server:
        settings = base.model_copy(
            update={
                "host": None,
                "anthropic_api_key": SecretStr("demo-key-not-secret"),
                "anthropic_base_url": server.url_for(gateway),
                "container_env_passthrough": ["ANTHROPIC_BASE_URL"],
            }
        )
        say(f"[dim]scripted model server: {server.url} (containers: {server.url_for(gateway)})[/]")
        say("[dim]the image is built on first use; that takes a few minutes once[/]\n")
        from agentkit.connect import connect

        renderer = EventRenderer(as_json=args.as_json)
        finished = False
        async with connect(settings) as conn:
            followers: list[asyncio.Task[None]] = []

            async def follow_spawned(call: ToolCall, result: ToolResult) -> None:
                # Show what Claude Code does inside its container while the controller waits.
                if call.name == "spawn_claude_agent" and isinstance(result.data, dict):
                    agent_id = str(result.data.get("id", ""))
                    if agent_id and not args.as_json:
                        followers.append(asyncio.create_task(_follow(conn, agent_id)))

            agent = conn.agent(max_turns=8, after_tool=follow_spawned)
            try:
                async for event in agent.stream("Show me agentkit working end to end."):
                    renderer(event)
                    finished = finished or isinstance(event, RunFinished)
            finally:
                renderer.close()
                if followers:  # let them print the agent's last events, then stop them
                    await asyncio.wait(followers, timeout=5)
                for task in followers:
                    task.cancel()
                await asyncio.gather(*followers, return_exceptions=True)
            path = f"{settings.workspaces_root}/{workspace}/fizzbuzz.py"
            exists = await conn.executor.exists(path)
            if exists and not args.as_json:
                content = (await conn.executor.read_file(path)).decode()
                console.print(f"\n[green]The agent wrote[/] {path}:\n")
                console.print(content, markup=False)
            if args.clean:
                await conn.toolset.call("delete_workspace", {"workspace_name": workspace})
            elif exists and not args.as_json:
                console.print(f"[dim]run it: python3 {path}   (`--clean` removes the workspace)[/]")
    ok = finished and exists
    if not ok:
        console.print("[red]The demo did not complete; run `agentkit doctor`.[/]")
    return 0 if ok else 1


async def _follow(conn: Connection, agent_id: str) -> None:
    """Print the agent's stream-json events, rendered, as they arrive (until it finishes)."""
    from agentkit.containers.streamjson import render_event

    async for event in conn.agents.watch(agent_id):
        text = render_event(event)
        for line in (text or "").splitlines():
            if line.strip():
                console.print(f"  [magenta]│[/] {escape(line)}", soft_wrap=True)
