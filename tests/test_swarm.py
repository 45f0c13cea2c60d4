"""The Swarm runtime under the agent service, on a real swarm: hardening, placement, restarts,
and what happens when the cluster misbehaves (no manager, a node down or gone, an image
missing on a node).

The local engine is a single-node swarm manager (.ci/swarm-init.sh); tests that need a second
node start a second real engine on this machine and join it as a worker (tests/swarm_nodes.py).
Runs use the plain base image with a shell command, so they take about a second each.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import pytest_asyncio

from agentkit.cli.doctor import host_checks
from agentkit.config import Settings
from agentkit.containers.service import AgentService, AgentState
from agentkit.errors import ConfigError, ToolError
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes import open_runtime
from agentkit.runtimes.swarm_spec import NO_NEW_PRIVS
from tests.containers_support import BASE_IMAGE, DOCKER_SOCKET, docker_ok, image_ok
from tests.runtimes_support import remove_labelled, swarm_manager
from tests.support import require
from tests.swarm_nodes import Engine

pytestmark = [pytest.mark.docker]


@pytest_asyncio.fixture(loop_scope="session")
async def swarm(tmp_path: Path) -> AsyncIterator[Callable[..., Settings]]:
    """``make_settings(**overrides)`` for the swarm runtime on this test's own root."""
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE} (.ci/build-images.sh)")
    require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    root = str(tmp_path / "root")

    def make(**kw: Any) -> Settings:
        values: dict[str, Any] = {
            "host": None,
            "root": root,
            "image": BASE_IMAGE,
            "runtime": "swarm",
            "anthropic_api_key": "sk-ant-swarm-" + secrets.token_hex(8),
            **kw,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    yield make
    await remove_labelled({"agentkit.managed-by": "agentkit", "agentkit.root": root})


# EXTRA ENGINES: runs placed on them go without the gateway (``gateway=False``). Those engines
# share this machine's network namespace, so they cannot create the VXLAN interface of an
# overlay network the manager's engine already holds here ("error creating vxlan interface:
# file exists"); separate machines do not share it. The gateway's internal overlay is tested
# on the manager (tests/test_gateway_e2e.py).


async def _service(name: str) -> dict[str, Any]:
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        data: dict[str, Any] = await docker._query_json(f"services/{name}")
        return data


async def test_an_agent_is_a_hardened_one_shot_service_pinned_to_its_workspace_node(
    swarm: Callable[..., Settings],
) -> None:
    settings = swarm()
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        runtime = await agents.runtime()
        assert runtime.name == "swarm"
        spawned = await agents.spawn(
            "hardened", "hard", 60_000, command=["sh", "-c", "printf 'ok\\n'; exec sleep 30"]
        )
        spec = (await _service(spawned.id))["Spec"]
        task = spec["TaskTemplate"]
        container = task["ContainerSpec"]
        assert spec["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
        assert task["RestartPolicy"]["Condition"] == "none"
        assert container["User"] == "1001:1001"
        assert container["Init"] is True
        assert container["CapabilityDrop"] == ["ALL"]
        assert container["Command"][: len(NO_NEW_PRIVS)] == list(NO_NEW_PRIVS)
        assert task["Resources"]["Limits"] == {
            "MemoryBytes": 4 << 30,
            "NanoCPUs": 2_000_000_000,
            "Pids": 200,
        }
        assert [(m["Source"], m["Target"]) for m in container["Mounts"]] == [
            (spawned.workspace, "/workspace")
        ]
        node = runtime.node_id  # type: ignore[attr-defined]
        assert task["Placement"]["Constraints"] == [f"node.id=={node}"]
        assert spec["Labels"]["agentkit.root"] == settings.root
        assert spec["Labels"]["agentkit.deadline"] == container["Labels"]["agentkit.deadline"]
        assert not any(
            "sk-ant" in label for label in (*spec["Labels"].values(), *container["Labels"])
        )
        stopped = await agents.stop(spawned.id)
        assert stopped.state == AgentState.STOPPED


async def test_agents_end_as_they_should_and_are_recorded(swarm: Callable[..., Settings]) -> None:
    settings = swarm()
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        ok = await agents.spawn("ok", "a", 60_000, command=["sh", "-c", "printf '{}\\n'"])
        bad = await agents.spawn("bad", "b", 60_000, command=["sh", "-c", "echo nope >&2; exit 3"])
        slow = await agents.spawn("slow", "c", 2_000, command=["sh", "-c", "exec sleep 300"])
        results = await asyncio.gather(*(agents.wait(a.id, 60_000) for a in (ok, bad, slow)))
        states = [r.status.state for r in results]
        assert states == [AgentState.SUCCEEDED, AgentState.FAILED, AgentState.TIMED_OUT]
        assert results[1].status.exit_code == 3
        assert "nope" in (results[1].status.error or "")
        await agents.settle()
        index = {r["id"]: r for r in await agents.store.read_index()}
        assert {index[a.id]["runtime"] for a in (ok, bad, slow)} == {"swarm"}
        assert index[slow.id]["stop_reason"] == "timed_out"
        # recorded runs leave no service behind (the gateway's stays)
        left = {i.name for i in await (await agents.runtime()).list(agents.labels)}
        assert not left & {ok.id, bad.id, slow.id}


async def test_a_restarted_controller_readopts_services_and_enforces_deadlines(
    swarm: Callable[..., Settings],
) -> None:
    settings = swarm()
    async with LocalExecutor() as executor:
        async with AgentService(executor, settings) as first:
            overdue = await first.spawn("overdue", "a", 2_000, command=["sleep", "300"])
            done = await first.spawn("done", "b", 60_000, command=["sh", "-c", "exit 0"])
            live = await first.spawn("live", "c", 120_000, command=["sleep", "300"])
        # nobody follows them now; `done` ends and `overdue` passes its deadline meanwhile
        while time.time() < (overdue.deadline or 0) + 2.0:
            await asyncio.sleep(0.2)
        async with AgentService(executor, settings) as second:
            report = second._last_reconcile
            assert report["timed_out"] == 1, report
            assert report["errors"] == 0, report
            waited = await second.wait(overdue.id, 30_000)
            assert waited.status.state == AgentState.TIMED_OUT
            assert (await second.wait(done.id, 30_000)).status.state == AgentState.SUCCEEDED
            assert (await second.status(live.id)).state == AgentState.RUNNING
            assert live.id in second.registry
            assert (await second.stop(live.id)).state == AgentState.STOPPED


async def test_swarm_on_an_engine_that_is_no_manager_says_how_to_fix_it(
    swarm: Callable[..., Settings], extra_engine: Callable[..., Engine]
) -> None:
    engine = extra_engine(join=False)
    settings = swarm(docker_socket=engine.socket)
    async with LocalExecutor() as executor:
        with pytest.raises(ConfigError, match="docker swarm init"):
            await open_runtime(executor, settings)
        agents = AgentService(executor, settings)
        with pytest.raises(ConfigError, match="AGENTKIT_RUNTIME=swarm"):
            await agents.spawn("x", "w", 5_000, command=["true"])
        await agents.aclose()
    checks = {c.name: c for c in await host_checks(settings)}
    check = checks["swarm manager (AGENTKIT_RUNTIME=swarm)"]
    assert not check.ok
    assert "docker swarm init" in (check.fix or "")
    # and the manager passes the same check
    manager = {c.name: c for c in await host_checks(swarm())}
    assert manager["swarm manager (AGENTKIT_RUNTIME=swarm)"].ok
    # the same engine as a plain Docker runtime is fine
    assert (await open_runtime(LocalExecutor(), settings, "docker")).name == "docker"


async def test_agents_land_on_their_workspace_node_and_an_image_missing_there_fails(
    swarm: Callable[..., Settings], extra_engine: Callable[..., Engine]
) -> None:
    with_image = extra_engine(images=(BASE_IMAGE,))
    without = extra_engine()
    async with LocalExecutor() as executor:
        for engine in (with_image, without):
            settings = swarm(swarm_node=engine.node_id, gateway=False)  # see EXTRA ENGINES
            async with AgentService(executor, settings) as agents:
                spawned = await agents.spawn(
                    "where", "w", 60_000, command=["sh", "-c", "printf 'here\\n'"]
                )
                waited = await agents.wait(spawned.id, 60_000)
                info = waited.status
                if engine is with_image:
                    assert info.state == AgentState.SUCCEEDED, info
                    record = await agents.store.read_meta(spawned.id)
                    assert record is not None
                    assert record["node"] == engine.node_id
                else:
                    assert info.state == AgentState.FAILED, info
                    assert BASE_IMAGE.split(":")[0] in (info.error or ""), info
                    assert f"on node {engine.node_id}: copy the image" in (info.error or "")


async def test_the_image_reaches_a_node_through_the_registry(
    swarm: Callable[..., Settings], extra_engine: Callable[..., Engine], registry: str
) -> None:
    """AGENTKIT_SWARM_REGISTRY: a node that lacks the image pulls it from a real registry."""
    node = extra_engine()  # no images at all
    settings = swarm(swarm_node=node.node_id, swarm_registry=registry, gateway=False)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn("pulled", "w", 120_000, command=["sh", "-c", "exit 0"])
        waited = await agents.wait(spawned.id, 120_000)
        assert waited.status.state == AgentState.SUCCEEDED, waited.status
    pulled = node.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert f"{registry}/{BASE_IMAGE}" in pulled


async def test_an_unreachable_registry_fails_the_spawn_saying_so(
    swarm: Callable[..., Settings],
) -> None:
    settings = swarm(swarm_registry="127.0.0.1:9")  # discard port: nothing listens there
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        with pytest.raises(ToolError, match=r"AGENTKIT_SWARM_REGISTRY=127\.0\.0\.1:9 "):
            await agents.spawn("x", "w", 60_000, command=["true"])
        assert await agents.list() == []
    tags = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for tag in {t for t in tags if t.startswith("127.0.0.1:9/")}:
        subprocess.run(["docker", "rmi", f"{tag}:bookworm"], capture_output=True, check=False)


async def test_a_node_that_disappears_mid_run_leaves_its_agent_lost_with_its_output(
    swarm: Callable[..., Settings], extra_engine: Callable[..., Engine]
) -> None:
    engine = extra_engine(images=(BASE_IMAGE,))
    settings = swarm(swarm_node=engine.node_id, gateway=False)  # see EXTRA ENGINES
    script = 'printf \'{"type":"system","subtype":"init","session_id":"s"}\\n\'; sleep 300'
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn("doomed", "w", 120_000, command=["sh", "-c", script])
        async for _event in agents.watch(spawned.id):
            break  # it printed: it runs on the node
        engine.kill()
        waited = await agents.wait(spawned.id, 90_000)
        status = waited.status
        assert status.state == AgentState.LOST, status
        assert engine.node_id in (status.error or "")
        assert status.session_id == "s"  # what it printed before is kept
        await agents.settle()
        record = await agents.store.read_result(spawned.id)
        assert record is not None
        assert record["state"] == "lost"
        assert b'"session_id":"s"' in await agents.store.read_output(spawned.id)
        # its workspace's node is down: new agents there are refused, saying why
        with pytest.raises(ToolError, match="cannot start until it is back"):
            await agents.spawn("again", "w", 60_000, command=["true"])


async def test_agents_land_on_their_workspaces_nodes_in_a_docker_in_docker_swarm(
    swarm: Callable[..., Settings], extra_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """Two Docker-in-Docker nodes (Debian's dockerd in containers of docker/Dockerfile.swarm-node)
    join the swarm; each holds the workspaces of one agentkit root (a host directory mounted
    into the node at the same path). An agent spawned on either runs on its workspace's node
    (that node's engine runs its container, the other's does not) and finishes there."""
    shared = str(tmp_path / "shared")
    Path(shared).mkdir()
    nodes = [extra_engine(images=(BASE_IMAGE,), dind=True, share=(shared,)) for _ in range(2)]
    init = '{"type":"system","subtype":"init","session_id":"s"}'
    script = (
        f"printf '%s\\n' '{init}'; "
        "while [ ! -e /workspace/go ]; do sleep 0.1; done; printf done > /workspace/landed.txt"
    )
    async with LocalExecutor() as executor:
        for index, node in enumerate(nodes):
            other = nodes[1 - index]
            settings = swarm(root=f"{shared}/n{index}", swarm_node=node.node_id, gateway=False)
            async with AgentService(executor, settings) as agents:
                runtime = await agents.runtime()
                spawned = await agents.spawn("land", "ws", 120_000, command=["sh", "-c", script])
                async for _event in agents.watch(spawned.id):
                    break  # it printed: it runs
                assert (await runtime.inspect(spawned.id)).node == node.node_id
                label = f"label=com.docker.swarm.service.name={spawned.id}"
                assert node.docker("ps", "-q", "--filter", label) != ""
                assert other.docker("ps", "-aq", "--filter", label) == ""
                await executor.write_file(f"{spawned.workspace}/go", b"")
                waited = await agents.wait(spawned.id, 120_000)
                assert waited.status.state == AgentState.SUCCEEDED, waited.status
                assert await executor.read_file(f"{spawned.workspace}/landed.txt") == b"done"
