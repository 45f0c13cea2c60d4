"""Refused egress requests into the ledger, bounded however fast an agent makes them.

squid logs every request it refuses; an agent can make thousands a second (pipelined requests
to names that are not allowed). Each used to become its own background task and ledger row:
memory and disk grew without bound until the gateway was OOM-killed. :class:`EgressRecorder`
keeps, per run (``None``: refusals no run is known for; at most :data:`MAX_RUNS` runs apart),
the first :data:`MAX_ROWS_PER_RUN` refusals as rows, then one row saying further refusals go
unrecorded, and only counts the rest;
rows wait in a queue of at most :data:`MAX_QUEUED` (more are dropped and counted) that one task
at a time writes in batches, each batch one transaction. Standard library only (runs in the
gateway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .ledger import AsyncLedger, Ledger

__all__ = ["BATCH", "MAX_QUEUED", "MAX_ROWS_PER_RUN", "EgressRecorder", "EgressRow"]

logger = logging.getLogger("agentkit.gateway")

#: refusals of one run recorded as rows (the rest are counted only)
MAX_ROWS_PER_RUN = 200
#: runs counted apart; refusals of further runs are counted with those of no known run
MAX_RUNS = 10_000
#: rows waiting to be written; more are dropped (and counted)
MAX_QUEUED = 2048
#: rows written in one ledger transaction
BATCH = 256
#: the target of the row that says a run's further refusals are not recorded
CAPPED = "(further refusals of this run are counted, not recorded)"


@dataclass(frozen=True, slots=True)
class EgressRow:
    at: float
    run_id: str | None
    client: str
    method: str
    target: str
    result: str


class EgressRecorder:
    """Bounded recording of refused egress requests (see the module docstring).

    ``background`` runs the writing coroutine (the gateway's :meth:`~.proxy.Gateway.background`,
    so that :meth:`~.proxy.Gateway.drain` - awaited before the admin API reads the ledger -
    waits for the refusals taken so far to be written). One write runs at a time."""

    def __init__(
        self, ledger: AsyncLedger, background: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        self._ledger = ledger
        self._background = background
        self._queue: asyncio.Queue[EgressRow] = asyncio.Queue(MAX_QUEUED)
        self._writing = False
        self.recorded: dict[str | None, int] = {}  # rows taken per run
        self.unrecorded: dict[str | None, int] = {}  # refusals past the run's cap, per run
        self.overflow = 0  # rows dropped because the queue was full

    def offer(self, row: EgressRow) -> None:
        """Take a refusal (never blocks, never grows past the bounds)."""
        if row.run_id not in self.recorded and len(self.recorded) >= MAX_RUNS:
            row = EgressRow(row.at, None, row.client, row.method, row.target, row.result)
        taken = self.recorded.get(row.run_id, 0)
        if taken > MAX_ROWS_PER_RUN:
            self.unrecorded[row.run_id] = self.unrecorded.get(row.run_id, 0) + 1
            return
        self.recorded[row.run_id] = taken + 1
        if taken == MAX_ROWS_PER_RUN:
            row = EgressRow(row.at, row.run_id, row.client, "-", CAPPED, row.result)
            logger.warning("egress refusals of %s past %d: counted only", row.run_id, taken)
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.overflow += 1
            return
        if not self._writing:
            self._writing = True
            self._background(self._write_queued())

    async def _write_queued(self) -> None:
        try:
            while not self._queue.empty():
                rows: list[EgressRow] = []
                while len(rows) < BATCH and not self._queue.empty():
                    rows.append(self._queue.get_nowait())
                await self._write(rows)
        finally:
            self._writing = False  # no await since the queue was seen empty: nothing missed

    async def _write(self, rows: list[EgressRow]) -> None:
        def write(db: Ledger) -> None:
            db.record_egress_many(
                [(r.at, r.run_id, r.client, r.method, r.target, r.result) for r in rows]
            )

        try:
            await self._ledger.run(write)
        except Exception:  # a full disk must not stop the recording of later refusals
            logger.exception("could not record %d egress refusals", len(rows))
