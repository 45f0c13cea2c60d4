"""The full story through the agent loop, with every part real except the two models:

the scripted outer model drives ``ToolBasedAgent``: create_workspace (GitHub repository created
through the REST client, answered by an httpx MockTransport whose clone URL is the token-demanding
smart-HTTP git server) -> spawn_claude_agent (the real Claude Code CLI in the real image, driven
by a second scripted server, writes a file) -> delete_workspace while it runs (refused) ->
wait_for_claude_agent -> push_workspace -> the bare remote has the commit.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from agentkit.agent.loop import ToolBasedAgent
from agentkit.config import Settings
from agentkit.connect import default_tools
from agentkit.containers.service import AgentService
from agentkit.executors.base import Executor
from agentkit.redact import Redactor
from agentkit.testing import ScriptedAnthropicServer, reply
from agentkit.testing.scripts import ClaudeCodeScript
from agentkit.testing.server import RecordedRequest
from agentkit.tools.base import ToolContext
from agentkit.tools.toolset import Toolset
from agentkit.workspaces.service import WorkspaceService
from tests.containers_support import (
    bridge_gateway,
    host_cmdlines,
)
from tests.gitserver import GitHTTPServer, git_available
from tests.support import require

pytestmark = [
    pytest.mark.docker,
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.usefixtures("agent_cleanup"),
]

TOKEN = "tok-story-" + secrets.token_hex(16)
CONTENT = "print('hello from the agent')\n"


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    require(git_available(), "git")
    with GitHTTPServer(tmp_path / "srv", token=TOKEN) as srv:
        yield srv


def fake_github(server: GitHTTPServer, seen: list[dict[str, Any]]) -> httpx.AsyncClient:
    """GitHub's ``POST /user/repos``: makes an empty bare repository on the git server."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(
            {"path": request.url.path, "body": body, "auth": request.headers["authorization"]}
        )
        full_name = f"me/{body['name']}"
        server.create_repo(full_name, files={})
        return httpx.Response(
            201,
            json={
                "full_name": full_name,
                "private": body["private"],
                "visibility": "private" if body["private"] else "public",
                "clone_url": server.url(full_name),
                "html_url": f"{server.origin}/{full_name}",
            },
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def last_tool_result(request: RecordedRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") != "user" or not isinstance(message.get("content"), list):
            continue
        for blk in message["content"]:
            if blk.get("type") == "tool_result":
                content = blk.get("content")
                if isinstance(content, list):
                    return " ".join(c.get("text", "") for c in content if isinstance(c, dict))
                return str(content)
    return ""


def outer_model(request: RecordedRequest) -> Any:
    """The orchestrating model: one tool per turn, reading the container id from a result."""
    turn = sum(1 for m in request.messages if m.get("role") == "assistant")
    previous = last_tool_result(request)
    if turn == 0:
        return reply.tool_use(
            "create_workspace", {"workspace_name": "story", "create_github_repo": True}
        )
    if turn == 1:
        return reply.tool_use(
            "spawn_claude_agent",
            {"task": "Create hello.py", "workspace_path": "story", "timeout": 180000},
        )
    agent_id = re.findall(r"claude-agent-\d+-[0-9a-z]+", json.dumps(request.messages))
    if turn == 2:
        return reply.tool_use("delete_workspace", {"workspace_name": "story"})
    if turn == 3:
        assert "in use" in previous, previous
        return reply.tool_use(
            "wait_for_claude_agent", {"container_id": agent_id[0], "timeout": 180000}
        )
    if turn == 4:
        return reply.tool_use(
            "push_workspace",
            {"workspace_name": "story", "commit_message": "Add hello.py from the agent"},
        )
    return reply.text("Pushed the agent's work.")


async def test_create_spawn_wait_push_through_the_agent_loop(
    agent_image: str,
    host: tuple[Executor, Callable[..., Settings]],
    git_server: GitHTTPServer,
) -> None:
    executor, make_settings = host
    key = "sk-ant-story-" + secrets.token_hex(16)
    inner = ClaudeCodeScript(
        [
            # delayed: the agent is still running when the outer model tries to delete
            reply.tool_use(
                "Write", {"file_path": "/workspace/hello.py", "content": CONTENT}
            ).delayed(3.0),
            reply.text("Wrote hello.py."),
        ]
    )
    gateway = await bridge_gateway()
    github_calls: list[dict[str, Any]] = []
    async with (
        ScriptedAnthropicServer(inner, host="0.0.0.0") as claude_code_api,
        ScriptedAnthropicServer(outer_model) as outer_api,
        fake_github(git_server, github_calls) as github_http,
    ):
        settings = make_settings(
            image=agent_image,
            anthropic_api_key=key,
            anthropic_base_url=claude_code_api.url_for(gateway),
            container_memory="2g",
            github_token=TOKEN,
            github_url=git_server.origin,
            github_api_url="https://api.github.invalid",
            git_author_name="Story Bot",
            git_author_email="story@example.invalid",
        )
        async with AgentService(executor, settings) as agents:
            workspaces = WorkspaceService(
                executor,
                settings,
                busy=agents.active_workspaces,
                http_client=github_http,
                runtime=agents.runtime,
            )
            toolset = Toolset(
                default_tools(),
                context=ToolContext(
                    settings=settings,
                    executor=executor,
                    agents=agents,
                    workspaces=workspaces,
                    redactor=Redactor(settings.secrets()),
                ),
            )
            agent = ToolBasedAgent(
                toolset,
                client=anthropic.AsyncAnthropic(base_url=outer_api.url, api_key="outer-test"),
                model="claude-test",
                max_retries=0,
                max_turns=10,
            )
            result = await agent.run("Start a project, have an agent write hello.py, push it.")

            assert result.text == "Pushed the agent's work.", result.text
            results = [
                blk
                for m in result.messages
                if m["role"] == "user" and isinstance(m["content"], list)
                for blk in m["content"]
                if blk.get("type") == "tool_result"
            ]
            assert len(results) == 5
            errors = [bool(r.get("is_error")) for r in results]
            assert errors == [False, False, True, False, False], results
            transcript = json.dumps(result.messages)
            assert TOKEN not in transcript
            assert key not in transcript
            assert TOKEN not in host_cmdlines()

            # GitHub was asked for a private repository with the token, as a header only.
            assert github_calls == [
                {
                    "path": "/user/repos",
                    "body": {"name": "story", "private": True, "auto_init": False},
                    "auth": f"Bearer {TOKEN}",
                }
            ]
            # The remote has the agent's file in a commit by the configured identity.
            assert git_server.log("me/story") == ["Add hello.py from the agent"]
            assert git_server.show("me/story", "main:hello.py") == CONTENT
            assert any(r.authorized and "receive-pack" in r.path for r in git_server.requests)
            ws = f"{settings.workspaces_root}/story"
            config = (await executor.read_file(f"{ws}/.git/config")).decode()
            assert TOKEN not in config
            assert git_server.url("me/story") in config

            # With the agent finished, the workspace can go.
            await agents.settle()
            deleted = await toolset.call("delete_workspace", {"workspace_name": "story"})
            assert not deleted.is_error, deleted.content
            assert not await executor.exists(ws)
    outer_api.check(consumed=True)
