"""`connect()`: wire settings -> executor -> services -> the product tools, in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentkit.config import Settings, load_settings
from agentkit.errors import RuntimeUnavailable
from agentkit.executors import make_executor
from agentkit.executors.base import Executor
from agentkit.gateway.recorder import UsageRecorder
from agentkit.tools.base import ToolContext
from agentkit.tools.toolset import Toolset

logger = logging.getLogger("agentkit")

if TYPE_CHECKING:
    from agentkit.agent.loop import ToolBasedAgent
    from agentkit.containers.registry import RunObserver
    from agentkit.containers.service import AgentService
    from agentkit.runtimes.base import Runtime
    from agentkit.workspaces.service import WorkspaceService


def default_tools() -> list[Any]:
    """The fifteen product tools: six for agents, six for workspaces, three for sessions."""
    from agentkit.tools.containers import container_tools
    from agentkit.tools.sessions import session_tools
    from agentkit.tools.workspaces import workspace_tools

    return [*container_tools(), *workspace_tools(), *session_tools()]


@dataclass
class Connection:
    """What :func:`connect` yields: settings, the executor, services and the wired toolset."""

    settings: Settings
    executor: Executor
    agents: AgentService
    workspaces: WorkspaceService
    toolset: Toolset
    #: the outer agent's usage, recorded in the gateway's cost ledger (``None``: no gateway)
    usage_recorder: UsageRecorder | None = None

    def agent(self, **options: Any) -> ToolBasedAgent:
        """A :class:`ToolBasedAgent` over this connection's toolset, configured from settings.

        Keyword options override the settings (``model=``, ``system=``, ``max_turns=``,
        ``before_tool=``, ``client=``, ...). The default system prompt
        (:func:`agentkit.agent.prompts.operator_prompt`) explains the tools' workflow.
        """
        from agentkit.agent.loop import ToolBasedAgent
        from agentkit.agent.prompts import operator_prompt

        options.setdefault("system", operator_prompt(self.settings))
        if self.usage_recorder is not None:
            options.setdefault("on_usage", self.usage_recorder)
        return ToolBasedAgent.from_settings(self.toolset, self.settings, **options)


@asynccontextmanager
async def connect(
    settings: Settings | None = None,
    *,
    reconcile: bool = True,
    runtime: Runtime | str | None = None,
    observers: Sequence[RunObserver] = (),
) -> AsyncIterator[Connection]:
    """Connect to the configured host and yield a :class:`Connection`.

    ``AGENTKIT_HOST`` unset means the local machine. Agents run on ``runtime``: a name
    (``"docker"``, ``"swarm"``), a :class:`~agentkit.runtimes.base.Runtime` (e.g. the in-memory
    one in tests), or ``None`` for ``AGENTKIT_RUNTIME``. On entry the agent service reconciles
    runs left by earlier controllers (deadlines enforced, finished runs recorded) unless
    ``reconcile=False``. ``observers`` hear of every agent run's start, events and end
    (:class:`~agentkit.containers.registry.RunObserver`), reconciled ones included. Everything
    is closed on exit; running agents keep running.

    Example::

        async with agentkit.connect() as conn:
            result = await conn.toolset.call("list_workspaces", {})
            answer = await conn.agent().run("Spawn an agent that adds a README to demo")
    """
    from agentkit.containers.service import AgentService
    from agentkit.workspaces.service import WorkspaceService

    settings = settings or load_settings()
    executor = make_executor(settings)
    async with executor:
        agents = AgentService(executor, settings, runtime=runtime, observers=observers)
        try:
            if reconcile:
                try:
                    await agents.reconcile()
                except RuntimeUnavailable as exc:
                    # Workspace tools still work without Docker; agent tools will say why not.
                    logger.warning("agent runs not reconciled: %s", exc)

            async def sandbox_runtime() -> Runtime:
                return (await agents.runtime()).node_runtime()

            workspaces = WorkspaceService(
                executor,
                settings,
                busy=agents.active_workspaces,
                redactor=agents.redactor,
                runtime=sandbox_runtime,  # git sandboxes share the agents' engine connection
            )
            context = ToolContext(
                settings=settings,
                executor=executor,
                agents=agents,
                workspaces=workspaces,
                redactor=agents.redactor,  # one redactor: it learns secrets the service sees
            )
            toolset = Toolset(
                default_tools(),
                context=context,
                max_result_bytes=settings.tool_result_max_bytes,
            )
            recorder = UsageRecorder(agents) if settings.gateway else None
            try:
                yield Connection(settings, executor, agents, workspaces, toolset, recorder)
            finally:
                if recorder is not None:
                    await recorder.aclose()
        finally:
            await agents.aclose()
