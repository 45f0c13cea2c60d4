"""`GET /v1/costs`: what agents cost, as known today.

Today the only cost figures are the ``total_cost_usd`` Claude Code reports at the end of each
run, kept in the run records (``AgentService.list``). When the cost ledger lands (issue 10),
rewire :func:`known_costs` to read it; the route and the dashboard only see its return value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentkit.connect import Connection

__all__ = ["known_costs"]


async def known_costs(conn: Connection) -> dict[str, Any]:
    """Per-run costs of finished runs, oldest first, and their total (USD).

    Shape: ``{"source", "currency", "total_usd", "runs": [{"id", "workspace", "state",
    "finished_at", "cost_usd"}]}``. Runs that reported no cost are left out.
    """
    runs = [
        {
            "id": status.id,
            "workspace": status.workspace,
            "state": str(status.state),
            "finished_at": status.finished_at,
            "cost_usd": status.cost_usd,
        }
        for status in await conn.agents.list(state="finished")  # the in-memory index only
        if status.cost_usd is not None
    ]
    runs.sort(key=lambda run: run["finished_at"] or 0.0)
    total = round(sum(float(run["cost_usd"] or 0.0) for run in runs), 6)
    return {"source": "run records", "currency": "USD", "total_usd": total, "runs": runs}
