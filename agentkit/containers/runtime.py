"""Transition aliases: the runtime seam moved to :mod:`agentkit.runtimes`.

``ContainerRuntime`` is :class:`agentkit.runtimes.base.Runtime`, ``ContainerSpec`` is
:class:`~agentkit.runtimes.base.RunSpec` and ``ContainerInfo`` is
:class:`~agentkit.runtimes.base.RunInfo`. New code imports from :mod:`agentkit.runtimes`.
"""

from agentkit.runtimes.base import STDERR, STDOUT, LogChunk, Mount, parse_memory
from agentkit.runtimes.base import RunInfo as ContainerInfo
from agentkit.runtimes.base import RunSpec as ContainerSpec
from agentkit.runtimes.base import Runtime as ContainerRuntime
from agentkit.runtimes.docker import DockerRuntime

__all__ = [
    "STDERR",
    "STDOUT",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "DockerRuntime",
    "LogChunk",
    "Mount",
    "parse_memory",
]
