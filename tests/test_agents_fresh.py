"""Status and list at speed stay exact: shared engine reads are never stale, redaction holds.

``get_claude_status`` / ``list_claude_agents`` calls made at the same time share engine
requests (``containers/fresh.py``), the gateway's live cost is reused while nothing changed
(``containers/live_costs.py``) and tool results remember their redacted strings
(``redact.py``). None of that may show an agent as running after the engine said it exited,
or let a secret an agent printed through. Speed is measured in ``bench/scale.py``, never here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.containers.fresh import FreshReads
from agentkit.containers.service import AgentService, AgentState
from agentkit.errors import NotFoundError
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests.containers_support import (
    BASE_IMAGE,
    DOCKER_SOCKET,
    docker_ok,
    image_ok,
    remove_containers_of_root,
)
from tests.support import require, wait_until

SECRET = "plain-secret-" + secrets.token_hex(12)  # no token shape: only registration finds it

# prints the planted secret, waits for /workspace/stop, prints it again in its result, exits 3
LEAKER = (
    'printf \'{"type":"assistant","message":{"id":"m1","content":[{"type":"text",'
    '"text":"the key is %s"}]}}\\n\' "$LEAK"; '
    "while [ ! -e /workspace/stop ]; do sleep 0.02; done; "
    'printf \'{"type":"result","subtype":"success","is_error":true,"num_turns":1,'
    '"result":"leaked %s"}\\n\' "$LEAK"; exit 3'
)


# --- shared reads, deterministically --------------------------------------------------------


async def test_a_read_joins_the_next_round_never_one_already_in_flight() -> None:
    engine_state = ["running"]
    reads: list[str] = []
    gates: list[asyncio.Event] = []

    async def read(key: str) -> str:
        seen = engine_state[0]  # what the engine says when the request arrives
        reads.append(seen)
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return f"{key}:{seen}"

    fresh: FreshReads[str, str] = FreshReads(read)
    first = asyncio.create_task(fresh.get("a"))
    await wait_until(lambda: len(gates) == 1, "the first round's request")
    engine_state[0] = "exited"  # the agent exits while that request is in flight
    later = [asyncio.create_task(fresh.get("a")) for _ in range(10)]
    await asyncio.sleep(0)
    gates[0].set()
    assert await first == "a:running"  # its own request predates the exit: right for it
    await wait_until(lambda: len(gates) == 2, "the second round's request")
    gates[1].set()
    # every call made after the exit gets a request sent after it: never "running"
    assert await asyncio.gather(*later) == ["a:exited"] * 10
    assert reads == ["running", "exited"]  # ten calls, one request


async def test_a_failed_round_fails_its_callers_and_the_next_round_starts_fresh() -> None:
    answers: list[Any] = ["first", NotFoundError("gone"), "back"]
    gate = asyncio.Event()

    async def read(key: str) -> Any:
        answer = answers.pop(0)
        await gate.wait()
        if isinstance(answer, Exception):
            raise answer
        return answer

    fresh: FreshReads[str, Any] = FreshReads(read)
    lone = asyncio.create_task(fresh.get("k"))  # reads at once, in its own call
    await wait_until(lambda: len(answers) == 2, "the first request")
    joined = [asyncio.create_task(fresh.get("k")) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    assert await lone == "first"
    results = await asyncio.gather(*joined, return_exceptions=True)
    assert all(isinstance(r, NotFoundError) for r in results), results
    assert await fresh.get("k") == "back"
    assert answers == []  # five calls, three requests


async def test_cancelled_callers_leave_the_next_round_to_the_others() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    started: list[int] = []

    async def read(key: str) -> str:
        n = len(started)
        started.append(n)
        await gates[n].wait()
        return f"{key}{n}"

    fresh: FreshReads[str, str] = FreshReads(read)
    lone = asyncio.create_task(fresh.get("x"))
    await wait_until(lambda: started == [0], "the first request")
    gone = asyncio.create_task(fresh.get("x"))
    stays = asyncio.create_task(fresh.get("x"))
    await asyncio.sleep(0)
    lone.cancel()  # the caller reading itself goes away: the waiting ones get their round
    gone.cancel()
    await wait_until(lambda: started == [0, 1], "the second round")
    gates[1].set()
    assert await stays == "x1"
    assert gone.cancelled()
    assert lone.cancelled()


# --- redaction with the in-memory runtime ---------------------------------------------------

IMAGE = "agentkit-memory:test"
RELEASE = asyncio.Event()


async def leaking(run: MemoryRun) -> int:
    run.emit({"type": "assistant", "message": {"id": "m1", "content": [
        {"type": "text", "text": f"the key is {SECRET}"}]}})  # fmt: skip
    await RELEASE.wait()
    run.emit({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
              "result": f"done, key {SECRET}"})  # fmt: skip
    return 0


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[MemoryRuntime]:
    global RELEASE
    RELEASE = asyncio.Event()
    runtime = MemoryRuntime(leaking, images=[IMAGE])
    yield runtime
    await runtime.aclose()


async def test_a_secret_an_agent_prints_never_appears_in_status_or_list(
    tmp_path: Path, memory: MemoryRuntime
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=str(tmp_path / "root"),
        image=IMAGE,
        anthropic_api_key="sk-ant-fresh-" + secrets.token_hex(8),
        api_token=SECRET,
        gateway=False,
    )
    async with LocalExecutor() as executor:
        agents = AgentService(executor, settings, runtime=memory)
        # the tools' own redactor knows no secret: only what the service kept matters here
        toolset = Toolset(container_tools(), context=ToolContext(agents=agents))
        try:
            spawned = await agents.spawn("leak the key", "leaky", 60_000)

            async def printed() -> bool:
                return (await agents.status(spawned.id)).last_text is not None

            await wait_until(printed, "the agent's first line")
            shown: list[str] = []
            for _ in range(3):  # repeated calls (remembered redactions) stay redacted
                running = await toolset.call("get_claude_status", {"container_id": spawned.id})
                assert running.data["state"] == "running"
                assert "[REDACTED]" in running.data["last_text"]
                listed = await toolset.call("list_claude_agents", {})
                shown += [running.content, str(running.data), listed.content, str(listed.data)]
            shown.append(str((await agents.page()).agents))
            RELEASE.set()
            await agents.wait(spawned.id, 10_000)
            await agents.settle()
            finished = await toolset.call("get_claude_status", {"container_id": spawned.id})
            assert finished.data["state"] == "succeeded"
            assert "[REDACTED]" in finished.data["result_text"]
            for args in ({}, {"state": "finished"}, {"workspace": "leaky", "limit": 1}):
                listed = await toolset.call("list_claude_agents", args)
                assert [a["id"] for a in listed.data["agents"]] == [spawned.id]
                shown += [listed.content, str(listed.data)]
            shown += [finished.content, str(finished.data), str(await agents.list())]
        finally:
            await agents.aclose()
        # a new controller reads the same records back from the index
        async with AgentService(executor, settings, runtime=memory) as again:
            shown.append(str(await again.list()))
            shown.append(str(await again.status(spawned.id)))
    leaked = [text for text in shown if SECRET in text]
    assert not leaked, leaked[0]


# --- a real engine --------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def base_image() -> str:
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE} (.ci/build-images.sh)")
    return BASE_IMAGE


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _cleanup(tmp_path: Path) -> AsyncIterator[None]:
    yield
    if os.path.exists(DOCKER_SOCKET):
        await remove_containers_of_root(str(tmp_path / "root"))


def _settings(tmp_path: Path, image: str) -> Settings:
    return Settings(
        host=None,
        root=str(tmp_path / "root"),
        image=image,
        anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
        api_token=SECRET,
    )


async def _engine_exit(container: str) -> int:
    """Wait for the engine itself (another client) to report the container's exit."""
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        result = await docker.containers.container(container).wait(timeout=60)
    return int(result["StatusCode"])


@pytest.mark.docker
async def test_status_after_the_engine_reports_an_exit_never_says_running(
    base_image: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        toolset = Toolset(container_tools(), context=ToolContext(agents=agents))
        spawned = await agents.spawn(
            "leak and wait",
            "fresh",
            60_000,
            command=["sh", "-c", LEAKER],
            extra_env={"LEAK": SECRET},
        )
        seen: list[tuple[float, str]] = []  # (when the call began, the state it answered)
        hammering = True

        async def hammer() -> None:  # status calls in flight all the time, sharing requests
            while hammering:
                began = time.monotonic()
                result = await toolset.call("get_claude_status", {"container_id": spawned.id})
                assert not result.is_error, result.content
                assert SECRET not in result.content + str(result.data)
                seen.append((began, result.data["state"]))
                await asyncio.sleep(0)  # a status from memory never yields: let others run

        workers = [asyncio.create_task(hammer()) for _ in range(12)]
        try:

            async def printed() -> bool:
                status = await agents.status(spawned.id)
                return status.last_text is not None and "[REDACTED]" in status.last_text

            await wait_until(printed, "the agent's first line, redacted")
            await wait_until(
                lambda: (
                    any(state == "running" for _, state in seen) or any(w.done() for w in workers)
                ),
                "shared status calls saying running",
            )
            assert not any(w.done() for w in workers), [w.exception() for w in workers if w.done()]
            (Path(settings.workspaces_root) / "fresh" / "stop").touch()
            assert await _engine_exit(spawned.id) == 3
            exited_at = time.monotonic()
            right_after = await toolset.call("get_claude_status", {"container_id": spawned.id})
            assert right_after.data["state"] == "failed", right_after.content
            assert right_after.data["exit_code"] == 3
            listed = await toolset.call("list_claude_agents", {})
            (row,) = listed.data["agents"]
            assert row["state"] == "failed", listed.content
            await wait_until(lambda: any(b > exited_at for b, _ in seen), "more shared calls")
        finally:
            hammering = False
            await asyncio.gather(*workers)
        stale = [(b, s) for b, s in seen if b > exited_at and s == "running"]
        assert not stale, f"{len(stale)} calls begun after the exit said running"


@pytest.mark.docker
async def test_a_controller_that_did_not_spawn_an_agent_answers_its_status_exactly(
    base_image: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor, AgentService(executor, settings) as spawner:
        spawned = await spawner.spawn(
            "leak and wait", "other", 60_000, command=["sh", "-c", LEAKER],
            extra_env={"LEAK": SECRET},
        )  # fmt: skip
        # another controller (a CLI call, a second bot) on the same root
        async with AgentService(executor, settings) as other:
            toolset = Toolset(container_tools(), context=ToolContext(agents=other))
            running = await toolset.call("get_claude_status", {"container_id": spawned.id})
            assert running.data["state"] == "running", running.content
            (Path(settings.workspaces_root) / "other" / "stop").touch()
            assert await _engine_exit(spawned.id) == 3
            for agents in (other, spawner):
                status = await agents.status(spawned.id)
                assert status.state == AgentState.FAILED, status
                assert status.exit_code == 3
            listed = await toolset.call("list_claude_agents", {"state": "running"})
            assert listed.data["agents"] == [], listed.content
            await other.settle()
            await spawner.settle()
            final = await toolset.call("get_claude_status", {"container_id": spawned.id})
            assert final.data["state"] == "failed"
            assert "[REDACTED]" in final.data["result_text"]
            assert SECRET not in final.content + str(final.data)
