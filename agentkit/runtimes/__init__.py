"""Runtimes: where agent runs (and git sandboxes) execute, behind one neutral contract.

* :mod:`~agentkit.runtimes.base` - the contract (:class:`Runtime`, :class:`RunSpec`,
  :class:`RunInfo`, :class:`ExitEvent`, :class:`LogChunk`); imports no backend.
* :mod:`~agentkit.runtimes.docker` - one Docker Engine (:class:`DockerRuntime`); its client and
  error map in :mod:`~agentkit.runtimes.docker_engine`, image builds in
  :mod:`~agentkit.runtimes.image`.
* :mod:`~agentkit.runtimes.swarm` - Docker Swarm services (:class:`SwarmRuntime`).
* :mod:`~agentkit.runtimes.memory` - in-process, for fast tests (:class:`MemoryRuntime`).

:func:`open_runtime` opens the one ``AGENTKIT_RUNTIME`` names. See ``docs/scale-out.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentkit.runtimes.base import (
    ExitEvent,
    ExitReason,
    LogChunk,
    Mount,
    RunInfo,
    RunSpec,
    RunState,
    Runtime,
    parse_memory,
)

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings
    from agentkit.executors.base import Executor

__all__ = [
    "RUNTIMES",
    "ExitEvent",
    "ExitReason",
    "LogChunk",
    "Mount",
    "RunInfo",
    "RunSpec",
    "RunState",
    "Runtime",
    "open_runtime",
    "parse_memory",
]

#: the runtimes ``AGENTKIT_RUNTIME`` / ``connect(runtime=...)`` can name
RUNTIMES = ("docker", "swarm")
#: connections (SSH channels over SSH) the Docker runtime's hot queries fan out over
ENGINE_POOL = 4


async def open_runtime(
    executor: Executor,
    settings: Settings,
    kind: str | None = None,
    *,
    docker: aiodocker.Docker | None = None,
) -> Runtime:
    """Open the runtime ``kind`` (default ``settings.runtime``) on the executor's host.

    ``docker``: an open Engine API client to use (the runtime then owns it). Raises
    ``ConfigError`` for an unknown kind or a swarm runtime on an engine that is no manager,
    ``RuntimeUnavailable`` when the engine cannot be reached.
    """
    from agentkit.errors import ConfigError
    from agentkit.runtimes.docker import DockerRuntime
    from agentkit.runtimes.docker_engine import open_docker
    from agentkit.runtimes.engine_http import EngineHTTP

    kind = kind or settings.runtime
    if kind not in RUNTIMES:
        raise ConfigError(f"unknown runtime {kind!r}: use one of {', '.join(RUNTIMES)}")
    client = docker or await open_docker(executor, settings)
    try:
        socket = settings.docker_socket
        engine = EngineHTTP(
            lambda: executor.open_unix_connection(socket), client.api_version, size=ENGINE_POOL
        )
        if kind == "swarm":
            from agentkit.runtimes.swarm import SwarmRuntime

            return await SwarmRuntime.open(client, socket=socket, settings=settings, http=engine)
        return DockerRuntime(client, socket=socket, settings=settings, engine=engine)
    except BaseException:
        if docker is None:
            await client.close()
        raise
