"""`LiveCosts`: running agents' metered cost from the gateway, without a request per status.

``get_claude_status`` and ``list_claude_agents`` show a running agent's cost so far as the
gateway metered it (one admin request over the executor). Asking on every call doubled the
cost of a status (bench/scale.py): the figure is now kept per run and asked again when

* the agent printed anything since it was asked (a model answer is metered by the gateway
  before the agent can print it, so a status after the agent's next event is exact), or
* it is older than :data:`LIVE_COST_MAX_AGE` seconds (what else may change it: a request
  still streaming).

It is a display figure: budgets are enforced by the gateway itself, never from this cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import AgentState
from agentkit.containers.registry import RunObserver
from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.containers.models import AgentStatus
    from agentkit.containers.records import RunRecord
    from agentkit.containers.streamjson import Event
    from agentkit.gateway.agents import AgentGateway

__all__ = ["LIVE_COST_MAX_AGE", "LiveCosts"]

LIVE_COST_MAX_AGE = 1.0  # seconds a running agent's metered cost is shown without asking again
MAX_KNOWN = 4096  # runs whose figure is kept (a controller running all day stays bounded)


class LiveCosts(RunObserver):
    """The gateway's metered cost of running agents, asked again only when it may have changed.

    Args:
        gateway: returns the agent gateway, or ``None`` when agents run without one.
        max_age: seconds an answer is reused for a run that printed nothing since.
    """

    def __init__(
        self,
        gateway: Callable[[], Awaitable[AgentGateway | None]],
        *,
        max_age: float = LIVE_COST_MAX_AGE,
    ) -> None:
        self._gateway = gateway
        self.max_age = max_age
        self._printed: dict[str, int] = {}  # run -> events seen (a change invalidates)
        #: run -> (monotonic time asked, events seen when asked, metered summary or None)
        self._known: dict[str, tuple[float, int, dict[str, Any] | None]] = {}

    # --- RunObserver ----------------------------------------------------------------------------

    def on_event(self, run_id: str, event: Event) -> None:
        self._printed[run_id] = self._printed.get(run_id, 0) + 1

    async def on_finished(self, record: RunRecord) -> None:
        self._known.pop(record.id, None)
        self._printed.pop(record.id, None)

    # --- use ------------------------------------------------------------------------------------

    def _fresh(self, run_id: str, now: float) -> bool:
        known = self._known.get(run_id)
        return (
            known is not None
            and now - known[0] <= self.max_age
            and known[1] == self._printed.get(run_id, 0)
        )

    async def apply(self, statuses: Sequence[AgentStatus]) -> None:
        """Give the running ones among ``statuses`` their metered cost (at most one request)."""
        running = [s for s in statuses if s.state == AgentState.RUNNING]
        if not running:
            return
        now = time.monotonic()
        stale = [s.id for s in running if not self._fresh(s.id, now)]
        if stale:
            gateway = await self._gateway()
            if gateway is None:
                return
            seen = {run_id: self._printed.get(run_id, 0) for run_id in stale}
            try:
                found = await gateway.live(stale)
            except AgentkitError:
                return  # no gateway answering: Claude Code's own figure stays
            for run_id in stale:
                self._known[run_id] = (now, seen[run_id], found.get(run_id))
            if len(self._known) > MAX_KNOWN:  # runs that ended elsewhere: drop the oldest
                for run_id in list(self._known)[: len(self._known) - MAX_KNOWN]:
                    self.forget([run_id])
        for status in running:
            known = self._known.get(status.id)
            metered = known[2] if known is not None else None
            if metered is not None:
                status.cost_usd = metered.get("cost_usd")
                status.max_cost_usd = metered.get("max_cost_usd")

    def forget(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            self._known.pop(run_id, None)
            self._printed.pop(run_id, None)
