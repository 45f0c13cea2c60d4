"""End to end on Docker Swarm: the real Claude Code CLI in the real agent image, run as a swarm
service through the six agent tools, driven by the scripted Anthropic server.

Needs: dockerd as a swarm manager (.ci/swarm-init.sh) and the agent image
(.ci/build-images.sh). One run; it checks the whole path: spawn, live watch, wait, status,
output, list, the file the agent wrote, the record, and that the key never leaks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import Settings
from agentkit.containers.service import AgentService
from agentkit.containers.streamjson import AssistantToolUse, ResultEvent, SessionNotice
from agentkit.errors import NotFoundError
from agentkit.executors.local import LocalExecutor
from agentkit.testing import ScriptedAnthropicServer, reply
from agentkit.testing.scripts import ClaudeCodeScript
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests.containers_support import bridge_gateway
from tests.runtimes_support import remove_labelled, swarm_manager
from tests.support import require

pytestmark = [pytest.mark.docker, pytest.mark.image, pytest.mark.slow]


async def test_claude_code_runs_as_a_swarm_service_end_to_end(
    agent_image: str, tmp_path: Path
) -> None:
    require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    key = "sk-ant-swarm-e2e-" + secrets.token_hex(16)
    content = "print('hello from a swarm agent')\n"
    script = ClaudeCodeScript(
        [
            reply.tool_use("Write", {"file_path": "/workspace/hello.py", "content": content}),
            reply.text("Wrote hello.py on the swarm."),
        ]
    )
    root = str(tmp_path / "root")
    gateway = await bridge_gateway()
    try:
        async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                host=None,
                root=root,
                image=agent_image,
                runtime="swarm",
                anthropic_api_key=key,
                anthropic_base_url=server.url_for(gateway),
                container_memory="2g",
            )
            async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
                toolset = Toolset(
                    container_tools(),
                    context=ToolContext(settings=settings, executor=executor, agents=agents),
                )
                spawned = await toolset.call(
                    "spawn_claude_agent",
                    {"task": "write hello.py", "workspace_path": "swarm-e2e", "timeout": 180000},
                )
                assert not spawned.is_error, spawned.content
                agent_id = spawned.data["id"]
                runtime = await agents.runtime()
                assert runtime.name == "swarm"

                async def watch() -> list[Any]:
                    return [event async for event in agents.watch(agent_id)]

                watcher = asyncio.create_task(watch())
                waited = await toolset.call(
                    "wait_for_claude_agent", {"container_id": agent_id, "timeout": 180000}
                )
                assert not waited.is_error, waited.content
                assert waited.data["state"] == "succeeded", waited.content
                assert waited.data["turns"] == 2
                assert waited.data["cost_usd"] > 0
                watched = await asyncio.wait_for(watcher, 30)
                assert any(isinstance(e, AssistantToolUse) and e.name == "Write" for e in watched)
                # the result, then the pushed phase change (answered; input open for the hold)
                assert isinstance(watched[-2], ResultEvent)
                assert isinstance(watched[-1], SessionNotice)
                status = await toolset.call("get_claude_status", {"container_id": agent_id})
                output = await toolset.call("get_claude_output", {"container_id": agent_id})
                listing = await toolset.call("list_claude_agents", {})
                assert "succeeded" in status.content
                assert "tool Write: file_path=/workspace/hello.py" in output.content
                assert agent_id in listing.content
                workspace = spawned.data["workspace"]
                assert await executor.read_file(f"{workspace}/hello.py") == content.encode()
                for result in (spawned, waited, status, output, listing):
                    assert key not in result.content
                    assert key not in json.dumps(result.data, default=str)
                await agents.settle()
                with pytest.raises(NotFoundError):  # the service is removed once recorded
                    await runtime.inspect(agent_id)
                record = await agents.store.read_result(agent_id)
                assert record is not None
                assert (record["runtime"], record["exit_reason"]) == ("swarm", "exited")
                assert key.encode() not in await agents.store.read_output(agent_id)
    finally:
        await remove_labelled({"agentkit.managed-by": "agentkit", "agentkit.root": root})
