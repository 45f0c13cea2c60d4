"""Who may call the model and how much is left: the gateway's in-memory view of runs.

The hot path of every proxied request asks :class:`Runs` only (no database read): the token's
run, whether it ended or expired, and whether its own budget (``max_cost_usd``) or the fleet's
budget for the current UTC day is spent. The ledger stays the durable truth: :class:`Runs` is
loaded from it at start and kept in step as requests are metered. Standard library only.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Refusal", "RunEntry", "Runs", "day_start", "token_sha256"]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def day_start(now: float) -> float:
    """Unix time of 00:00 UTC of the day ``now`` falls in."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


@dataclass(slots=True)
class RunEntry:
    run_id: str
    workspace: str | None
    max_cost_usd: float | None
    expires: float | None
    ended: bool = False
    spent_usd: float = 0.0
    budget_reason: str | None = None
    ip: str | None = None
    refusals: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not forwarded: ``status`` and an Anthropic-shaped error."""

    status: int
    kind: str
    message: str
    budget: bool = False


class Runs:
    """Tokens -> runs, with spending per run and for the fleet today."""

    def __init__(self, fleet_daily_usd: float | None = None) -> None:
        self.fleet_daily_usd = fleet_daily_usd
        self.by_hash: dict[str, RunEntry] = {}
        self.by_id: dict[str, RunEntry] = {}
        self.by_ip: dict[str, RunEntry] = {}
        self.day = 0.0
        self.day_spent = 0.0

    def add(self, token_hash: str, entry: RunEntry) -> None:
        old = self.by_id.get(entry.run_id)
        if old is not None:
            self.by_hash = {h: e for h, e in self.by_hash.items() if e is not old}
        self.by_hash[token_hash] = entry
        self.by_id[entry.run_id] = entry
        if entry.ip:
            self.by_ip[entry.ip] = entry

    def set_ip(self, run_id: str, ip: str) -> None:
        entry = self.by_id.get(run_id)
        if entry is not None:
            entry.ip = ip
            self.by_ip[ip] = entry

    def end(self, run_id: str) -> None:
        entry = self.by_id.get(run_id)
        if entry is None:
            return
        entry.ended = True
        self.by_hash = {h: e for h, e in self.by_hash.items() if e is not entry}
        if entry.ip and self.by_ip.get(entry.ip) is entry:
            del self.by_ip[entry.ip]

    def lookup(self, token: str | None) -> RunEntry | None:
        if not token:
            return None
        return self.by_hash.get(token_sha256(token))

    def set_day(self, start: float, spent: float) -> None:
        self.day, self.day_spent = start, spent

    def add_cost(self, entry: RunEntry | None, cost: float, now: float) -> None:
        if entry is not None:
            entry.spent_usd += cost
        if now >= self.day + 86_400:  # a new UTC day: the fleet budget starts again
            self.day, self.day_spent = day_start(now), 0.0
        self.day_spent += cost

    def check(self, entry: RunEntry | None, now: float | None = None) -> Refusal | None:
        """``None`` if a request of ``entry``'s run may go upstream, else why not."""
        now = time.time() if now is None else now
        if entry is None or entry.ended:
            return Refusal(
                401,
                "authentication_error",
                "agentkit gateway: this token is not valid (unknown, or its agent run has ended)",
            )
        if entry.expires is not None and now > entry.expires:
            return Refusal(
                401,
                "authentication_error",
                f"agentkit gateway: the token of {entry.run_id} expired with its deadline",
            )
        if entry.budget_reason is not None:
            return Refusal(403, "permission_error", entry.budget_reason, budget=True)
        if entry.max_cost_usd is not None and entry.spent_usd >= entry.max_cost_usd:
            return Refusal(
                403,
                "permission_error",
                f"agentkit budget exceeded: agent {entry.run_id} spent ${entry.spent_usd:.4f} "
                f"of its max_cost_usd ${entry.max_cost_usd:.4f}; no further model requests "
                "are allowed for this run",
                budget=True,
            )
        day_spent = self.day_spent if now < self.day + 86_400 else 0.0
        if self.fleet_daily_usd is not None and day_spent >= self.fleet_daily_usd:
            return Refusal(
                403,
                "permission_error",
                f"agentkit budget exceeded: the fleet spent ${day_spent:.4f} today (UTC) of "
                f"AGENTKIT_DAILY_BUDGET_USD ${self.fleet_daily_usd:.4f}; no further model "
                "requests are allowed today",
                budget=True,
            )
        return None
