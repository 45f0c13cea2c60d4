"""Claude Code agents in hardened containers: the service, the runtime seam, records, events.

* :class:`AgentService` - spawn / status / output / stop / list / wait / reconcile (the logic
  behind the six agent tools; usable without any LLM).
* :class:`ContainerRuntime` - the seam to a container engine; :class:`DockerRuntime` is the
  Docker Engine API over the executor's forwarded socket (:func:`open_docker`).
* :class:`RunStore` - run records under ``AGENTKIT_ROOT/runs/<container_id>/`` on the host.
* :mod:`agentkit.containers.streamjson` - Claude Code's stream-json events, typed and rendered.

The service is a facade over ``launch`` (spawning), ``follow`` (following running agents),
``finalize`` (recording ended ones), ``reconcile`` and ``ownership``; ``models`` holds the types.

See ``docs/agents.md``.
"""

from agentkit.containers.docker import docker_errors, map_docker_error, open_docker
from agentkit.containers.runs import RunStore
from agentkit.containers.runtime import (
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    DockerRuntime,
    LogChunk,
    Mount,
    RuntimeEvent,
)
from agentkit.containers.service import (
    AgentOutput,
    AgentService,
    AgentState,
    AgentStatus,
    WaitResult,
    validate_agent_id,
)

__all__ = [
    "AgentOutput",
    "AgentService",
    "AgentState",
    "AgentStatus",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "DockerRuntime",
    "LogChunk",
    "Mount",
    "RunStore",
    "RuntimeEvent",
    "WaitResult",
    "docker_errors",
    "map_docker_error",
    "open_docker",
    "validate_agent_id",
]
