"""The outer agent's own model usage, recorded in the gateway's ledger beside the agents'.

:class:`UsageRecorder` is a :data:`~agentkit.agent.hooks.OnUsage` hook: each turn's usage is
queued (the agent loop never waits for the ledger) and written through the gateway's admin
API as ``source="controller"``. The recorder never starts the gateway: while none answers
(no agent spawned yet on this root), rows wait in memory and are written once it does - at the
latest when the connection closes; what still cannot be written then is logged as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.agent.events import Usage
    from agentkit.containers.service import AgentService

__all__ = ["UsageRecorder"]

logger = logging.getLogger("agentkit.gateway")

MAX_PENDING = 10_000


class UsageRecorder:
    """Queue the outer agent's turns for the ledger (``on_usage`` hook)."""

    def __init__(self, agents: AgentService, *, source: str = "controller") -> None:
        self.agents = agents
        self.source = source
        self.pending: list[dict[str, Any]] = []
        self.recorded = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time: a row is written once
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, usage: Usage, model: str) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.pop(0)
            self.dropped += 1
        self.pending.append(
            {
                "source": self.source,
                "model": model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cost_usd": usage.cost_usd,
            }
        )
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="agentkit usage recorder")
        self._wake.set()

    async def flush(self) -> bool:
        """Write what is pending; ``False`` if the gateway does not answer (rows kept)."""
        gateway = await self.agents.gateway()
        if gateway is None:
            return False
        async with self._lock:
            while self.pending:
                try:
                    client = await gateway.host.attach()
                    await client.record_usage(**self.pending[0])
                except AgentkitError:
                    return False
                self.pending.pop(0)
                self.recorded += 1
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.pending and not await self.flush():
            logger.info(
                "%d turns of the controlling agent's usage were not recorded in the cost "
                "ledger: no gateway answered on this agentkit root",
                len(self.pending),
            )
