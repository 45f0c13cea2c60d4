"""Fixtures for the runtime contract suite (pytest plugin, see conftest.py).

``any_runtime`` is parametrized ``memory`` / ``docker`` / ``swarm``: a connected runtime and the
labels of this test's runs (a unique root, so parallel engineers and tests never meet). The
Docker and Swarm runtimes use the real engine on /var/run/docker.sock; Swarm needs it to be a
swarm manager (.ci/swarm-init.sh), and under CI=true a missing engine fails the test.

The memory runtime's "agent" plays the same scenarios as the shell scripts the real engines
run (``SCENARIOS``), chosen by the run's ``CONTRACT`` variable.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiodocker
import pytest
import pytest_asyncio

from agentkit.runtimes.base import ExitReason, Runtime
from agentkit.runtimes.memory import MemoryExit, MemoryRun, MemoryRuntime
from tests.containers_support import BASE_IMAGE, DOCKER_SOCKET, docker_ok, image_ok
from tests.support import require, wait_until

#: scenario -> the shell script the real engines run
SCENARIOS = {
    "exit7": "printf 'out-1\\n'; printf 'err-1\\n' >&2; printf 'out-2\\n'; exit 7",
    "ok": "printf 'done\\n'",
    # the second line waits for the test's go (a line on its input), not for a fixed pause
    "slow": "printf 'first\\n'; IFS= read -r go; printf 'second\\n'",
    "forever": "printf 'up\\n'; exec sleep 300",
    "hog": "tail /dev/zero",
    # sessions: two input lines echoed; a file (and a link) left behind; a copied-in file read
    "input": "IFS= read -r a; printf 'got:%s\\n' \"$a\"; IFS= read -r b; printf 'got:%s\\n' \"$b\"",
    "files": "printf hello > /tmp/out.txt; ln -s /etc/passwd /tmp/link; printf done",
    "copied": "cat /tmp/in/x.txt; stat -c ' %u' /tmp/in/x.txt",
    "nofile": "grep '^Max open files' /proc/self/limits",
    # read-only root, a 1 MiB tmpfs at /scratch: writing the root (its /tmp) fails, /scratch
    # takes 512 KiB but not 2 MiB (bounded); the run's own output says which
    "readonly": (
        "if ( : > /tmp/probe ) 2> /dev/null; then echo root-writable; "
        "else echo root-read-only; fi; "
        "if head -c 524288 /dev/zero > /scratch/small; then echo scratch-ok; fi; "
        "if head -c 2097152 /dev/zero > /scratch/big 2> /dev/null; "
        "then echo scratch-unbounded; else echo scratch-full; fi"
    ),
    "inside": (
        "id -u; grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; "
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "ls /workspace"
    ),
}


async def memory_agent(run: MemoryRun) -> int:
    """The scenarios above, played in-process."""
    scenario = run.env.get("CONTRACT", "")
    if scenario == "exit7":
        run.emit("out-1")
        run.error("err-1\n")
        run.emit("out-2")
        return 7
    if scenario == "ok":
        run.emit("done")
        return 0
    if scenario == "slow":
        run.emit("first")
        await run.read_input()
        run.emit("second")
        return 0
    if scenario == "forever":
        run.emit("up")
        await asyncio.sleep(300)
        return 0
    if scenario == "hog":
        raise MemoryExit(137, ExitReason.OOM)
    if scenario == "input":
        for _ in range(2):
            run.emit("got:" + (await run.read_input()).decode())
        return 0
    if scenario == "files":
        run.files["/tmp/out.txt"] = b"hello"
        run.emit("done")
        return 0
    if scenario == "nofile":
        limits = run.files["/proc/self/limits"].decode().splitlines()
        run.emit(next(line for line in limits if line.startswith("Max open files")))
        return 0
    if scenario == "readonly":
        try:
            run.write_file("/tmp/probe", b"")
            run.emit("root-writable")
        except OSError:
            run.emit("root-read-only")
        run.write_file("/scratch/small", bytes(524288))
        run.emit("scratch-ok")
        try:
            run.write_file("/scratch/big", bytes(2097152))
            run.emit("scratch-unbounded")
        except OSError:
            run.emit("scratch-full")
        return 0
    if scenario == "copied":
        run.emit(run.files["/tmp/in/x.txt"].decode() + " 1001")
        return 0
    raise AssertionError(f"unknown scenario {scenario!r}")


@dataclass
class RuntimeUnderTest:
    kind: str
    runtime: Runtime
    labels: dict[str, str]
    image: str


async def remove_labelled(labels: dict[str, str]) -> None:
    """Remove what a test left on the engine by its labels: services, containers, then (the
    gateway's) secrets and networks - a network once the removed tasks have left it."""
    filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        info = await docker.system.info()
        manager = bool((info.get("Swarm") or {}).get("ControlAvailable"))
        if manager:
            for service in await docker._query_json("services", params={"filters": filters}):
                try:
                    await docker._query_json(f"services/{service['ID']}", method="DELETE")
                except aiodocker.exceptions.DockerError as exc:
                    if exc.status != 404:
                        raise
        for container in await docker.containers.list(all=True, filters=filters):
            try:
                await container.delete(force=True)
            except aiodocker.exceptions.DockerError as exc:
                if exc.status not in (404, 409):
                    raise
        if manager:
            for secret in await docker._query_json("secrets", params={"filters": filters}):
                await wait_until(
                    lambda s=secret: delete_if_free(docker, f"secrets/{s['ID']}"),
                    f"secret {secret['Spec']['Name']} removed",
                    interval=0.2,
                )
        for network in await docker._query_json("networks", params={"filters": filters}):
            await wait_until(
                lambda n=network: delete_if_free(docker, f"networks/{n['Id']}"),
                f"network {network['Name']} removed",
                interval=0.2,
            )


async def delete_if_free(docker: aiodocker.Docker, path: str) -> bool:
    """DELETE ``path``: True once it is gone, False while the engine says it is still in use
    (a secret or network of a task that is still stopping)."""
    try:
        await docker._query_json(path, method="DELETE")
    except aiodocker.exceptions.DockerError as exc:
        if exc.status == 404 or "not found" in str(exc.message):  # swarm may say 500
            return True
        if exc.status in (400, 403, 409):
            return False
        raise
    return True


async def swarm_manager() -> bool:
    if not await docker_ok():
        return False
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        info = await docker.system.info()
    return bool((info.get("Swarm") or {}).get("ControlAvailable"))


async def open_engine_runtime(kind: str) -> Runtime:
    from agentkit.runtimes.docker import DockerRuntime
    from agentkit.runtimes.swarm import SwarmRuntime

    docker = aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}")
    if kind == "swarm":
        return await SwarmRuntime.open(docker, socket=DOCKER_SOCKET)
    return DockerRuntime(docker, socket=DOCKER_SOCKET)


@pytest_asyncio.fixture(loop_scope="session", params=["memory", "docker", "swarm"])
async def any_runtime(request: pytest.FixtureRequest) -> AsyncIterator[RuntimeUnderTest]:
    async for rt in _runtime_under_test(str(request.param)):
        yield rt


@pytest_asyncio.fixture(loop_scope="session", params=["docker", "swarm"])
async def engine_runtime(request: pytest.FixtureRequest) -> AsyncIterator[RuntimeUnderTest]:
    async for rt in _runtime_under_test(str(request.param)):
        yield rt


async def _runtime_under_test(kind: str) -> AsyncIterator[RuntimeUnderTest]:
    labels = {
        "agentkit.managed-by": "agentkit",
        "agentkit.root": f"/tmp/contract-{secrets.token_hex(6)}",
        "agentkit.test": "runtime-contract",
    }
    if kind == "memory":
        runtime: Runtime = MemoryRuntime(memory_agent, images=[BASE_IMAGE])
        try:
            yield RuntimeUnderTest(kind, runtime, labels, BASE_IMAGE)
        finally:
            await runtime.aclose()
        return
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE} (.ci/build-images.sh)")
    if kind == "swarm":
        require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    runtime = await open_engine_runtime(kind)
    try:
        yield RuntimeUnderTest(kind, runtime, labels, BASE_IMAGE)
    finally:
        await runtime.aclose()
        await remove_labelled(labels)
