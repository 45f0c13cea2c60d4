"""Limits, controller-side deadline enforcement and ownership, on a real dockerd.

These use the plain base image with a shell command (``AgentService.spawn(command=...)``, a
low-level override never exposed to the model), so they run in a fraction of a second each and
do not need the Claude Code image.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.containers.follow import DEADLINE_GRACE
from agentkit.containers.service import AgentService, AgentState, new_agent_id
from agentkit.errors import ConfigError, NotFoundError, PermissionDeniedError, ToolError
from agentkit.executors.local import LocalExecutor
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
from tests.support import require, wait_past, wait_until

pytestmark = [pytest.mark.docker]


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


def _settings(tmp_path: Path, image: str, **kw: object) -> Settings:
    return Settings(
        host=None,
        root=str(tmp_path / "root"),
        image=image,
        anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
        **kw,  # type: ignore[arg-type]
    )


async def test_fork_bomb_is_held_at_the_pids_limit(base_image: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_image, container_pids=48)
    # Every bomb process keeps its pid (exec sleep) after forking two more, so the container
    # fills up to the limit and stays there; the main shell never forks inside the bomb (a
    # refused fork would end it, and the container with it, before the measurement).
    bomb = "b() { b & b & exec sleep 600; }; b & exec sleep 600"
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn("fork bomb", "bomb", 15_000, command=["sh", "-c", bomb])
        runtime = await agents.runtime()
        docker = runtime.docker  # type: ignore[attr-defined]
        samples: list[int] = []

        async def filled_up() -> bool:
            stats = await docker._query_json(
                f"containers/{spawned.id}/stats", params={"stream": "0", "one-shot": "1"}
            )
            samples.append(int(stats["pids_stats"].get("current", 0)))
            return samples[-1] >= 40

        await wait_until(filled_up, "the bomb to fill the pids limit", timeout=60, interval=0.1)
        # it ran into the limit and never past it
        assert max(samples) <= 48, samples
        # the host stays healthy: it can still fork plenty of processes of its own
        forks = await executor.run(["sh", "-c", "for i in $(seq 100); do true & done; wait"])
        assert forks.ok, forks
        # no in-container timeout here: the controller's deadline guard ends it
        waited = await agents.wait(spawned.id, 60_000)
        assert waited.status.state == AgentState.TIMED_OUT, waited.status
        # the bomb did run into the limit (dash reports each refused fork)
        await agents.settle()  # the record is written right after wait returns
        assert b"Cannot fork" in await agents.store.read_stderr(spawned.id)


async def test_memory_hog_ends_oom_killed(base_image: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_image, container_memory="48m")
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn(
            "memory hog", "hog", 30_000, command=["sh", "-c", "tail /dev/zero"]
        )
        waited = await agents.wait(spawned.id, 30_000)
        assert waited.status.state == AgentState.OOM_KILLED, waited.status
        assert waited.status.oom_killed is True
        assert waited.status.exit_code == 137


#: prints the limits the kernel holds the container to (cgroup v1 files, or v2 where mounted),
#: then lets `tail` eat memory until the kernel's OOM killer ends it (the shell survives to report)
LIMITS_PROBE = r"""
cg=/sys/fs/cgroup
if [ -f $cg/memory/memory.limit_in_bytes ]; then
  echo "memory $(cat $cg/memory/memory.limit_in_bytes)"
  echo "pids $(cat $cg/pids/pids.max)"
  echo "cpu $(cat $cg/cpu/cpu.cfs_quota_us) $(cat $cg/cpu/cpu.cfs_period_us)"
  tail /dev/zero
  echo "tail-exit $?"
  echo "peak $(cat $cg/memory/memory.max_usage_in_bytes)"
  echo "oom-kills $(sed -n 's/^oom_kill //p' $cg/memory/memory.oom_control)"
else
  echo "memory $(cat $cg/memory.max)"
  echo "pids $(cat $cg/pids.max)"
  echo "cpu $(cat $cg/cpu.max)"
  tail /dev/zero
  echo "tail-exit $?"
  echo "peak $(cat $cg/memory.peak)"
  echo "oom-kills $(sed -n 's/^oom_kill //p' $cg/memory.events)"
fi
"""


@pytest.mark.slow
async def test_the_default_limits_are_enforced_by_the_kernel(
    base_image: str, tmp_path: Path
) -> None:
    """No limit configured: the container runs under the documented defaults (4g memory, 2
    CPUs, 200 pids) as the kernel sees them, and using more than 4 GiB gets a process killed."""
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn(
            "limits", "limits", 120_000, command=["sh", "-c", f"{{\n{LIMITS_PROBE}\n}} >&2"]
        )
        waited = await agents.wait(spawned.id, 120_000)
        await agents.settle()
        report = (await agents.store.read_stderr(spawned.id)).decode()
        assert waited.status.exit_code == 0, (waited.status, report)
    values = dict(line.partition(" ")[::2] for line in report.splitlines())
    gib4 = 4 << 30
    assert int(values["memory"]) == gib4, report
    assert values["pids"] == "200", report
    assert values["cpu"] == "200000 100000", report  # 2 CPUs: 200 ms per 100 ms period
    assert values["tail-exit"] == "137", report  # SIGKILL from the OOM killer
    assert int(values["oom-kills"]) >= 1, report
    # it really got that far: the peak sits at the limit, not below it, and not past it
    assert gib4 - (64 << 20) <= int(values["peak"]) <= gib4, report


async def test_reconcile_enforces_deadlines_without_any_in_container_timeout(
    base_image: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor:
        first = AgentService(executor, settings)
        spawned = await first.spawn("sleeper", "sleepy", 1000, command=["sleep", "600"])
        await first.aclose()  # controller gone before the deadline
        assert spawned.deadline is not None
        # the deadline and the grace the in-container timeout gets pass while no controller runs
        await wait_past(spawned.deadline + DEADLINE_GRACE)
        second = AgentService(executor, settings)
        try:
            report = await second.reconcile()  # the first call connects and reconciles
            assert report["timed_out"] == 1, report
            waited = await second.wait(spawned.id, 10_000)
            assert waited.status.state == AgentState.TIMED_OUT
            assert (await second.store.read_stop(spawned.id) or {}).get("reason") == "timed_out"
        finally:
            await second.aclose()


async def test_only_our_containers_can_be_touched(base_image: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_image)
    foreign_name = new_agent_id()  # our id shape, but created without our label
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        foreign = await docker.containers.create(
            {"Image": base_image, "Cmd": ["sleep", "60"], "Labels": {"test": "foreign"}},
            name=foreign_name,
        )
        await foreign.start()
        try:
            async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
                toolset = Toolset(
                    container_tools(),
                    context=ToolContext(settings=settings, executor=executor, agents=agents),
                )
                for call in (agents.status, agents.stop, agents.output):
                    with pytest.raises(PermissionDeniedError, match="not created by agentkit"):
                        await call(foreign_name)
                with pytest.raises(PermissionDeniedError):
                    await agents.wait(foreign_name, 10)
                for name in ("get_claude_status", "stop_claude_agent", "get_claude_output"):
                    for cid in (foreign_name, foreign.id, "nginx", foreign.id[:12]):
                        result = await toolset.call(name, {"container_id": cid})
                        assert result.is_error
                        assert "agentkit" in result.content
                assert foreign_name not in [a.id for a in await agents.list()]
                with pytest.raises(NotFoundError, match="list_claude_agents"):
                    await agents.status(new_agent_id())
            info = await foreign.show()
            assert info["State"]["Running"] is True  # untouched
        finally:
            await foreign.delete(force=True)


async def test_bad_spawns_are_refused_or_recorded(base_image: str, tmp_path: Path) -> None:
    # no gateway: the engine must refuse the agent's own container (behind the gateway the
    # network setting is the gateway's; test_gateway_e2e covers that side)
    settings = _settings(
        tmp_path, base_image, container_network="agentkit-test-no-such-net", gateway=False
    )
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        toolset = Toolset(
            container_tools(),
            context=ToolContext(settings=settings, executor=executor, agents=agents),
        )
        for bad, needle in (
            ({"task": "", "workspace_path": "w"}, "task is empty"),
            ({"task": "a\x00b", "workspace_path": "w"}, "NUL"),
            ({"task": "x", "workspace_path": "w", "timeout": 5}, "$.timeout: 5 is less than"),
            ({"task": "x", "workspace_path": "/etc"}, "not a workspace"),
            ({"task": "x", "workspace_path": "w/sub"}, "path separator"),
            ({"task": "x", "workspace_path": "x" * 300}, "characters long"),
            ({"task": "x" * 100_001, "workspace_path": "w"}, "longer than"),
        ):
            result = await toolset.call("spawn_claude_agent", bad)
            assert result.is_error
            assert needle in result.content, result.content
        # the service checks the range too, for callers that skip the tool schema
        with pytest.raises(ToolError, match="timeout must be between"):
            await agents.spawn("x", "w", 5)
        with pytest.raises(ToolError, match="does not exist"):
            await agents.spawn("x", "w", 5000, image="agentkit-test-no-such-image:0")
        # the engine refuses the container: the error surfaces and the run is recorded failed
        with pytest.raises(ToolError, match="no-such-net"):
            await agents.spawn("x", "w", 5000, command=["true"])
        (failed,) = await agents.list()
        assert failed.state == AgentState.FAILED
        assert failed.error is not None
        assert "could not start" in failed.error


async def test_spawn_without_credentials_is_a_config_error(base_image: str, tmp_path: Path) -> None:
    settings = Settings(host=None, root=str(tmp_path / "root"), image=base_image)
    settings.anthropic_api_key = None
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
            await agents.spawn("x", "w", 5000)
        assert await agents.list() == []


async def test_closing_right_after_wait_still_records_and_removes(
    base_image: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor:
        agents = AgentService(executor, settings)
        spawned = await agents.spawn("quick", "quick", 10_000, command=["sh", "-c", "echo hi"])
        waited = await agents.wait(spawned.id, 10_000)
        assert waited.status.state == AgentState.SUCCEEDED
        await agents.aclose()  # at once: the record and the removal are still completed
        result = await agents.store.read_result(spawned.id)
        assert result is not None
        assert result["state"] == "succeeded"
        async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
            left = await docker.containers.list(
                all=True, filters=json.dumps({"name": [spawned.id]})
            )
        assert left == []  # the agent's container is gone (the gateway stays for the next)


async def test_a_workspace_is_free_as_soon_as_wait_returns(base_image: str, tmp_path: Path) -> None:
    """The engine lists a container as running for a moment after it exited (~1 time in 3 right
    after ``wait``); a workspace whose agent this service knows is finished must not count as
    busy (push right after wait). Repeats until the engine was seen in that state."""
    settings = _settings(tmp_path, base_image)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        runtime = await agents.runtime()
        sleeper = await agents.spawn("sleeper", "other", 600_000, command=["sleep", "600"])
        seen_stale = 0
        for _ in range(40):
            spawned = await agents.spawn("quick", "quick", 10_000, command=["true"])
            waited = await agents.wait(spawned.id, 10_000)
            assert waited.status.state == AgentState.SUCCEEDED
            active = await agents.active_workspaces()
            engine = await runtime.list(agents.labels)  # after: if it still says running...
            assert active == {sleeper.workspace}, active
            seen_stale += any(c.name == spawned.id and c.running for c in engine)
            await agents.settle()
            if seen_stale >= 2:
                break
        await agents.stop(sleeper.id)
        assert await agents.active_workspaces() == set()


async def test_the_api_key_never_leaves_through_container_info(
    base_image: str, tmp_path: Path
) -> None:
    """The container's Env holds ANTHROPIC_API_KEY: what inspect/list keep, and what status and
    list return, never contain it (nothing there can log or return it)."""
    settings = _settings(tmp_path, base_image)
    key = settings.require_api_key()
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = await agents.spawn("sleeper", "keyed", 30_000, command=["sleep", "600"])
        runtime = await agents.runtime()
        infos = [await runtime.inspect(spawned.id), *await runtime.list(agents.labels)]
        status, listed = await agents.status(spawned.id), await agents.list()
        shown = [
            *(repr(info) for info in infos),
            *(json.dumps(info.raw, default=str) for info in infos),
            repr(status),
            json.dumps(status.to_dict()),
            *(repr(item) for item in listed),
            *(json.dumps(item.to_dict()) for item in listed),
        ]
        assert "Config" in infos[0].raw  # the rest of the inspect output is kept
        for text in shown:
            assert key not in text
        await agents.stop(spawned.id)


@pytest.mark.parametrize("network", ["host", "container:agentkit-test-other"])
async def test_host_or_container_network_is_refused_before_anything_is_made(
    base_image: str, tmp_path: Path, network: str
) -> None:
    settings = _settings(tmp_path, base_image, container_network=network)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        with pytest.raises(ConfigError, match="AGENTKIT_CONTAINER_NETWORK"):
            await agents.spawn("x", "net", 5000, command=["true"])
        assert await agents.list() == []
        assert not (tmp_path / "root" / "workspaces" / "net").exists()
