"""The library's exception hierarchy.

Two families:

* **Tool-level failures** (:class:`ToolError` and subclasses) are things the model can fix by
  calling differently. :class:`agentkit.Toolset` turns them into ``ToolResult(is_error=True)``.
* **Programming / configuration / infrastructure errors** (:class:`ConfigError`,
  :class:`ModelError`, ...) propagate to the caller.

Backend exceptions (asyncssh, aiodocker, httpx, anthropic) are mapped into this hierarchy in one
place per backend, so callers never need to import a backend's exception types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentkit.agent.events import RunResult
    from agentkit.executors.base import CommandResult


class AgentkitError(Exception):
    """Base class for every error raised by agentkit."""


class ConfigError(AgentkitError):
    """A setting is missing or invalid. The message says which and how to fix it."""


class ToolError(AgentkitError):
    """A tool could not do what was asked; the message is shown to the model.

    Raise it from a tool (or a service method a tool calls) for failures the model can act on:
    a workspace that does not exist, a container id that is not ours, a timeout.
    """


class NotFoundError(ToolError):
    """The thing named does not exist (workspace, agent run, ...)."""


class ConflictError(ToolError):
    """The request conflicts with the current state (name taken, agent still running, ...)."""


class PermissionDeniedError(ToolError):
    """The request is refused by policy (foreign container, path outside the root, ...)."""


class ModelError(AgentkitError):
    """The Messages API failed after the configured retries, or answered with something unusable."""


class MaxTurnsExceeded(AgentkitError):
    """The agent loop reached ``max_turns`` without the model finishing.

    ``result`` holds the run so far (``max_turns_reached=True``) when the loop raised it.
    """

    def __init__(self, message: str, result: RunResult | None = None) -> None:
        self.result = result
        super().__init__(message)


# --- executors ------------------------------------------------------------------------------


class ExecutorError(AgentkitError):
    """Base class for executor failures."""


class ExecutorConnectionError(ExecutorError):
    """The executor could not reach its host, or lost the connection during a call."""


class CommandFailed(ExecutorError):
    """A command exited non-zero and ``check=True`` was given. Carries the full result."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        err = result.stderr_text().strip().splitlines()
        tail = f": {err[-1]}" if err else ""
        super().__init__(f"command {result.argv[0]!r} exited with {result.exit_status}{tail}")


class CommandTimeout(ExecutorError, TimeoutError):
    """A command ran past its timeout and was killed. Also a :class:`TimeoutError`."""

    def __init__(self, argv: list[str], timeout: float, result: CommandResult | None = None):
        self.argv = argv
        self.timeout = timeout
        self.result = result
        super().__init__(f"command {argv[0]!r} timed out after {timeout:g}s and was killed")


# --- containers -----------------------------------------------------------------------------


class RuntimeUnavailable(AgentkitError):
    """The container runtime (Docker Engine) cannot be reached. The message says how to fix it."""


class ImageBuildError(AgentkitError):
    """Building the agent image failed; carries the failing step's output."""

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        super().__init__(message)


# --- workspaces / GitHub --------------------------------------------------------------------


class GitHubError(ToolError):
    """A GitHub REST call failed; the message says why and what to do."""
