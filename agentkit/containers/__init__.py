"""Claude Code agents in hardened containers: the service, records, events, state.

* :class:`AgentService` - spawn / status / output / stop / list / wait / reconcile (the logic
  behind the six agent tools; usable without any LLM).
* :class:`RunRegistry` - the owner of agent state (live runs, final statuses); a
  :class:`RunObserver` subscribed to it hears of every start, event and end.
* :class:`RunStore` / :class:`RunRecord` - run records under ``AGENTKIT_ROOT/runs/<id>/``.
* :mod:`agentkit.containers.streamjson` - Claude Code's stream-json events, typed and rendered.

Where runs execute is :mod:`agentkit.runtimes` (Docker, Swarm, in-memory). The service is a
facade over ``launcher`` (spawning), ``follow`` (following running agents), ``finalize``
(recording ended ones), ``reconcile`` and ``ownership``; ``models`` holds the types.

See ``docs/agents.md``.
"""

from agentkit.containers.records import RunRecord
from agentkit.containers.registry import RunObserver, RunRegistry
from agentkit.containers.runs import RunStore
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
    "RunObserver",
    "RunRecord",
    "RunRegistry",
    "RunStore",
    "WaitResult",
    "validate_agent_id",
]
