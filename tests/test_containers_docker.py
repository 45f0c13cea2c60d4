"""The Docker client and the one place backend errors are mapped (real dockerd where needed)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import aiodocker.exceptions as dexc
import aiohttp
import pytest

from agentkit.config import Settings
from agentkit.errors import (
    ConfigError,
    ConflictError,
    ImageBuildError,
    NotFoundError,
    PermissionDeniedError,
    RuntimeUnavailable,
    ToolError,
)
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.docker_engine import (
    BACKEND_ERRORS,
    docker_errors,
    map_docker_error,
    open_docker,
)
from tests.containers_support import BASE_IMAGE, image_ok
from tests.support import require

DOCKER_SOCKET = "/var/run/docker.sock"

MAPPED: list[tuple[BaseException, type[Exception]]] = [
    (dexc.DockerError(900, "Cannot connect to Docker Engine"), RuntimeUnavailable),
    (dexc.DockerError(404, "No such container: x"), NotFoundError),
    (dexc.DockerError(409, "name already in use"), ConflictError),
    (dexc.DockerError(304, "container already stopped"), ConflictError),
    (dexc.DockerError(401, "unauthorized"), PermissionDeniedError),
    (dexc.DockerError(403, "forbidden"), PermissionDeniedError),
    (dexc.DockerError(400, "invalid memory"), ConfigError),
    (dexc.DockerError(500, "OCI runtime create failed"), ToolError),
    (dexc.DockerContainerError(404, "gone", "abc"), NotFoundError),
    (dexc.DockerStreamError("step 3 failed"), ImageBuildError),
    (dexc.DockerContextError("bad context"), ConfigError),
    (dexc.DockerContextInvalidError("bad json"), ConfigError),
    (dexc.DockerContextTLSError("bad cert"), ConfigError),
    (aiohttp.ServerDisconnectedError(), RuntimeUnavailable),
    (aiohttp.ClientConnectionError("reset"), RuntimeUnavailable),
    (aiohttp.ClientPayloadError("truncated"), RuntimeUnavailable),
    (ConnectionRefusedError(111, "refused"), RuntimeUnavailable),
    (FileNotFoundError(2, "no socket"), RuntimeUnavailable),
    (aiohttp.ClientError("other"), RuntimeUnavailable),
]


@pytest.mark.parametrize(("exc", "expected"), MAPPED, ids=lambda v: type(v).__name__)
def test_each_backend_error_is_mapped(exc: BaseException, expected: type[Exception]) -> None:
    mapped = map_docker_error(exc, what="inspect x")
    assert type(mapped) is expected
    assert "inspect x" in str(mapped)
    with pytest.raises(expected) as info, docker_errors("inspect x"):
        raise exc
    assert info.value.__cause__ is exc


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _all_subclasses(sub)
    return out


def test_every_aiodocker_exception_class_is_covered() -> None:
    covered = {type(exc) for exc, _ in MAPPED}
    missing = {c for c in _all_subclasses(dexc.DockerError) if c.__module__.startswith("aiodocker")}
    assert missing - covered == set()
    assert all(isinstance(exc, BACKEND_ERRORS) for exc, _ in MAPPED)


def test_unavailable_message_says_how_to_fix() -> None:
    err = map_docker_error(dexc.DockerError(900, "nope"), socket="/x.sock")
    assert "dockerd" in str(err)
    assert "/x.sock" in str(err)
    assert "AGENTKIT_DOCKER_SOCKET" in str(err)


def test_timeouts_and_foreign_errors_propagate() -> None:
    with pytest.raises(TimeoutError), docker_errors():
        raise TimeoutError
    with pytest.raises(ValueError, match="ours"), docker_errors():
        raise ValueError("ours")
    with pytest.raises(TypeError):
        map_docker_error(ValueError("not docker"))


async def test_open_docker_missing_socket_is_runtime_unavailable(tmp_path: object) -> None:
    settings = Settings(docker_socket=f"{tmp_path}/no-docker.sock")
    async with LocalExecutor() as executor:
        with pytest.raises(RuntimeUnavailable, match=r"no-docker\.sock"):
            await open_docker(executor, settings)


async def test_real_engine_404_and_409_are_mapped() -> None:
    require(os.path.exists(DOCKER_SOCKET), "dockerd (/var/run/docker.sock)")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE} (.ci/build-images.sh)")
    name = f"agentkit-test-conflict-{uuid.uuid4().hex[:8]}"
    config = {"Image": BASE_IMAGE, "Cmd": ["true"], "Labels": {"agentkit.test": "conflict"}}
    async with LocalExecutor() as executor:
        docker = await open_docker(executor, Settings(docker_socket=DOCKER_SOCKET))
        try:
            with pytest.raises(NotFoundError), docker_errors("inspect"):
                await docker.containers.get("claude-agent-0000000000000-nosuch")
            with pytest.raises(NotFoundError), docker_errors("inspect image"):
                await docker.images.inspect("agentkit-test-no-such-image:none")
            # the engine answers 409 for a second container with the same name
            first = await docker.containers.create(config, name=name)
            try:
                with (
                    pytest.raises(ConflictError, match="create container") as info,
                    docker_errors("create container"),
                ):
                    await docker.containers.create(config, name=name)
                assert isinstance(info.value.__cause__, dexc.DockerError)
                assert info.value.__cause__.status == 409
            finally:
                await first.delete(force=True)
            assert docker.api_version.startswith("v1.")
        finally:
            await docker.close()


async def test_closing_the_service_while_an_agent_runs_leaves_no_request_behind(
    tmp_path: Path,
) -> None:
    """aclose while an agent still runs on a runtime the caller owns: every task the service
    started to follow it - the log reader, the exit waiter and the engine ``wait`` request in
    it - has ended when aclose returns. Before, the exit waiter and its request were only
    cancelled: still inside aiohttp (``ceil_timeout``) when the caller closed its engine
    connection and the loop ended, they were garbage-collected there (an unraisable
    GeneratorExit). The "agent" is a plain container of this test's root, re-adopted."""
    import asyncio

    import aiodocker

    from agentkit.containers.models import new_agent_id
    from agentkit.containers.ownership import scope_labels
    from agentkit.containers.service import AgentService
    from agentkit.runtimes.docker import DockerRuntime

    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    root = str(tmp_path / "root")
    settings = Settings(_env_file=None, host=None, root=root, image=BASE_IMAGE)  # type: ignore[call-arg]
    labels = {k: v for k, v in scope_labels(root).items() if v is not None}
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        container = await docker.containers.create(
            {"Image": BASE_IMAGE, "Cmd": ["sleep", "300"], "Labels": labels}, name=new_agent_id()
        )
        try:
            await container.start()
            before = asyncio.all_tasks()
            service = AgentService(LocalExecutor(), settings, runtime=DockerRuntime(docker))
            assert (await service.reconcile())["followed"] == 1
            await service.aclose()
            left = [
                f"{t.get_name()} ({t.get_coro().__qualname__})"  # type: ignore[union-attr]
                for t in asyncio.all_tasks() - before
                if not t.done()
            ]
            assert left == []
        finally:
            await container.delete(force=True)
