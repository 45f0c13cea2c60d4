"""Sessions end to end: the real Claude Code CLI in the real agent image (session mode) on a
real dockerd, against the scripted Anthropic server.

Continue after exit and after a controller restart, a message sent mid-run, approvals granted
and denied, a stall, and the bad inputs (continuing a run without a session, sending to a
finished agent, answering a request that is gone).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import Settings
from agentkit.containers.service import AgentService, AgentState
from agentkit.containers.streamjson import (
    AssistantToolUse,
    Event,
    SessionNotice,
    ToolResultEvent,
    UnknownEvent,
)
from agentkit.errors import ConflictError, NotFoundError, ToolError
from agentkit.executors.base import Executor
from agentkit.executors.local import LocalExecutor
from agentkit.testing import ScriptedAnthropicServer, reply
from agentkit.testing.scripts import ClaudeCodeScript
from tests.containers_support import bridge_gateway

pytestmark = [
    pytest.mark.docker,
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.usefixtures("agent_cleanup"),
]

WAIT_MS = 300_000  # generous: under load Claude Code sometimes pauses a minute or more


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    out.append(str(block.get("text") or ""))
                    if block.get("type") == "tool_result":
                        out.append(json.dumps(block.get("content")))
    return out


def _settings(tmp_path: Path, image: str, url: str, **kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        host=None,
        root=str(tmp_path / "root"),
        image=image,
        anthropic_api_key="sk-ant-test-sessions",
        anthropic_base_url=url,
        container_memory="2g",
        **kw,
    )


async def _notices(agents: AgentService, run_id: str) -> AsyncIterator[SessionNotice]:
    async for event in agents.watch(run_id):
        if isinstance(event, SessionNotice):
            yield event


async def _first(stream: AsyncIterator[Event], want: Callable[[Event], bool]) -> Event:
    async with asyncio.timeout(300):
        async for event in stream:
            if want(event):
                return event
    raise AssertionError("the agent ended before the expected event")


async def test_continue_after_exit_and_after_a_controller_restart(
    agent_image: str, host: tuple[Executor, Callable[..., Settings]]
) -> None:
    """Local and over SSH: the transcript moves through the Engine API's archive endpoint."""
    executor, make_settings = host
    script = ClaudeCodeScript(
        [
            reply.text("The secret word is PINEAPPLE-7."),
            reply.text("You asked me to remember PINEAPPLE-7."),
            reply.text("Third run here."),
        ]
    )
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = make_settings(
            image=agent_image,
            anthropic_api_key="sk-ant-test-sessions",
            anthropic_base_url=server.url_for(gateway),
            container_memory="2g",
        )
        async with AgentService(executor, settings) as agents:
            first = await agents.spawn("Remember a secret word: FIRST-TASK-TEXT", "sess", 360_000)
            done = (await agents.wait(first.id, WAIT_MS)).status
            assert done.state == AgentState.SUCCEEDED, done
            assert done.session_id
            await agents.settle()
            assert done.session_saved is True
            # the container is gone: only the record holds the session now
            with pytest.raises(NotFoundError):
                await (await agents.runtime()).inspect(first.id)
            saved = await agents.store.read_session(first.id)
            assert saved is not None
            assert b"FIRST-TASK-TEXT" in saved

            second = await agents.continue_(first.id, "What was the word?", 360_000)
            assert second.parent == first.id
            result = (await agents.wait(second.id, WAIT_MS)).status
            assert result.state == AgentState.SUCCEEDED, result
            assert result.parent == first.id
            await agents.settle()

        # the second run's first request carries the first run's conversation
        first_of_second = script.main_requests[1]
        texts = _texts(first_of_second.messages)
        assert any("FIRST-TASK-TEXT" in t for t in texts)
        assert any("PINEAPPLE-7" in t for t in texts)
        assert any("What was the word?" in t for t in texts)

        # a new controller (restart): continue the continued run, the chain is listed
        async with AgentService(executor, settings) as agents:
            third = await agents.continue_(second.id, "And now a third time.", 360_000)
            final = (await agents.wait(third.id, WAIT_MS)).status
            assert final.state == AgentState.SUCCEEDED, final
            await agents.settle()
            listed = {s.id: s for s in await agents.list()}
            assert listed[third.id].parent == second.id
            assert listed[second.id].parent == first.id
            assert listed[first.id].parent is None
        texts = _texts(script.main_requests[2].messages)
        assert any("FIRST-TASK-TEXT" in t for t in texts)
        assert any("You asked me to remember PINEAPPLE-7." in t for t in texts)
        assert any("And now a third time." in t for t in texts)


async def test_a_message_sent_mid_run_reaches_the_model(
    agent_image: str, host: tuple[Executor, Callable[..., Settings]]
) -> None:
    """Local and over SSH: the message goes through an attach on the executor's channel."""
    executor, make_settings = host
    script = ClaudeCodeScript(
        [
            reply.tool_use("Bash", {"command": "true", "description": "check"}),
            # the message arrives while the model is still thinking about this answer
            reply.text("First answer.").delayed(3.0),
            reply.text("Took the extra note."),
        ]
    )
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = make_settings(
            image=agent_image,
            anthropic_api_key="sk-ant-test-sessions",
            anthropic_base_url=server.url_for(gateway),
            container_memory="2g",
        )
        async with AgentService(executor, settings) as agents:
            run = await agents.spawn("Run a command", "steer", 360_000)
            await _first(agents.watch(run.id), lambda e: isinstance(e, ToolResultEvent))
            status = await agents.send(run.id, "EXTRA-NOTE: also update the README")
            assert status.state == AgentState.RUNNING
            done = (await agents.wait(run.id, WAIT_MS)).status
            assert done.state == AgentState.SUCCEEDED, done
            assert done.result_text == "Took the extra note."  # it did not end before taking it
            # sending to the finished agent is refused with what to do instead
            with pytest.raises(ConflictError, match="continue_claude_agent"):
                await agents.send(run.id, "too late")
    # measured: a message that arrives while the model answers is taken when that turn ends,
    # and starts the next turn (its request carries the whole conversation and the message)
    requests = script.main_requests
    assert len(requests) == 3
    assert not any("EXTRA-NOTE" in t for t in _texts(requests[1].messages))
    last = _texts(requests[2].messages)
    assert "First answer." in last
    assert last[-1] == "EXTRA-NOTE: also update the README"


async def test_approval_granted_runs_the_tool_and_a_denial_stops_it(
    agent_image: str, tmp_path: Path
) -> None:
    script = ClaudeCodeScript(
        [
            reply.tool_use(
                "Bash", {"command": "echo yes > /workspace/granted.txt", "description": "one"}
            ),
            reply.tool_use(
                "Bash", {"command": "echo no > /workspace/denied.txt", "description": "two"}
            ),
            reply.text("Finished."),
        ]
    )
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(tmp_path, agent_image, server.url_for(gateway))
        async with AgentService(LocalExecutor(), settings) as agents:
            run = await agents.spawn("Do two things", "approve", 360_000, ask_tools=["Bash"])
            notices = _notices(agents, run.id)
            asked = await _first(notices, lambda n: getattr(n, "kind", "") == "needs_approval")
            assert isinstance(asked, SessionNotice)
            assert asked.approval is not None
            status = await agents.status(run.id)
            assert status.phase == "waiting"
            assert status.waiting_for == "approval"
            assert [a["tool"] for a in status.approvals or []] == ["Bash"]
            request_id = str(asked.approval["id"])
            await agents.answer(run.id, request_id, True)
            with pytest.raises(NotFoundError, match="no pending approval"):
                await agents.answer(run.id, request_id, True)  # answered already: gone
            asked = await _first(notices, lambda n: getattr(n, "kind", "") == "needs_approval")
            assert isinstance(asked, SessionNotice)
            assert asked.approval is not None
            await agents.answer(run.id, str(asked.approval["id"]), False, "NOT-ALLOWED-HERE")
            done = (await agents.wait(run.id, WAIT_MS)).status
            assert done.state == AgentState.SUCCEEDED, done
            workspace = Path(str(done.workspace))
    assert (workspace / "granted.txt").read_text() == "yes\n"
    assert not (workspace / "denied.txt").exists()
    results = [
        block
        for message in script.main_requests[2].messages
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert results[-1]["is_error"] is True
    assert "NOT-ALLOWED-HERE" in json.dumps(results[-1]["content"])


async def test_a_stall_is_noticed_and_stopped(agent_image: str, tmp_path: Path) -> None:
    script = ClaudeCodeScript([reply.text("late answer").delayed(60.0)])
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path, agent_image, server.url_for(gateway), stall_timeout=3.0, stall_action="stop"
        )
        async with AgentService(LocalExecutor(), settings) as agents:
            run = await agents.spawn("Think for a long time", "stall", 360_000)
            stalled = await _first(
                _notices(agents, run.id), lambda n: getattr(n, "kind", "") == "stalled"
            )
            assert isinstance(stalled, SessionNotice)
            assert stalled.stalled is True
            done = (await agents.wait(run.id, WAIT_MS)).status
            assert done.state == AgentState.STOPPED, done


async def test_continuing_a_run_that_never_started_a_session_is_refused(
    agent_image: str, tmp_path: Path
) -> None:
    executor: Executor = LocalExecutor()
    settings = _settings(tmp_path, agent_image, "http://127.0.0.1:9")
    async with AgentService(executor, settings) as agents:
        run = await agents.spawn(
            "never runs claude", "nosession", 60_000, entrypoint=["sh", "-c", "exit 3"]
        )
        done = (await agents.wait(run.id, WAIT_MS)).status
        assert done.state == AgentState.FAILED
        with pytest.raises(ToolError, match="never started a Claude Code session"):
            await agents.continue_(run.id, "go on", 60_000)
        with pytest.raises(ConflictError, match="has finished"):
            await agents.send(run.id, "hello")
        with pytest.raises(NotFoundError, match="no pending approval"):
            await agents.answer(run.id, "req-gone", True)


async def test_interrupt_cuts_the_turn_short_and_the_message_follows(
    agent_image: str, tmp_path: Path
) -> None:
    long_command = "python3 -c 'import time; time.sleep(120)'"
    script = ClaudeCodeScript(
        [
            reply.tool_use("Bash", {"command": long_command, "description": "long"}),
            reply.text("Stopped and noted."),
        ]
    )
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(tmp_path, agent_image, server.url_for(gateway))
        async with AgentService(LocalExecutor(), settings) as agents:
            run = await agents.spawn("Run a long command", "interrupt", 360_000)
            await _first(agents.watch(run.id), lambda e: isinstance(e, AssistantToolUse))
            await agents.send(run.id, "URGENT-NOTE: stop that", interrupt=True)
            done = (await agents.wait(run.id, WAIT_MS)).status
            assert done.state == AgentState.SUCCEEDED, done
            assert done.result_text == "Stopped and noted."
    # measured: the running tool is abandoned, and the next request carries the interruption
    # marker and the message as the user's new words
    requests = script.main_requests
    assert len(requests) == 2
    texts = _texts(requests[1].messages)
    assert any("[Request interrupted by user for tool use]" in t for t in texts)
    assert any("URGENT-NOTE" in t for t in texts)


async def test_after_a_controller_restart_a_pending_approval_is_answered(
    agent_image: str, tmp_path: Path
) -> None:
    script = ClaudeCodeScript(
        [
            reply.tool_use(
                "Bash", {"command": "echo after-restart > /workspace/r.txt", "description": "x"}
            ),
            reply.text("Done after the restart."),
        ]
    )

    def is_request(event: Event) -> bool:
        return isinstance(event, UnknownEvent) and event.type == "control_request"

    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(tmp_path, agent_image, server.url_for(gateway))
        async with AgentService(LocalExecutor(), settings) as agents:
            run = await agents.spawn("Write a file", "restart", 360_000, ask_tools=["Bash"])
            await _first(agents.watch(run.id), is_request)
        # the controller is gone; the agent still waits for its answer. A new controller:
        async with AgentService(LocalExecutor(), settings) as agents:
            await _first(agents.watch(run.id), is_request)  # its output re-read from the start
            status = await agents.status(run.id)
            assert status.waiting_for == "approval"
            (pending,) = status.approvals or []
            await agents.answer(run.id, str(pending["id"]), True)  # a new attach to its stdin
            done = (await agents.wait(run.id, WAIT_MS)).status
            assert done.state == AgentState.SUCCEEDED, done
            assert done.result_text == "Done after the restart."
            assert (Path(str(done.workspace)) / "r.txt").read_text() == "after-restart\n"
