"""Reconcile: bring run records and containers in line after any controller restart.

Runs once whenever a service starts (and on :meth:`AgentService.reconcile`), so a controller that
died never leaves an agent running past its deadline or a finished agent unrecorded:

* running agents past their deadline are stopped and recorded ``timed_out``;
* other running agents are followed (output persisted, deadline timer armed);
* ended agents are recorded and their runs removed (a run whose node went away is recorded
  ``lost``, with what was persisted of its output);
* results missing their index line are indexed (only records the index does not know are
  read: a restart costs one directory listing, not a read of all history);
* records whose run vanished without a result (older than ``LOST_AFTER``) are closed as
  ``lost``.

It speaks only the runtime's neutral words, so it re-adopts Docker containers and Swarm
services alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agentkit.containers.follow import DEADLINE_GRACE
from agentkit.containers.live import as_float
from agentkit.containers.models import ID_PATTERN, AgentState, AgentStatus
from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.containers.finalize import Finalizer
    from agentkit.containers.follow import Follower
    from agentkit.containers.runs import RunStore
    from agentkit.runtimes.base import Runtime

__all__ = ["LOST_AFTER", "reconcile"]

logger = logging.getLogger("agentkit.agents")

LOST_AFTER = 120.0  # a record this old with neither container nor result was lost


async def reconcile(
    runtime: Runtime,
    store: RunStore,
    labels: Mapping[str, str | None],
    follower: Follower,
    finalizer: Finalizer,
) -> dict[str, int]:
    """Reconcile the runs selected by ``labels`` with ``store``; return what was done."""
    report = {
        "followed": 0,
        "timed_out": 0,
        "finalized": 0,
        "lost": 0,
        "indexed": 0,
        "errors": 0,
    }
    containers = await runtime.list(labels)
    names = set()
    now = time.time()
    finalize: list[str] = []
    for info in containers:
        if not ID_PATTERN.fullmatch(info.name):
            continue
        names.add(info.name)
        if info.running:
            run = follower.attach(info.name, info.labels)
            report["followed"] += 1
            deadline = run.deadline
            if deadline is not None and now >= deadline + DEADLINE_GRACE:
                try:
                    await follower.stop(info.name, AgentState.TIMED_OUT)
                    report["timed_out"] += 1
                except (AgentkitError, OSError) as exc:
                    logger.warning("could not stop overdue agent %s: %s", info.name, exc)
                    report["errors"] += 1
        else:
            finalize.append(info.name)
    for run_id in finalize:
        try:
            await finalizer.finalize(None, run_id=run_id)
            report["finalized"] += 1
        except (AgentkitError, OSError) as exc:
            logger.warning("could not record finished agent %s: %s", run_id, exc)
            report["errors"] += 1
    # records without a result and without a container: the controller died before start.
    # The index (read once) says which runs are finished; only the others' results are read.
    index = follower.registry.index
    ids, _ = await asyncio.gather(store.list_ids(), index.load())
    unknown = [i for i in ids if ID_PATTERN.fullmatch(i) and i not in index and i not in names]
    results = await store.read_results_of(unknown)
    unread = set(unknown)
    done = {str(d.get("id")) for d in results}
    for data in results:  # a controller died between result.json and its index line
        await store.append_index(data)
        index.put(AgentStatus.from_record(data))
        report["indexed"] += 1
    for run_id in ids:
        if run_id not in unread or run_id in done:
            continue
        meta = await store.read_meta(run_id)
        created = as_float(meta.get("created")) if meta else None
        if meta is None or created is None or now - created < LOST_AFTER:
            continue  # possibly being spawned right now by another controller
        lost = {
            **meta,
            "state": str(AgentState.LOST),
            "finished_at": time.time(),
            "error": "the run was lost before its result was recorded",
        }
        await store.write_result(run_id, lost)
        await store.append_index(lost)
        index.put(AgentStatus.from_record(lost))
        report["lost"] += 1
    return report
