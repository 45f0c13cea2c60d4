"""The ledger's pruning: old per-request rows fold into daily aggregates, and what `agentkit
costs`, a run's spending and the fleet's daily budget read from it stays the same. A real SQLite
file; the last test lets the in-process gateway prune on its own at start."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from agentkit.gateway.budgets import day_start
from agentkit.gateway.costs import group_rows
from agentkit.gateway.ledger import AGGREGATED, Ledger, UsageRow
from agentkit.gateway.pricing import TokenCounts
from tests.gateway_support import local_gateway

DAY = 86_400.0
NOW = time.time()


def _row(at: float, run_id: str | None, cost: float, **kw: Any) -> UsageRow:
    tokens = TokenCounts(
        kw.pop("input_tokens", 10), kw.pop("output_tokens", 5), kw.pop("cache_read", 0), 0
    )
    return UsageRow(
        at=at,
        source=kw.pop("source", "agent"),
        run_id=run_id,
        workspace=kw.pop("workspace", f"/ws/{run_id}" if run_id else None),
        model=kw.pop("model", "claude-sonnet-5-5"),
        status=kw.pop("status", 200),
        tokens=tokens,
        cost_usd=cost,
        note=kw.pop("note", None),
    )


def _fill(db: Ledger) -> None:
    old_day = day_start(NOW - 100 * DAY)
    db.register_run("old", "h-old", workspace="/ws/old", max_cost_usd=None, expires=None)
    db.end_run("old", old_day + 3600)
    db.register_run("long", "h-long", workspace="/ws/long", max_cost_usd=5.0, expires=None)
    for i in range(5):  # one old day of "old", five requests, two models
        model = "claude-haiku-4-5" if i % 2 else "claude-sonnet-5-5"
        db.record_usage(_row(old_day + 60 * i, "old", 0.01 * (i + 1), model=model, cache_read=i))
    db.record_usage(_row(old_day + 50, "old", 0.0, note="refused: budget", input_tokens=0))
    db.record_usage(_row(old_day + 70, None, 0.5, source="controller"))
    # a still-running agent with requests both beyond and within the retention
    db.record_usage(_row(NOW - 95 * DAY, "long", 0.2))
    db.record_usage(_row(NOW - 95 * DAY + 10, "long", 0.3, output_tokens=7))
    db.record_usage(_row(NOW - 60, "long", 0.4))
    db.record_usage(_row(NOW - 30, None, 0.05, source="controller"))
    db.record_egress(
        at=old_day, run_id="old", client="10.0.0.2", method="GET", target="x:80", result="D"
    )
    db.record_egress(
        at=NOW, run_id="long", client="10.0.0.3", method="GET", target="y:80", result="D"
    )


def _views(db: Ledger) -> dict[str, Any]:
    rows = [r.to_dict() for r in db.usage()]
    out: dict[str, Any] = {}
    for by in ("agent", "workspace", "day"):
        groups, total = group_rows(rows, by)
        out[by] = sorted(
            (g.key, g.requests, g.tokens, round(g.cost_usd, 9)) for g in [*groups, total]
        )
    totals = db.run_totals(["old", "long"])
    out["runs"] = {k: (round(v.cost_usd, 9), v.tokens, v.requests) for k, v in totals.items()}
    out["long spent"] = round(db.runs(ids=["long"])[0].spent_usd, 9)
    out["today"] = round(db.spent_since(day_start(NOW)), 9)
    out["since 96d"] = round(db.spent_since(day_start(NOW - 96 * DAY)), 9)
    return out


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as raw:
        return int(raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_pruning_folds_old_rows_and_keeps_every_total(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    db = Ledger(str(path))
    try:
        _fill(db)
        before = _views(db)
        assert _count(path, "usage") == 11
        gone = db.prune(NOW - 90 * DAY)
        assert gone == 9  # the refused row too: it cost nothing and was never counted
        # the old requests are aggregates now: one row per day, source, run, workspace, model
        assert _count(path, "usage") == 2
        assert _count(path, "usage_daily") == 4
        assert _count(path, "egress") == 1
        assert [r.run_id for r in db.runs()] == ["long"]  # the run that ended long ago went
        after = _views(db)
        assert after == before
        assert after["runs"]["long"] == (0.9, TokenCounts(30, 17, 0, 0), 3)
        folded = [r for r in db.usage() if r.note == AGGREGATED]
        assert sum(r.requests for r in folded) == 8
        # pruning again, or later with more rows falling out, adds up into the same days
        assert db.prune(NOW - 90 * DAY) == 0
        assert db.prune(NOW - 45) == 1
        assert _count(path, "usage") == 1
        assert _views(db) == before
    finally:
        db.close()


async def test_the_gateway_prunes_its_ledger_to_its_retention(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "ledger.sqlite"
    db = Ledger(str(path))
    try:
        _fill(db)
        expected = _views(db)
    finally:
        db.close()
    async with local_gateway(tmp_path, ledger_retention_s=30 * DAY) as gw:
        async with asyncio.timeout(30):  # pruned in the background at start
            while _count(path, "usage") != 2:
                await asyncio.sleep(0.05)  # polling the file's state, bounded by the timeout
        rows = await gw.client.usage()
        summary = (await gw.client.runs(["long"]))["long"]
    assert sum(r["requests"] for r in rows if r["note"] == AGGREGATED) == 8
    groups, total = group_rows(rows, "agent")
    assert total.requests == sum(g[1] for g in expected["agent"] if g[0] == "total")
    assert total.cost_usd == pytest.approx(1.0 * sum(0.01 * i for i in range(1, 6)) + 1.45)
    assert {g.key for g in groups} == {"old", "long", "controller"}
    assert summary["requests"] == 3
    assert summary["cost_usd"] == pytest.approx(0.9)
