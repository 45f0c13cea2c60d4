"""The agent service on the in-memory runtime: the whole lifecycle in milliseconds.

Real records (a LocalExecutor on a temporary root), a real service, follower, finalizer and
registry; only the process is a coroutine printing stream-json (``MemoryRuntime``). Observers
are the registry's public seam: notifiers, a cost ledger or a dashboard subscribe the same way.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from agentkit.adapters.notify import DiscordWebhookNotifier
from agentkit.agent.events import ToolCall
from agentkit.config import Settings
from agentkit.containers import AgentService, AgentState, RunObserver, RunRecord
from agentkit.containers.streamjson import AssistantText, Event, ResultEvent
from agentkit.errors import ToolError
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.base import ExitReason
from agentkit.runtimes.memory import MemoryExit, MemoryRun, MemoryRuntime
from agentkit.tools.base import ToolResult

IMAGE = "agentkit-memory:test"
KEY = "sk-ant-memory-" + secrets.token_hex(8)
GATE = asyncio.Event()  # "gated" agents finish once it is set


async def claude_like(run: MemoryRun) -> int:
    """Plays Claude Code's stream-json for the task it was given; the task says how to end."""
    task = run.task_text
    run.emit({"type": "system", "subtype": "init", "session_id": "sess-1", "model": "m"})
    run.emit(
        {
            "type": "assistant",
            "message": {"id": "msg-1", "content": [{"type": "text", "text": f"working on {task}"}]},
        }
    )
    if task == "leak":
        run.emit({"type": "assistant", "message": {"id": "msg-2", "content": [
            {"type": "text", "text": f"the key is {KEY}"}]}})  # fmt: skip
    if task == "sleep":
        await asyncio.sleep(300)
    if task == "gated":
        await GATE.wait()
    if task == "hog":
        raise MemoryExit(137, ExitReason.OOM)
    if task == "crash":
        raise RuntimeError("agent crashed")
    run.emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": "done",
            "num_turns": 2,
            "total_cost_usd": 0.0123,
            "session_id": "sess-1",
            "usage": {"input_tokens": 120, "output_tokens": 34},
        }
    )
    return 0


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.started: list[RunRecord] = []
        self.events: list[tuple[str, Event]] = []
        self.finished: list[RunRecord] = []
        self.finished_one = asyncio.Event()

    async def on_started(self, record: RunRecord) -> None:
        self.started.append(record)

    def on_event(self, run_id: str, event: Event) -> None:
        self.events.append((run_id, event))

    async def on_finished(self, record: RunRecord) -> None:
        self.finished.append(record)
        self.finished_one.set()


class Broken(RunObserver):
    async def on_started(self, record: RunRecord) -> None:
        raise RuntimeError("observer bug")

    def on_event(self, run_id: str, event: Event) -> None:
        raise RuntimeError("observer bug")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=str(tmp_path / "root"),
        image=IMAGE,
        anthropic_api_key=KEY,
    )


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[MemoryRuntime]:
    runtime = MemoryRuntime(claude_like, images=[IMAGE])
    yield runtime
    await runtime.aclose()


async def test_a_run_is_followed_recorded_and_observed(
    settings: Settings, memory: MemoryRuntime
) -> None:
    recorder = Recorder()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(Broken())  # a failing observer disturbs nobody
        agents.subscribe(recorder)
        spawned = await agents.spawn("write docs", "ws", 60_000)
        waited = await agents.wait(spawned.id, 10_000)
        assert not waited.timed_out
        status = waited.status
        assert (status.state, status.exit_code, status.turns, status.cost_usd) == (
            AgentState.SUCCEEDED,
            0,
            2,
            0.0123,
        )
        await agents.settle()
        assert [r.id for r in recorder.started] == [spawned.id]
        assert recorder.started[0].state == AgentState.RUNNING
        assert recorder.started[0].task == "write docs"
        texts = [e.text for rid, e in recorder.events if isinstance(e, AssistantText)]
        assert texts == ["working on write docs"]
        assert any(isinstance(e, ResultEvent) for _, e in recorder.events)
        (final,) = recorder.finished
        assert (final.id, final.state, final.exit_reason) == (spawned.id, "succeeded", "exited")
        assert final.usage == {"input_tokens": 120, "output_tokens": 34}
        assert final.cost_usd == 0.0123
        assert final.runtime == "memory"
        # the record on disk is the same typed record
        stored = RunRecord.from_dict(await agents.store.read_result(spawned.id) or {})
        assert stored.to_dict() == final.to_dict()
        # and the run is gone from the runtime once recorded
        assert memory.runs == {}
        listed = await agents.list()
        assert [(s.id, s.state) for s in listed] == [(spawned.id, AgentState.SUCCEEDED)]
        output = await agents.output(spawned.id)
        assert "working on write docs" in output.text


@pytest.mark.parametrize(
    ("task", "timeout_ms", "state", "reason"),
    [
        ("hog", 60_000, AgentState.OOM_KILLED, "oom"),
        ("crash", 60_000, AgentState.FAILED, "exited"),
        ("sleep", 1_000, AgentState.TIMED_OUT, "deadline"),
    ],
)
async def test_each_way_of_ending_is_recorded(
    settings: Settings,
    memory: MemoryRuntime,
    task: str,
    timeout_ms: int,
    state: AgentState,
    reason: str,
) -> None:
    recorder = Recorder()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(recorder)
        spawned = await agents.spawn(task, "ws", timeout_ms)
        waited = await agents.wait(spawned.id, 20_000)
        assert waited.status.state == state, waited.status
        await asyncio.wait_for(recorder.finished_one.wait(), 10)
        assert recorder.finished[0].exit_reason == reason
        if state == AgentState.FAILED:
            assert "agent crashed" in (waited.status.error or "")


async def test_stop_is_recorded_as_stopped(settings: Settings, memory: MemoryRuntime) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        spawned = await agents.spawn("sleep", "ws", 60_000)
        stopped = await agents.stop(spawned.id)
        assert stopped.state == AgentState.STOPPED
        assert (await agents.status(spawned.id)).state == AgentState.STOPPED


async def test_secrets_printed_by_an_agent_never_reach_records_or_observers(
    settings: Settings, memory: MemoryRuntime
) -> None:
    recorder = Recorder()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.subscribe(recorder)
        spawned = await agents.spawn("leak", "ws", 60_000)
        await agents.wait(spawned.id, 10_000)
        await agents.settle()
        assert KEY.encode() not in await agents.store.read_output(spawned.id)
        assert all(KEY not in repr(e) for _, e in recorder.events)
        assert KEY not in (await agents.output(spawned.id)).text


async def test_a_restarted_controller_readopts_running_runs_and_records_ended_ones(
    settings: Settings, memory: MemoryRuntime
) -> None:
    GATE.clear()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as first:
        running = await first.spawn("sleep", "a", 60_000)
        ended = await first.spawn("gated", "b", 60_000)
    # the first controller is gone; meanwhile one run ends with nobody following it
    GATE.set()
    await asyncio.wait_for(memory.wait(ended.id), 10)
    assert memory.runs[ended.id].exit is not None  # ended, unrecorded, still on the runtime
    recorder = Recorder()  # subscribed from the start: it hears of the reconciled run too
    async with AgentService(
        LocalExecutor(), settings, runtime=memory, observers=[recorder]
    ) as second:
        report = await second.reconcile()
        assert report["errors"] == 0
        assert (await second.status(ended.id)).state == AgentState.SUCCEEDED
        assert (await second.status(running.id)).state == AgentState.RUNNING
        assert running.id in second.registry  # re-adopted: followed again
        stopped = await second.stop(running.id)
        assert stopped.state == AgentState.STOPPED
        await second.settle()
        assert {r.id for r in recorder.finished} == {running.id, ended.id}
        assert ended.id not in memory.runs  # recorded, then removed


async def test_an_image_the_runtime_lacks_is_refused_before_anything_starts(
    settings: Settings, memory: MemoryRuntime
) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        with pytest.raises(ToolError, match="agentkit-missing:1"):
            await agents.spawn("x", "ws", 60_000, image="agentkit-missing:1")
        assert memory.runs == {}
        assert await agents.list() == []


async def test_connect_takes_a_runtime_and_the_tools_do_not_change(
    settings: Settings, memory: MemoryRuntime
) -> None:
    from agentkit.connect import connect

    recorder = Recorder()
    async with connect(settings, runtime=memory, observers=[recorder]) as conn:
        spawned = await conn.toolset.call(
            "spawn_claude_agent", {"task": "via tools", "workspace_path": "t"}
        )
        assert not spawned.is_error, spawned.content
        agent_id = spawned.data["id"]
        waited = await conn.toolset.call("wait_for_claude_agent", {"container_id": agent_id})
        assert waited.data["state"] == "succeeded", waited.content
        listing = await conn.toolset.call("list_claude_agents", {})
        assert agent_id in listing.content
        await asyncio.wait_for(recorder.finished_one.wait(), 10)
        assert recorder.finished[0].id == agent_id


async def test_an_unknown_runtime_name_is_a_config_error(settings: Settings) -> None:
    from agentkit.errors import ConfigError

    agents = AgentService(LocalExecutor(), settings, runtime="kubernetes")
    with pytest.raises(ConfigError, match="unknown runtime 'kubernetes': use one of docker, swarm"):
        await agents.start()
    await agents.aclose()


@respx.mock
async def test_a_discord_notifier_reports_each_agent_end_once(
    settings: Settings, memory: MemoryRuntime
) -> None:
    """The notifier as a run observer: agents that end are reported as they end, once, even
    when the model asks for the same agent's result afterwards."""
    url = "https://discord.com/api/webhooks/1/token-abc"
    route = respx.post(url).mock(return_value=httpx.Response(204))
    async with (
        DiscordWebhookNotifier(url, tool_use=False) as notifier,
        AgentService(
            LocalExecutor(), settings, runtime=memory, observers=[notifier.run_observer()]
        ) as agents,
    ):
        spawned = await agents.spawn("write docs", "ws", 60_000)
        waited = await agents.wait(spawned.id, 10_000)
        await agents.settle()
        asked = ToolCall("t1", "wait_for_claude_agent", {"container_id": spawned.id})
        await notifier.after_tool(asked, ToolResult("done", False, waited.status.to_dict()))
    texts = [_text(json.loads(call.request.content)) for call in route.calls]
    finished = [t for t in texts if "Agent finished" in t]
    assert len(finished) == 1, texts
    assert spawned.id in finished[0]
    assert "$0.0123" in finished[0]
    assert "done" in finished[0]


def _text(body: dict[str, Any]) -> str:
    parts = [body.get("content", "")]
    for embed in body.get("embeds", []):
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f["name"] + " " + f["value"] for f in embed.get("fields", [])]
    return "\n".join(parts)
