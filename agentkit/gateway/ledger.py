"""The cost ledger: one SQLite file holding every metered request, run and refused connection.

The gateway owns the file (``<AGENTKIT_ROOT>/gateway/ledger.sqlite`` on the agent host, mounted
into the gateway container); the controller reads and adds to it through the gateway's admin
API, so agents' metered usage and the outer agent's own usage live in one place. Each write is
its own committed transaction (WAL journal), so a gateway restart loses nothing recorded.

:class:`Ledger` is synchronous; :class:`AsyncLedger` runs it on one worker thread so the event
loop never blocks and writes keep their order. Standard library only (runs in the gateway).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .pricing import TokenCounts

__all__ = ["AGGREGATED", "AsyncLedger", "Ledger", "RunRow", "RunTotals", "UsageRow"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    token_sha256 TEXT UNIQUE NOT NULL,
    workspace TEXT,
    max_cost_usd REAL,
    created REAL NOT NULL,
    expires REAL,
    ended_at REAL,
    ip TEXT,
    budget_exceeded_at REAL,
    budget_reason TEXT
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT,
    workspace TEXT,
    model TEXT,
    status INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    note TEXT
);
CREATE INDEX IF NOT EXISTS usage_run ON usage(run_id);
CREATE INDEX IF NOT EXISTS usage_at ON usage(at);
CREATE TABLE IF NOT EXISTS egress (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    run_id TEXT,
    client TEXT,
    method TEXT,
    target TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS egress_run ON egress(run_id);
CREATE INDEX IF NOT EXISTS egress_at ON egress(at);
CREATE TABLE IF NOT EXISTS usage_daily (
    day REAL NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    workspace TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (day, source, run_id, workspace, model)
);
CREATE INDEX IF NOT EXISTS usage_daily_run ON usage_daily(run_id);
CREATE INDEX IF NOT EXISTS usage_daily_last ON usage_daily(last_at);
"""

#: a row that counts as a request (refused ones never went upstream and cost nothing)
_COUNTED = "source='agent' AND COALESCE(note, '') NOT LIKE 'refused%'"
#: the note of a row standing for requests folded into a daily aggregate by :meth:`Ledger.prune`
AGGREGATED = "aggregated"

_TOKEN_COLS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@dataclass(slots=True)
class RunRow:
    """A run as the gateway knows it."""

    run_id: str
    token_sha256: str
    workspace: str | None
    max_cost_usd: float | None
    created: float
    expires: float | None
    ended_at: float | None
    ip: str | None
    budget_exceeded_at: float | None
    budget_reason: str | None
    spent_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One metered request (or one turn of the outer agent)."""

    at: float
    source: str  # "agent" (through the gateway) | "controller" (the outer agent)
    run_id: str | None
    workspace: str | None
    model: str | None
    status: int | None
    tokens: TokenCounts
    cost_usd: float
    note: str | None = None
    #: requests this row stands for: 1, or more for a daily aggregate of pruned rows
    requests: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "source": self.source,
            "run_id": self.run_id,
            "workspace": self.workspace,
            "model": self.model,
            "status": self.status,
            **self.tokens.to_dict(),
            "cost_usd": self.cost_usd,
            "note": self.note,
            "requests": self.requests,
        }


@dataclass(frozen=True, slots=True)
class RunTotals:
    """What one run spent: every row's cost, and the tokens and count of its requests."""

    cost_usd: float = 0.0
    tokens: TokenCounts = field(default_factory=TokenCounts)
    requests: int = 0


class Ledger:
    """The SQLite ledger (blocking; use :class:`AsyncLedger` from async code)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            cur = self._db.execute(sql, params)
            return int(cur.lastrowid or 0)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params))

    # --- runs ---------------------------------------------------------------------------------

    def register_run(
        self,
        run_id: str,
        token_sha256: str,
        *,
        workspace: str | None,
        max_cost_usd: float | None,
        expires: float | None,
    ) -> None:
        self._write(
            "INSERT INTO runs (run_id, token_sha256, workspace, max_cost_usd, created, expires) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
            "token_sha256=excluded.token_sha256, workspace=excluded.workspace, "
            "max_cost_usd=excluded.max_cost_usd, expires=excluded.expires, ended_at=NULL",
            (run_id, token_sha256, workspace, max_cost_usd, time.time(), expires),
        )

    def set_ip(self, run_id: str, ip: str) -> None:
        self._write("UPDATE runs SET ip=? WHERE run_id=?", (ip, run_id))

    def end_run(self, run_id: str, at: float) -> None:
        self._write("UPDATE runs SET ended_at=COALESCE(ended_at, ?) WHERE run_id=?", (at, run_id))

    def mark_budget(self, run_id: str, reason: str, at: float) -> None:
        self._write(
            "UPDATE runs SET budget_exceeded_at=COALESCE(budget_exceeded_at, ?), "
            "budget_reason=COALESCE(budget_reason, ?) WHERE run_id=?",
            (at, reason, run_id),
        )

    def runs(self, *, active_only: bool = False, ids: Iterable[str] | None = None) -> list[RunRow]:
        """Runs with what each has spent (all, the not-ended ones, or ``ids``)."""
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if active_only:
            sql += " WHERE ended_at IS NULL"
        elif ids is not None:
            wanted = list(ids)
            if not wanted:
                return []
            sql += f" WHERE run_id IN ({','.join('?' * len(wanted))})"
            params = wanted
        rows = self._read(sql, params)
        totals = self.run_totals([row["run_id"] for row in rows])
        return [
            RunRow(
                run_id=row["run_id"],
                token_sha256=row["token_sha256"],
                workspace=row["workspace"],
                max_cost_usd=row["max_cost_usd"],
                created=row["created"],
                expires=row["expires"],
                ended_at=row["ended_at"],
                ip=row["ip"],
                budget_exceeded_at=row["budget_exceeded_at"],
                budget_reason=row["budget_reason"],
                spent_usd=totals.get(row["run_id"], RunTotals()).cost_usd,
            )
            for row in rows
        ]

    # --- usage --------------------------------------------------------------------------------

    def record_usage(self, row: UsageRow) -> int:
        return self._write(
            "INSERT INTO usage (at, source, run_id, workspace, model, status, input_tokens, "
            "output_tokens, cache_read_input_tokens, cache_creation_input_tokens, cost_usd, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.at,
                row.source,
                row.run_id,
                row.workspace,
                row.model,
                row.status,
                *(getattr(row.tokens, c) for c in _TOKEN_COLS),
                row.cost_usd,
                row.note,
            ),
        )

    def spent_since(self, since: float) -> float:
        """Everything spent since ``since`` (folded days count from their first request)."""
        rows = self._read(
            "SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE at >= ?)"
            " + (SELECT COALESCE(SUM(cost_usd), 0) FROM usage_daily WHERE first_at >= ?)",
            (since, since),
        )
        return float(rows[0][0])

    def usage(self, *, since: float = 0.0, limit: int = 100_000) -> list[UsageRow]:
        """Rows since ``since``, oldest first: the daily aggregates of pruned requests (note
        :data:`AGGREGATED`, ``at`` = their first request, ``requests`` = how many), then the
        requests still kept one by one."""
        limit = max(limit, 0)
        folded = self._read(
            "SELECT * FROM usage_daily WHERE last_at >= ? ORDER BY day, first_at LIMIT ?",
            (since, limit),
        )
        out = [
            UsageRow(
                at=r["first_at"],
                source=r["source"],
                run_id=r["run_id"] or None,
                workspace=r["workspace"] or None,
                model=r["model"] or None,
                status=None,
                tokens=TokenCounts(*(int(r[c]) for c in _TOKEN_COLS)),
                cost_usd=float(r["cost_usd"]),
                note=AGGREGATED,
                requests=int(r["requests"]),
            )
            for r in folded
        ]
        rows = self._read(
            "SELECT * FROM usage WHERE at >= ? ORDER BY at, id LIMIT ?",
            (since, limit - len(out)),
        )
        out.extend(
            UsageRow(
                at=r["at"],
                source=r["source"],
                run_id=r["run_id"],
                workspace=r["workspace"],
                model=r["model"],
                status=r["status"],
                tokens=TokenCounts(*(int(r[c]) for c in _TOKEN_COLS)),
                cost_usd=float(r["cost_usd"]),
                note=r["note"],
            )
            for r in rows
        )
        return out

    def run_totals(self, run_ids: Iterable[str]) -> dict[str, RunTotals]:
        """Per run: the cost of all its rows, and the summed tokens and number of its metered
        requests (refused ones left out), over kept rows and pruned days alike."""
        wanted = list(run_ids)
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))  # placeholders only: the values are bound
        counted = ", ".join(f"CASE WHEN {_COUNTED} THEN {c} ELSE 0 END AS {c}" for c in _TOKEN_COLS)
        agent = ", ".join(f"CASE WHEN source='agent' THEN {c} ELSE 0 END" for c in _TOKEN_COLS)
        sums = ", ".join(f"SUM({c})" for c in _TOKEN_COLS)
        rows = self._read(
            f"SELECT run_id, SUM(cost_usd), {sums}, SUM(n) FROM ("  # noqa: S608
            f"SELECT run_id, cost_usd, {counted}, CASE WHEN {_COUNTED} THEN 1 ELSE 0 END AS n "
            f"FROM usage WHERE run_id IN ({marks}) UNION ALL "
            f"SELECT run_id, cost_usd, {agent}, CASE WHEN source='agent' THEN requests ELSE 0 END "
            f"FROM usage_daily WHERE run_id IN ({marks})) GROUP BY run_id",
            wanted + wanted,
        )
        return {
            r[0]: RunTotals(
                float(r[1] or 0.0),
                TokenCounts(*(int(r[i] or 0) for i in range(2, 6))),
                int(r[6] or 0),
            )
            for r in rows
        }

    def prune(self, before: float) -> int:
        """Fold every request older than ``before`` into per-day aggregates (by source, run,
        workspace and model: what ``agentkit costs`` groups by and what a run's spending sums)
        and delete it, with the refused connections and ended runs older than that. One
        transaction; returns how many request rows went."""
        day = "CAST(at / 86400 AS INTEGER) * 86400"
        cols = ", ".join(_TOKEN_COLS)
        sums = ", ".join(f"SUM({c})" for c in _TOKEN_COLS)
        adds = ", ".join(f"{c}={c}+excluded.{c}" for c in _TOKEN_COLS)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO usage_daily (day, source, run_id, workspace, model, requests, "  # noqa: S608
                    f"{cols}, cost_usd, first_at, last_at) "
                    f"SELECT {day}, source, COALESCE(run_id, ''), COALESCE(workspace, ''), "
                    f"COALESCE(model, ''), COUNT(*), {sums}, SUM(cost_usd), MIN(at), MAX(at) "
                    "FROM usage WHERE at < ? AND COALESCE(note, '') NOT LIKE 'refused%' "
                    "GROUP BY 1, 2, 3, 4, 5 "
                    "ON CONFLICT(day, source, run_id, workspace, model) DO UPDATE SET "
                    f"requests=requests+excluded.requests, {adds}, "
                    "cost_usd=cost_usd+excluded.cost_usd, "
                    "first_at=MIN(first_at, excluded.first_at), "
                    "last_at=MAX(last_at, excluded.last_at)",
                    (before,),
                )
                gone = self._db.execute("DELETE FROM usage WHERE at < ?", (before,)).rowcount
                self._db.execute("DELETE FROM egress WHERE at < ?", (before,))
                self._db.execute(
                    "DELETE FROM runs WHERE ended_at IS NOT NULL AND ended_at < ?", (before,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(gone)

    # --- egress -------------------------------------------------------------------------------

    def record_egress(
        self, *, at: float, run_id: str | None, client: str, method: str, target: str, result: str
    ) -> None:
        self._write(
            "INSERT INTO egress (at, run_id, client, method, target, result) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, run_id, client, method, target, result),
        )

    def record_egress_many(
        self, rows: Sequence[tuple[float, str | None, str, str, str, str]]
    ) -> None:
        """Rows of ``(at, run_id, client, method, target, result)`` in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO egress (at, run_id, client, method, target, result) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def egress(self, run_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT at, method, target, result FROM egress WHERE run_id=? ORDER BY id DESC LIMIT ?",
            (run_id, max(limit, 0)),
        )
        return [dict(r) for r in reversed(rows)]


class AsyncLedger:
    """:class:`Ledger` on one worker thread (order kept, the event loop never blocks)."""

    def __init__(self, path: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._path = path
        self.ledger: Ledger | None = None

    async def open(self) -> None:
        self.ledger = await self._call(lambda: Ledger(self._path))

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def run(self, fn: Callable[[Ledger], T]) -> T:
        ledger = self.ledger
        if ledger is None:
            raise RuntimeError("the ledger is not open")
        return await self._call(lambda: fn(ledger))

    async def close(self) -> None:
        if self.ledger is not None:
            ledger, self.ledger = self.ledger, None
            await self._call(ledger.close)
        self._pool.shutdown(wait=True)


def summary(run: RunRow, tokens: TokenCounts, requests: int) -> Mapping[str, Any]:
    """What the admin API reports about one run."""
    return {
        "run_id": run.run_id,
        "workspace": run.workspace,
        "cost_usd": round(run.spent_usd, 9),
        "max_cost_usd": run.max_cost_usd,
        "requests": requests,
        **tokens.to_dict(),
        "ended_at": run.ended_at,
        "budget_exceeded": run.budget_exceeded_at is not None,
        "budget_reason": run.budget_reason,
    }
