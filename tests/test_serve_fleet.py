"""The fleet hub's resume rules on a real (empty) agent service: exact replay from the buffer,
a snapshot when the buffer no longer reaches back or the server restarted, and a subscriber too
slow to keep up is cut off and resumes without loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from agentkit.config import Settings
from agentkit.containers.service import AgentService
from agentkit.executors.local import LocalExecutor
from agentkit.redact import Redactor
from agentkit.serve.fleet import FleetHub
from agentkit.serve.sse import Message
from tests.containers_support import docker_ok
from tests.support import require


@pytest_asyncio.fixture(loop_scope="session")
async def agents(tmp_path: Path) -> AsyncIterator[AgentService]:
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    settings = Settings(_env_file=None, host=None, root=str(tmp_path / "root"))  # type: ignore[call-arg]
    async with AgentService(LocalExecutor(), settings) as service:
        yield service


async def _take(stream: AsyncIterator[Message], n: int) -> list[Message]:
    return [await anext(stream) for _ in range(n)]


async def test_resume_replays_exactly_or_starts_from_a_snapshot(agents: AgentService) -> None:
    hub = FleetHub(agents, Redactor(), backlog=5)
    try:
        first = hub.subscribe()
        snapshot = await anext(first)
        assert snapshot.event == "snapshot"
        for n in range(3):
            hub._publish("agent", {"n": n})  # what the engine and the agents would publish
        got = await _take(first, 3)
        assert [m.data["n"] for m in got] == [0, 1, 2]
        await first.aclose()
        assert hub.subscribers == 0

        hub._publish("agent", {"n": 3})  # published while nobody listened
        again = hub.subscribe(got[0].id)
        assert [m.data["n"] for m in await _take(again, 3)] == [1, 2, 3]
        await again.aclose()

        for n in range(4, 12):  # the buffer (5) no longer reaches back to got[0]
            hub._publish("agent", {"n": n})
        stale = hub.subscribe(got[0].id)
        assert (await anext(stale)).event == "snapshot"
        await stale.aclose()
        restarted = hub.subscribe("ffffffff-3")  # another epoch: the server restarted
        assert (await anext(restarted)).event == "snapshot"
        await restarted.aclose()
    finally:
        await hub.aclose()


async def test_a_slow_subscriber_is_cut_off_and_resumes_without_loss(
    agents: AgentService,
) -> None:
    hub = FleetHub(agents, Redactor(), backlog=100, queue_size=4)
    try:
        slow = hub.subscribe()
        mark = await anext(slow)
        for n in range(10):  # more than its queue holds, while it reads nothing
            hub._publish("agent", {"n": n})
        assert hub.subscribers == 0  # cut off
        rest = [m async for m in slow]  # its stream ends (what it had queued was dropped)
        assert rest == []
        resumed = hub.subscribe(mark.id)
        assert [m.data["n"] for m in await _take(resumed, 10)] == list(range(10))
        await resumed.aclose()
    finally:
        await hub.aclose()
