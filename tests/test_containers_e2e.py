"""End to end: the real Claude Code CLI in the real agent image on a real dockerd, driven by the
scripted Anthropic server, through both executors (local and SSH over a real sshd).

Needs: dockerd on /var/run/docker.sock, the image ``AGENTKIT_IMAGE`` (default
agentflow-claude-code:latest, built by .ci/build-images.sh), /usr/sbin/sshd for the SSH cases.
Each container run costs seconds, so the scenarios are few and each checks several things.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agentkit.config import Settings
from agentkit.containers.service import AgentService, AgentState
from agentkit.containers.streamjson import AssistantToolUse, ResultEvent, SessionNotice
from agentkit.errors import NotFoundError
from agentkit.executors.base import Executor
from agentkit.executors.local import LocalExecutor
from agentkit.testing import RecordedRequest, ScriptedAnthropicServer, reply
from agentkit.testing.replies import Reply
from agentkit.testing.scripts import ClaudeCodeScript, is_side_request
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests.containers_support import DOCKER_SOCKET, bridge_gateway, host_cmdlines
from tests.support import wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.usefixtures("agent_cleanup"),
]

HOSTILE_TASK = (
    "--help -p $(touch /tmp/pwned) `id` ; rm -rf / && echo \"double\" 'single' \\back\\slash\n"
    "second line\twith tab | cat > /etc/passwd; ünïcödé 🚀 %s %n {x} ${HOME} $$ !! *"
)


def _texts(request_json: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for message in request_json.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(b.get("text", "") for b in content if isinstance(b, dict))
    return out


async def test_agent_writes_a_file_end_to_end(
    agent_image: str, host: tuple[Executor, Callable[..., Settings]]
) -> None:
    executor, make_settings = host
    key = "sk-ant-e2e-" + secrets.token_hex(16)
    content = "print('hello from the agent')\n"
    script = ClaudeCodeScript(
        [
            reply.tool_use("Write", {"file_path": "/workspace/hello.py", "content": content}),
            reply.text("Wrote hello.py as asked."),
        ]
    )
    # The first turn is held until the test has looked at every argv on the host while Claude
    # Code is surely running (it is waiting for this answer).
    first_turn, release = asyncio.Event(), asyncio.Event()

    async def held(request: RecordedRequest) -> Reply | None:
        answer = script(request)
        if not is_side_request(request) and not first_turn.is_set():
            first_turn.set()
            await asyncio.wait_for(release.wait(), 120)
        return answer

    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(held, host="0.0.0.0") as server:
        settings = make_settings(
            image=agent_image,
            anthropic_api_key=key,
            anthropic_base_url=server.url_for(gateway),
            container_memory="2g",
        )
        async with AgentService(executor, settings) as agents:
            # no redactor in the context on purpose: the service itself must not leak the key
            toolset = Toolset(
                container_tools(),
                context=ToolContext(settings=settings, executor=executor, agents=agents),
            )
            results = []
            spawned = await toolset.call(
                "spawn_claude_agent",
                {"task": HOSTILE_TASK, "workspace_path": "e2e", "timeout": 180000},
            )
            results.append(spawned)
            assert not spawned.is_error, spawned.content
            agent_id = spawned.data["id"]
            workspace = spawned.data["workspace"]

            async def watch() -> list[Any]:
                return [event async for event in agents.watch(agent_id)]

            watcher = asyncio.create_task(watch())  # live progress, ends with the agent
            assert workspace == f"{settings.workspaces_root}/e2e"

            # the container, as the engine sees it: hardened, only the workspace mounted
            runtime = await agents.runtime()
            docker = runtime.docker  # type: ignore[attr-defined]
            raw = await docker._query_json(f"containers/{agent_id}/json")  # the engine's own
            assert "Env" not in (await runtime.inspect(agent_id)).raw["Config"]  # agentkit's
            hc = raw["HostConfig"]
            assert raw["Config"]["User"] == "1001:1001"
            assert raw["Config"]["OpenStdin"] is True  # session mode: messages arrive on stdin
            assert raw["Config"]["Labels"]["agentkit.managed-by"] == "agentkit"
            assert hc["Init"] is True
            assert hc["CapDrop"] == ["ALL"]
            assert hc["SecurityOpt"] == ["no-new-privileges"]
            assert hc["PidsLimit"] == settings.container_pids
            assert hc["Memory"] == 2 << 30
            assert hc["NanoCpus"] == int(settings.container_cpus * 1e9)
            # the workspace, and read-only the run's two gateway sockets (no network at all)
            mounts = sorted((m["Source"], m["Destination"], m["RW"]) for m in raw["Mounts"])
            assert mounts == sorted(
                [
                    (f"{settings.root}/gateway/runs/{agent_id}", "/run/agentkit-gateway", False),
                    (workspace, "/workspace", True),
                ]
            )
            assert hc["NetworkMode"] == "none"
            assert not hc.get("Binds")
            # behind the gateway the real key is nowhere in the container: a per-run token is
            env = raw["Config"]["Env"]
            assert not any(key in item for item in env)
            assert any(item.startswith("ANTHROPIC_API_KEY=agentkit-run-") for item in env)
            await asyncio.wait_for(first_turn.wait(), 120)  # Claude Code is up and asking
            assert key not in host_cmdlines()
            release.set()

            waited = await toolset.call(
                "wait_for_claude_agent", {"container_id": agent_id, "timeout": 180000}
            )
            results.append(waited)
            assert not waited.is_error, waited.content
            assert waited.data["state"] == "succeeded", waited.content
            assert waited.data["wait_timed_out"] is False
            assert waited.data["turns"] == 2
            assert waited.data["cost_usd"] > 0
            assert waited.data["session_id"]
            assert "Wrote hello.py as asked." in waited.content

            watched = await asyncio.wait_for(watcher, 30)
            assert any(isinstance(e, AssistantToolUse) and e.name == "Write" for e in watched)
            # the result, then the pushed phase change: answered, input open for the hold
            assert isinstance(watched[-2], ResultEvent)
            assert isinstance(watched[-1], SessionNotice)
            assert (watched[-1].phase, watched[-1].waiting_for) == ("waiting", "message")
            status = await toolset.call("get_claude_status", {"container_id": agent_id})
            output = await toolset.call("get_claude_output", {"container_id": agent_id})
            listing = await toolset.call("list_claude_agents", {})
            results += [status, output, listing]
            assert "succeeded" in status.content
            assert "session id" in status.content.lower()
            assert "tool Write: file_path=/workspace/hello.py" in output.content
            assert '"type"' not in output.content  # rendered, not raw JSON
            assert agent_id in listing.content
            assert await executor.read_file(f"{workspace}/hello.py") == content.encode()

            # the hostile task arrived byte-exact in Claude Code's prompt
            first = script.main_requests[0].json
            assert any(HOSTILE_TASK in text for text in _texts(first)), _texts(first)[:3]
            for result in results:
                assert key not in result.content
                assert key not in json.dumps(result.data, default=str)

            # finished containers are removed once their output is safe in the record
            await agents.settle()
            with pytest.raises(NotFoundError):
                await runtime.inspect(agent_id)
            record = await executor.read_file(f"{settings.runs_root}/{agent_id}/output.jsonl")
            assert b'"tool_use"' in record
            assert key.encode() not in record

        # a new controller reads everything from the record
        async with AgentService(executor, settings) as again:
            status2 = await again.status(agent_id)
            assert status2.state == AgentState.SUCCEEDED
            assert status2.turns == 2
            out2 = await again.output(agent_id, lines=10)
            assert "tool Write" in out2.text
            replay = [event async for event in again.watch(agent_id)]
            # the record replays what the agent printed; phase changes were pushed live only
            printed = [e for e in watched if not isinstance(e, SessionNotice)]
            assert [type(e) for e in replay] == [type(e) for e in printed]
            assert [e.kind for e in watched if isinstance(e, SessionNotice)] == ["waiting"]
            waited2 = await again.wait(agent_id, 1000)
            assert waited2.timed_out is False
            assert waited2.status.session_id == waited.data["session_id"]
            assert agent_id in [a.id for a in await again.list()]
            assert workspace not in await again.active_workspaces()
    server.check(consumed=True)


async def test_deadline_holds_across_controller_restarts(agent_image: str, tmp_path: Path) -> None:
    """A slow model: agent A passes its deadline while no controller runs (the in-container
    `timeout` ends it, reconcile records it); agent B is followed by a new controller."""
    script = ClaudeCodeScript([], side_reply=reply.text("ok"))
    gateway = await bridge_gateway()
    slow = reply.text("too late").delayed(300)
    async with ScriptedAnthropicServer(
        script,
        host="0.0.0.0",
        default=slow,
    ) as server:
        settings = Settings(
            host=None,
            root=str(tmp_path / "root"),
            image=agent_image,
            anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
            anthropic_base_url=server.url_for(gateway),
        )
        async with LocalExecutor() as executor:
            first = AgentService(executor, settings)
            a = await first.spawn("think slowly", "slow-a", 3000)
            # B's deadline leaves room for A's exit and a new controller's start on a busy
            # machine: it must still be running when the second controller looks
            b = await first.spawn("think slowly too", "slow-b", 25_000)
            await first.aclose()  # the controller goes away; the agents keep running
            # A ends by itself (the in-container `timeout`) while no controller runs: wait for
            # the engine to report its exit before a new controller looks at it.
            async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
                exited = await docker.containers.container(a.id).wait(timeout=120)
            assert exited["StatusCode"] == 124
            async with AgentService(executor, settings) as second:
                report = await second.reconcile()
                assert report["followed"] >= 1
                sa = await second.status(a.id)
                assert sa.state == AgentState.TIMED_OUT, sa
                assert sa.exit_code == 124  # enforced inside the container
                waited = await second.wait(b.id, 90_000)
                assert waited.timed_out is False
                assert waited.status.state == AgentState.TIMED_OUT
                assert waited.status.finished_at is not None
                # ended by its deadline, not by the model's answer 300 s later
                assert waited.status.finished_at <= (b.deadline or 0) + 60
                runtime = await second.runtime()
                await second.settle()
                for agent_id in (a.id, b.id):
                    with pytest.raises(NotFoundError):
                        await runtime.inspect(agent_id)


async def test_stop_ends_the_agent_by_sigterm_and_is_recorded(
    agent_image: str, tmp_path: Path
) -> None:
    gateway = await bridge_gateway()
    slow = reply.text("too late").delayed(300)
    async with ScriptedAnthropicServer(
        ClaudeCodeScript([]),
        host="0.0.0.0",
        default=slow,
    ) as server:
        settings = Settings(
            host=None,
            root=str(tmp_path / "root"),
            image=agent_image,
            anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
            anthropic_base_url=server.url_for(gateway),
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            spawned = await agents.spawn("wait for the model", "stopme", 120_000)
            # Claude Code is up: its first model request (answered only after 300 s) arrived
            await wait_until(lambda: server.message_requests, "Claude Code's first request")
            assert (await agents.status(spawned.id)).state == AgentState.RUNNING
            stopped = await agents.stop(spawned.id)
            assert stopped.state == AgentState.STOPPED
            # init forwarded SIGTERM and Claude Code ended on it (143), before the SIGKILL (137)
            # that follows an ignored SIGTERM
            assert stopped.exit_code == 143, stopped
            again = await agents.stop(spawned.id)  # stopping a finished agent changes nothing
            assert again.state == AgentState.STOPPED
            waited = await agents.wait(spawned.id, 0)
            assert waited.status.state == AgentState.STOPPED
