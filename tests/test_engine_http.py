"""EngineHTTP: the Docker runtime's hot queries over pooled keep-alive connections (real engine).

Run over the local socket and over a real sshd (each connection one SSH channel); the answers
must equal aiodocker's, concurrency must fan out over at most ``size`` connections, and a
connection the engine dropped while idle must not fail the next request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiodocker
import pytest
import pytest_asyncio

from agentkit.errors import NotFoundError
from agentkit.executors import Executor, LocalExecutor, SSHExecutor
from agentkit.runtimes.base import RunSpec, RunState
from agentkit.runtimes.docker import DockerRuntime
from agentkit.runtimes.engine_http import EngineHTTP
from tests.containers_support import BASE_IMAGE, DOCKER_SOCKET, docker_ok, image_ok
from tests.support import require

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "local":
        return LocalExecutor()
    ssh: SSHExecutor = request.getfixturevalue("ssh_executor")
    return ssh


@pytest_asyncio.fixture
async def pooled(executor: Executor) -> AsyncIterator[tuple[DockerRuntime, DockerRuntime, str]]:
    """(pooled runtime, plain aiodocker runtime, the name of a running container of ours)."""
    require(await docker_ok(), "dockerd")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    docker = aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}")
    await docker._check_version()
    engine = EngineHTTP(
        lambda: executor.open_unix_connection(DOCKER_SOCKET), docker.api_version, size=3
    )
    fast = DockerRuntime(docker, socket=DOCKER_SOCKET, engine=engine)
    plain = DockerRuntime(aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}"), socket=DOCKER_SOCKET)
    name = f"engine-http-test-{secrets.token_hex(4)}"
    spec = RunSpec(
        name=name,
        image=BASE_IMAGE,
        labels={"agentkit.test": "engine-http", "agentkit.root": f"/tmp/{name}"},
        env={},
        command=("sleep", "120"),
        user="1001:1001",
        init=True,
    )
    await plain.create(spec)
    await plain.start(name)
    try:
        yield fast, plain, name
    finally:
        await plain.remove(name, force=True)
        await fast.aclose()
        await plain.aclose()


async def test_answers_equal_aiodocker(pooled: tuple[DockerRuntime, DockerRuntime, str]) -> None:
    fast, plain, name = pooled
    mine = {"agentkit.root": f"/tmp/{name}"}
    a, b = await fast.inspect(name), await plain.inspect(name)
    assert (a.id, a.name, a.state, a.labels, a.started_at) == (
        b.id,
        b.name,
        b.state,
        b.labels,
        b.started_at,
    )
    assert a.state == RunState.RUNNING
    listed_fast, listed_plain = await fast.list(mine), await plain.list(mine)
    assert [(i.name, i.state) for i in listed_fast] == [(i.name, i.state) for i in listed_plain]
    assert [i.name for i in listed_fast] == [name]
    with pytest.raises(NotFoundError):
        await fast.inspect(f"{name}-missing")  # an HTTP error keeps the connection usable
    assert (await fast.inspect(name)).name == name


async def test_concurrent_calls_fan_out_over_a_small_pool(
    pooled: tuple[DockerRuntime, DockerRuntime, str],
) -> None:
    fast, _, name = pooled
    engine = fast.engine
    assert engine is not None
    results = await asyncio.gather(*(fast.inspect(name) for _ in range(48)))
    assert {r.name for r in results} == {name}
    assert 1 < engine.open_connections <= 3  # more than one channel, never more than the pool


async def test_a_connection_dropped_while_idle_is_replaced(
    pooled: tuple[DockerRuntime, DockerRuntime, str],
) -> None:
    fast, _, name = pooled
    engine = fast.engine
    assert engine is not None
    await asyncio.gather(*(fast.inspect(name) for _ in range(6)))
    idle = list(engine._idle)
    assert idle
    for conn in idle:  # as if the engine (or sshd) closed them between requests
        conn.writer.transport.abort()
    await asyncio.sleep(0)
    assert (await fast.inspect(name)).name == name
    assert engine.open_connections <= 3
