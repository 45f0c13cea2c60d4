"""An SSH connection drop while an agent runs: the record still ends up complete.

The follower's log stream breaks with the connection; the exit is still noticed (event stream or
wait API over the reconnected executor) and the whole output is re-read from the engine before
the container is removed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agentkit.containers.service import AgentService, AgentState
from tests.containers_support import (
    BASE_IMAGE,
    DOCKER_SOCKET,
    docker_ok,
    image_ok,
    remove_containers_of_root,
)
from tests.support import require, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.sshd]

# 15 numbered lines, then a result line; after line 4 it waits until /workspace/go exists, so
# the connection drop surely happens mid-run
CHATTY = (
    'i=0; while [ "$i" -lt 15 ]; do '
    'printf \'{"type":"assistant","message":{"id":"m%s","content":"line %s"}}\\n\' "$i" "$i"; '
    'if [ "$i" -eq 4 ]; then while [ ! -e /workspace/go ]; do sleep 0.05; done; fi; '
    "i=$((i+1)); sleep 0.1; done; "
    'printf \'{"type":"result","subtype":"success","is_error":false,"num_turns":15,'
    '"total_cost_usd":0.5,"session_id":"s","result":"all done"}\\n\''
)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _cleanup(tmp_path: Path) -> AsyncIterator[None]:
    yield
    if os.path.exists(DOCKER_SOCKET):
        await remove_containers_of_root(str(tmp_path / "root"))


async def test_connection_drop_mid_run_loses_nothing(
    sshd: Any, ssh_executor: Any, tmp_path: Path
) -> None:
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    settings = sshd.settings(
        root=str(tmp_path / "root"),
        image=BASE_IMAGE,
        anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
    )
    async with AgentService(ssh_executor, settings) as agents:
        spawned = await agents.spawn("chatty", "drop", 120_000, command=["sh", "-c", CHATTY])

        async def halfway() -> bool:
            return "agent: line 4" in (await agents.output(spawned.id, lines=100)).text

        await wait_until(halfway, "the first five lines")
        await asyncio.to_thread(sshd.restart)  # every connection dropped, listener back
        Path(spawned.workspace, "go").touch()  # the agent goes on (the loopback host's disk)
        waited = await agents.wait(spawned.id, 30_000)
        assert waited.timed_out is False
        assert waited.status.state == AgentState.SUCCEEDED, waited.status
        assert waited.status.turns == 15
        await agents.settle()
        out = await agents.output(spawned.id, lines=100)
        for i in range(15):
            assert f"agent: line {i}\n" in out.text + "\n"
        assert "[finished] success, 15 turns" in out.text
        record = await ssh_executor.read_file(f"{settings.runs_root}/{spawned.id}/output.jsonl")
        assert record.count(b"\n") == 16  # every line once, none lost, none doubled
