"""Small toolsets for the adapter tests (importable by subprocesses as tests.adapter_toolsets)."""

from __future__ import annotations

from typing import Literal

from agentkit import ToolResult, Toolset, tool
from agentkit.errors import NotFoundError

#: what the destructive tool did, for tests in this process
DELETED: list[str] = []


@tool
async def add(a: int, b: int = 1) -> str:
    """Add two integers.

    Args:
        a: first number.
        b: second number.
    """
    return str(a + b)


@tool
async def lookup(key: str, mode: Literal["short", "long"] = "short") -> ToolResult:
    """Look a key up and return structured data.

    Args:
        key: what to look up.
        mode: how much to say.
    """
    if key == "missing":
        raise NotFoundError(f"no entry named {key!r}")
    return ToolResult(f"{key} found", data={"key": key, "mode": mode, "size": len(key)})


@tool(destructive=True)
async def delete_thing(name: str) -> str:
    """Delete a thing permanently.

    Args:
        name: the thing to delete.
    """
    DELETED.append(name)
    return f"deleted {name}"


def make_toolset() -> Toolset:
    return Toolset([add, lookup, delete_thing])


#: a secret the ``misconfigured`` tool leaks into its ConfigError
LEAKED_SECRET = "cfg-secret-0f3a9c2e1b4d8f6a"


@tool
async def misconfigured() -> str:
    """Fail with a configuration error that quotes a secret."""
    from agentkit.errors import ConfigError

    raise ConfigError(f"bad setting: token {LEAKED_SECRET} was rejected")


def leaky_toolset() -> Toolset:
    """A toolset whose redactor knows :data:`LEAKED_SECRET`."""
    from agentkit.redact import Redactor
    from agentkit.tools.base import ToolContext

    return Toolset([misconfigured], context=ToolContext(redactor=Redactor([LEAKED_SECRET])))


toolset = make_toolset()


def product_tools() -> Toolset:
    """The product's fifteen tools, wired to workspaces on this machine (``AGENTKIT_ROOT``).

    No Docker: the agent tools are listed but only workspace tools are meant to be called.
    """
    from agentkit import Settings
    from agentkit.executors.local import LocalExecutor
    from agentkit.tools.base import ToolContext
    from agentkit.tools.containers import container_tools
    from agentkit.tools.sessions import session_tools
    from agentkit.tools.workspaces import workspace_tools
    from agentkit.workspaces.service import WorkspaceService

    settings = Settings()
    executor = LocalExecutor()
    workspaces = WorkspaceService(executor, settings)
    context = ToolContext(settings=settings, executor=executor, workspaces=workspaces)
    return Toolset([*container_tools(), *workspace_tools(), *session_tools()], context=context)
