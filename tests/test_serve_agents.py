"""``agentkit serve`` with real agents: the real Claude Code CLI in the agent image on dockerd,
driven by the scripted Anthropic server, watched and stopped through HTTP.

Covers: status and list routes while an agent runs, its SSE stream resumed with Last-Event-ID
(nothing lost, nothing repeated), the fleet stream (snapshot, statuses, events, resume), costs
of finished runs, stop, and that a client leaving mid-stream leaves no task or subscriber.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from httpx_sse import ServerSentEvent

from agentkit.testing import reply
from agentkit.testing.scripts import ClaudeCodeScript
from tests.serve_support import (
    Served,
    agent_server,
    chatty_script,
    data,
    live_tasks,
    read_events,
    spawn,
    wait_for,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.usefixtures("agent_cleanup"),
]


def _ids_and_data(events: list[ServerSentEvent]) -> list[tuple[str, Any]]:
    return [(e.id, data(e)) for e in events if e.event == "agent.event"]


async def test_agent_stream_resumes_exactly_and_the_fleet_sees_it(
    agent_image: str, tmp_path: Path
) -> None:
    async with (
        agent_server(tmp_path, agent_image, chatty_script(6, 0.6)) as (srv, model),
        srv.client() as client,
    ):
        fleet_before = await read_events(client, "/v1/events", limit=1)
        assert fleet_before[0].event == "snapshot"
        assert data(fleet_before[0]) == {"agents": []}
        statuses_only: list[ServerSentEvent] = []
        statuses_task = asyncio.create_task(
            read_events(client, "/v1/events?agent_events=false", into=statuses_only)
        )
        fleet: list[ServerSentEvent] = []
        fleet_task = asyncio.create_task(
            read_events(
                client, "/v1/events", headers={"Last-Event-ID": fleet_before[0].id}, into=fleet
            )
        )
        agent_id = await spawn(srv, "serve-stream")
        url = f"/v1/agents/{agent_id}/events"
        full_task = asyncio.create_task(read_events(client, url, until="end"))

        running = await client.get(f"/v1/agents/{agent_id}")
        assert running.status_code == 200
        assert running.json()["state"] == "running"
        assert running.json()["workspace"].endswith("/serve-stream")
        listed = (await client.get("/v1/agents")).json()
        assert [a["id"] for a in listed] == [agent_id]

        # read a little, go away, let the agent go on, come back with Last-Event-ID
        first = await read_events(client, url, limit=3)
        seen = _ids_and_data(first)
        assert len(seen) == 3
        assert [i for i, _ in seen] == sorted(
            (i for i, _ in seen), key=lambda p: tuple(map(int, p.split(".")))
        )
        resumed = await read_events(
            client, url, until="end", headers={"Last-Event-ID": first[-1].id}
        )
        full = await full_task
        assert resumed[-1].event == "end"
        assert data(resumed[-1])["state"] == "succeeded"
        everything = _ids_and_data(full)
        # nothing lost, nothing repeated, same ids and same events
        assert seen + _ids_and_data(resumed) == everything
        assert len({i for i, _ in everything}) == len(everything)
        kinds = [d["type"] for _, d in everything]
        assert kinds[0] == "init"
        assert kinds.count("tool_use") == 6
        assert kinds.count("tool_result") == 6
        # the result, then agentkit's pushed phase change (answered, input open for the hold)
        assert kinds[-2:] == ["result", "session"]
        assert any("echo step 5" in (d["text"] or "") for _, d in everything)
        # the client was away while the agent ran on: the resumed part holds live events
        assert len(_ids_and_data(resumed)) > 6

        # a finished agent's stream replays from its record, and resumes the same way
        # (what the agent printed; phase changes were pushed live only)
        printed = [(i, d) for i, d in everything if d["type"] != "session"]
        replay = await read_events(client, url, until="end")
        assert _ids_and_data(replay) == printed
        middle = printed[len(printed) // 2][0]
        tail = await read_events(client, url, until="end", headers={"Last-Event-ID": middle})
        assert _ids_and_data(tail) == printed[len(printed) // 2 + 1 :]

        costs = (await client.get("/v1/costs")).json()
        assert [r["id"] for r in costs["runs"]] == [agent_id]
        assert costs["runs"][0]["cost_usd"] > 0
        assert costs["total_usd"] == pytest.approx(costs["runs"][0]["cost_usd"])
        finished = (await client.get(f"/v1/agents/{agent_id}")).json()
        assert finished["state"] == "succeeded"
        assert finished["turns"] == 7

        # the fleet stream: the agent's statuses and its events, with the same positions
        await wait_for(
            lambda: any(e.event == "agent" and data(e)["state"] == "succeeded" for e in fleet),
            60,
            "the fleet to report the finished agent",
        )
        fleet_task.cancel()
        await wait_for(
            lambda: any(data(e).get("state") == "succeeded" for e in statuses_only[1:]),
            60,
            "the statuses-only subscriber to hear the end",
        )
        statuses_task.cancel()
        await asyncio.gather(fleet_task, statuses_task, return_exceptions=True)
        assert statuses_only[0].event == "snapshot"
        assert {e.event for e in statuses_only[1:]} == {"agent"}
        states = [data(e)["state"] for e in fleet if e.event == "agent"]
        assert states[0] == "running"
        assert states[-1] == "succeeded"
        fleet_events = [data(e) for e in fleet if e.event == "agent.event"]
        assert {e["agent"] for e in fleet_events} == {agent_id}
        # the fleet carries what agents printed (phase changes go to each agent's own stream)
        assert [e["position"] for e in fleet_events] == [i for i, _ in printed]
        assert max(data(e)["turns"] or 0 for e in fleet if e.event == "agent") == 7
        # resuming the fleet stream from the middle gives exactly the rest
        cut = len(fleet) // 2
        rest = await read_events(
            client,
            "/v1/events",
            limit=len(fleet) - cut - 1,
            headers={"Last-Event-ID": fleet[cut].id},
        )
        assert [(e.id, e.data) for e in rest] == [(e.id, e.data) for e in fleet[cut + 1 :]]
        # an unknown or stale id starts over from a snapshot
        fresh = await read_events(
            client, "/v1/events", limit=1, headers={"Last-Event-ID": "0000-5"}
        )
        assert fresh[0].event == "snapshot"
        assert [a["id"] for a in data(fresh[0])["agents"]] == [agent_id]
    model.check(consumed=True)


def _watchers(srv: Served, agent_id: str) -> int:
    """Live subscriptions to the agent inside the agent service (its in-memory fan-out)."""
    run = srv.state.conn.agents.registry.get(agent_id)
    return len(run.watchers) if run is not None else 0


async def test_clients_leaving_mid_stream_leak_nothing_and_stop_works(
    agent_image: str, tmp_path: Path
) -> None:
    # the agent waits for its first model turn far longer than the test: it is running throughout
    script = ClaudeCodeScript([reply.text("too late").delayed(300)])
    async with (
        agent_server(tmp_path, agent_image, script) as (srv, _model),
        srv.client() as client,
    ):
        await read_events(client, "/v1/events", limit=1)  # the fleet hub is up
        agent_id = await spawn(srv, "serve-leak")
        hub = srv.state.hub
        await wait_for(lambda: hub.tracked == 1, 60, "the fleet to see the agent's events")
        await read_events(client, f"/v1/agents/{agent_id}/events", limit=1)  # it has output
        await wait_for(lambda: _watchers(srv, agent_id) == 0, 30, "no watcher (the fleet observes)")
        baseline = set(live_tasks())
        base_tasks = len(baseline)
        assert srv.state.streams.open == 0
        assert hub.subscribers == 0

        readers: list[asyncio.Task[Any]] = []
        got: list[list[ServerSentEvent]] = []
        for n in range(8):
            into: list[ServerSentEvent] = []
            got.append(into)
            url = "/v1/events" if n % 2 else f"/v1/agents/{agent_id}/events"
            readers.append(asyncio.create_task(read_events(client, url, into=into)))
        await wait_for(lambda: all(got), 60, "every stream to deliver its first message")
        assert srv.state.streams.open == 8
        assert hub.subscribers == 4
        assert _watchers(srv, agent_id) == 4
        assert len(live_tasks()) > base_tasks

        for reader in readers:  # the clients go away mid-stream (connections dropped)
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await wait_for(lambda: srv.state.streams.open == 0, 30, "streams to close")
        await wait_for(lambda: hub.subscribers == 0, 30, "fleet subscribers to go")
        await wait_for(lambda: _watchers(srv, agent_id) == 0, 30, "agent watchers to go")
        try:
            await wait_for(lambda: len(live_tasks()) <= base_tasks, 30, "tasks to end")
        except AssertionError:
            extra = [t.get_coro() for t in set(live_tasks()) - baseline]
            raise AssertionError(f"tasks left: {extra}") from None

        # stop it through the API: the fleet hears it, the status says so
        stopped = await client.post(f"/v1/agents/{agent_id}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "stopped"
        again = await client.post(f"/v1/agents/{agent_id}/stop")  # already stopped: same answer
        assert again.json()["state"] == "stopped"
        await wait_for(lambda: hub.tracked == 0, 30, "the fleet to let the agent go")
        assert _watchers(srv, agent_id) == 0
        ended = await read_events(client, f"/v1/agents/{agent_id}/events", until="end")
        assert data(ended[-1])["state"] == "stopped"
