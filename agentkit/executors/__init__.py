"""Executors: run argv commands, move files and reach unix sockets on "a host".

* :class:`LocalExecutor` - this machine (asyncio subprocesses); the default.
* :class:`SSHExecutor` - a machine over one persistent asyncssh connection.

:func:`make_executor` picks one from :class:`~agentkit.config.Settings` (``AGENTKIT_HOST`` unset:
local). See ``docs/executors.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentkit.executors.base import (
    CommandResult,
    Executor,
    StreamExit,
    StreamLine,
    UnixConnection,
)
from agentkit.executors.local import LocalExecutor

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.ssh import SSHExecutor


def __getattr__(name: str) -> Any:
    # asyncssh takes ~140 ms to import: load it only when a remote host is used.
    if name == "SSHExecutor":
        from agentkit.executors.ssh import SSHExecutor

        return SSHExecutor
    raise AttributeError(f"module 'agentkit.executors' has no attribute {name!r}")


__all__ = [
    "CommandResult",
    "Executor",
    "LocalExecutor",
    "SSHExecutor",
    "StreamExit",
    "StreamLine",
    "UnixConnection",
    "make_executor",
]


def make_executor(settings: Settings | None = None) -> Executor:
    """The executor the settings describe: SSH when ``settings.host`` is set, else local.

    The SSH executor connects lazily (on first use, or eagerly with ``async with``).
    """
    if settings is None:
        from agentkit.config import Settings

        settings = Settings()
    if settings.host:
        from agentkit.executors.ssh import SSHExecutor

        return SSHExecutor(settings)
    return LocalExecutor()
