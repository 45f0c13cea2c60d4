"""Sessions on the in-memory runtime: the conversation logic in milliseconds.

The memory agent below speaks Claude Code's session protocol as measured with the real CLI
(tests/test_sessions_e2e.py): it replays each user message it takes, asks ``can_use_tool`` for
tools in ``AGENTKIT_ASK``, reads control responses from its input, ends on the end-of-input
line, keeps its transcript in a file and resumes it from ``AGENTKIT_RESUME``. Real service,
records (LocalExecutor), registry, follower and finalizer; the Discord relay with the fakes of
tests/test_adapters_discord.py; the webhook notifier against respx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from agentkit.adapters.chat_session import AccessPolicy
from agentkit.adapters.discord_approvals import AgentApprovalRelay
from agentkit.adapters.notify import DiscordWebhookNotifier
from agentkit.config import Settings
from agentkit.containers import AgentService, AgentState, RunObserver
from agentkit.containers.finalize import SESSION_DIR
from agentkit.containers.sessions import END_INPUT
from agentkit.containers.streamjson import SessionNotice
from agentkit.errors import ConflictError, NotFoundError, ToolError
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
from tests.test_adapters_discord import (
    ALLOWED,
    STRANGER,
    FakeMessageable,
    FakeSentMessage,
    interaction,
)

IMAGE = "agentkit-memory:sessions"
WEBHOOK = "https://discord.com/api/webhooks/123456/webhook-secret-token-abcdef"


async def session_agent(run: MemoryRun) -> int:
    """Claude Code in session mode, as far as the controller can tell."""
    sid = run.env.get("AGENTKIT_RESUME") or f"sess-{run.spec.name[-6:]}"
    path = f"{SESSION_DIR}/{sid}.jsonl"
    history = run.files.get(path, b"").decode().splitlines()
    ask = set(filter(None, run.env.get("AGENTKIT_ASK", "").split("\n")))
    run.emit({"type": "system", "subtype": "init", "session_id": sid})

    async def turn(text: str) -> None:
        run.emit({"type": "user", "message": {"role": "user", "content": text}, "isReplay": True})
        history.append(f"user: {text}")
        answer = f"heard {text!r} after {len(history) - 1} earlier lines"
        if text.startswith("stall"):
            await asyncio.sleep(3600)
        if text.startswith("bash") and any(rule.split("(")[0] == "Bash" for rule in ask):
            run.emit(
                {
                    "type": "control_request",
                    "request_id": f"req-{len(history)}",
                    "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {
                        "command": text}},
                }
            )  # fmt: skip
            while True:
                reply = json.loads(await run.read_input())
                if reply.get("type") == "control_response":
                    break
            body = reply["response"]["response"]
            answer = "ran it" if body["behavior"] == "allow" else f"denied: {body['message']}"
        history.append(f"assistant: {answer}")
        run.emit({"type": "assistant", "message": {"content": [{"type": "text", "text": answer}]}})
        run.emit({"type": "result", "subtype": "success", "is_error": False, "result": answer,
                  "session_id": sid})  # fmt: skip

    await turn(run.task_text)
    while True:
        line = await run.read_input()
        if line + b"\n" == END_INPUT:
            break
        data = json.loads(line)
        if data.get("type") == "user":
            await turn(data["message"]["content"])
    run.files[path] = ("\n".join(history) + "\n").encode()
    return 0


class SignallingChannel(FakeMessageable):
    """The Discord fake that also says when something was posted."""

    def __init__(self) -> None:
        super().__init__()
        self.posted = asyncio.Event()

    async def send(self, content: Any = None, **kwargs: Any) -> FakeSentMessage:
        message = await super().send(content, **kwargs)
        self.posted.set()
        return message


class Notices(RunObserver):
    def __init__(self) -> None:
        self.seen: list[SessionNotice] = []
        self.changed = asyncio.Event()

    def on_session(self, run_id: str, notice: SessionNotice) -> None:
        self.seen.append(notice)
        self.changed.set()

    async def first(self, kind: str) -> SessionNotice:
        async with asyncio.timeout(10):
            while True:
                for notice in self.seen:
                    if notice.kind == kind:
                        return notice
                self.changed.clear()
                await self.changed.wait()


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        host=None,
        root=str(tmp_path / "root"),
        image=IMAGE,
        anthropic_api_key="sk-ant-memory-sessions",
        **kw,
    )


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[MemoryRuntime]:
    runtime = MemoryRuntime(session_agent, images=[IMAGE])
    yield runtime
    await runtime.aclose()


async def test_an_answered_agent_waits_for_a_message_then_its_input_ends(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    notices = Notices()
    settings = make_settings(tmp_path, session_hold=2.0)  # the message is sent within it
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(notices)
        run = await agents.spawn("first", "ws", 60_000)
        waiting = await notices.first("waiting")
        assert waiting.waiting_for == "message"
        status = await agents.status(run.id)
        assert (status.phase, status.waiting_for) == ("waiting", "message")
        assert status.to_dict()["phase"] == "waiting"
        await agents.send(run.id, "second")
        done = (await agents.wait(run.id, 60_000)).status  # still held open: not done yet
        assert done.state == AgentState.SUCCEEDED
        assert done.result_text == "heard 'second' after 2 earlier lines"
        assert done.to_dict()["phase"] == "done"
        with pytest.raises(ConflictError, match="continue_claude_agent"):
            await agents.send(run.id, "third")


async def test_without_a_hold_the_run_ends_by_itself(tmp_path: Path, memory: MemoryRuntime) -> None:
    settings = make_settings(tmp_path, session_hold=0.0)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        run = await agents.spawn("only task", "ws", 60_000)
        done = (await agents.wait(run.id, 10_000)).status
        assert not (await agents.wait(run.id, 0)).timed_out
        assert done.state == AgentState.SUCCEEDED
        assert done.result_text == "heard 'only task' after 0 earlier lines"


async def test_continue_resumes_the_saved_session_and_links_the_chain(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    settings = make_settings(tmp_path, session_hold=0.0)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        first = await agents.spawn("remember 42", "ws", 60_000)
        assert (await agents.wait(first.id, 10_000)).status.state == AgentState.SUCCEEDED
        await agents.settle()
        assert first.id not in memory.runs  # removed: the record holds the session
        second = await agents.continue_(first.id, "what number?", 60_000)
        done = (await agents.wait(second.id, 10_000)).status
        assert done.result_text == "heard 'what number?' after 2 earlier lines"
        assert done.parent == first.id
        await agents.settle()
        listed = {s.id: s for s in await agents.list()}
        assert listed[second.id].parent == first.id
        assert listed[first.id].session_saved is True
        running = await agents.spawn("stall now", "ws2", 60_000)
        with pytest.raises(ConflictError, match="still running"):
            await agents.continue_(running.id, "go on", 60_000)
        await agents.stop(running.id)


async def test_approvals_are_answered_denied_and_expire(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    notices = Notices()
    settings = make_settings(tmp_path, session_hold=0.0, approval_timeout=0.3)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(notices)
        with pytest.raises(ToolError, match="not a permission rule"):
            await agents.spawn("bash x", "ws", 60_000, ask_tools=["Bash; rm -rf /"])
        run = await agents.spawn("bash git push", "ws", 60_000, ask_tools=["Bash(git push:*)"])
        asked = await notices.first("needs_approval")
        assert asked.approval is not None
        assert asked.approval["tool"] == "Bash"
        status = await agents.status(run.id)
        assert status.waiting_for == "approval"
        assert [a["id"] for a in status.approvals or []] == [asked.approval["id"]]
        waited = await agents.wait(run.id, 10_000)  # returns at once: only a person can go on
        assert waited.needs_approval
        assert not waited.timed_out
        with pytest.raises(NotFoundError, match="no pending approval 'nope'"):
            await agents.answer(run.id, "nope", True)
        await agents.answer(run.id, asked.approval["id"], False, "not today")
        done = (await agents.wait(run.id, 10_000)).status
        assert done.result_text == "denied: not today"

        notices.seen.clear()
        run = await agents.spawn("bash ls", "ws", 60_000, ask_tools=["Bash"])
        waited = await agents.wait(run.id, 10_000)  # ends early when the request arrives
        assert waited.needs_approval
        await notices.first("needs_approval")
        denied = await notices.first("denied")  # nobody answered within 0.3 s
        assert denied.approval is not None
        done = (await agents.wait(run.id, 10_000)).status
        assert done.result_text == "denied: no answer within 0.3 s: denied"


async def test_a_stall_is_pushed_and_stops_the_agent(tmp_path: Path, memory: MemoryRuntime) -> None:
    notices = Notices()
    settings = make_settings(tmp_path, stall_timeout=0.2, stall_action="stop")
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(notices)
        run = await agents.spawn("stall please", "ws", 60_000)
        stalled = await notices.first("stalled")
        assert stalled.stalled is True
        done = (await agents.wait(run.id, 10_000)).status
        assert done.state == AgentState.STOPPED


async def test_discord_buttons_answer_an_agent_and_strangers_cannot(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    channel = SignallingChannel()
    settings = make_settings(tmp_path, session_hold=0.0)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        relay = AgentApprovalRelay(
            agents.answer, channel, AccessPolicy([111], []), redactor=agents.redactor
        )
        agents.subscribe(relay)
        notices = Notices()
        agents.subscribe(notices)
        run = await agents.spawn("bash make deploy", "ws", 60_000, ask_tools=["Bash"])
        async with asyncio.timeout(10):
            await channel.posted.wait()
        posted = channel.last
        assert posted is not None
        assert run.id in posted.content
        assert "bash make deploy" in posted.content
        stranger = interaction(STRANGER)
        assert await posted.view.interaction_check(stranger) is False
        await posted.view.approve.callback(interaction(ALLOWED))
        await notices.first("approved")  # the relay answered the agent
        done = (await agents.wait(run.id, 10_000)).status
        assert done.result_text == "ran it"
        await relay.aclose()


@respx.mock
async def test_the_webhook_notifier_posts_approvals_and_stalls(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    route = respx.post(WEBHOOK).mock(return_value=httpx.Response(204))
    settings = make_settings(tmp_path, stall_timeout=0.2)
    async with (
        DiscordWebhookNotifier(WEBHOOK) as notifier,
        AgentService(LocalExecutor(), settings, runtime=memory) as agents,
    ):
        agents.subscribe(notifier.run_observer())
        notices = Notices()
        agents.subscribe(notices)
        asked = await agents.spawn("bash rm -rf build", "ws", 60_000, ask_tools=["Bash"])
        stalls = await agents.spawn("stall", "ws2", 60_000)
        await notices.first("needs_approval")
        await notices.first("stalled")
        await agents.stop(asked.id)
        await agents.stop(stalls.id)
    posted = [json.loads(call.request.content) for call in route.calls]
    titles = [e.get("title") for body in posted for e in body.get("embeds", [])]
    assert "Approval needed" in titles
    assert "Agent stalled" in titles
    text = json.dumps(posted)
    assert "rm -rf build" in text


async def test_the_bot_relays_agent_approvals_with_its_own_allowlist(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    from agentkit.adapters.discord_bot import build_bot

    channel = SignallingChannel()
    settings = make_settings(tmp_path, session_hold=0.0, discord_allowed_users="111")
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        bot = build_bot(lambda: None, settings)  # type: ignore[arg-type,return-value]
        relay = bot.relay_agent_approvals(agents, channel)
        notices = Notices()
        agents.subscribe(notices)
        run = await agents.spawn("bash make deploy", "ws", 60_000, ask_tools=["Bash"])
        async with asyncio.timeout(10):
            await channel.posted.wait()
        assert channel.last is not None
        await channel.last.view.deny.callback(interaction(ALLOWED))
        await notices.first("denied")
        done = (await agents.wait(run.id, 10_000)).status
        assert done.result_text == "denied: denied by alice on Discord"
        await relay.aclose()
        await bot.close()
