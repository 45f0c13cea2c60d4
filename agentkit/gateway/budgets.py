"""Who may call the model and how much is left: the gateway's in-memory view of runs.

The hot path of every proxied request asks :class:`Runs` only (no database read): the token's
run, whether it ended or expired, and whether its own budget (``max_cost_usd``) or the fleet's
budget for the current UTC day is spent. The ledger stays the durable truth: :class:`Runs` is
loaded from it at start and kept in step as requests are metered. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["MAX_IN_FLIGHT_PER_RUN", "Refusal", "RunEntry", "Runs", "day_start", "token_sha256"]

#: requests of one run forwarded at the same time; more get 429 (retryable)
MAX_IN_FLIGHT_PER_RUN = 4


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
    refusals: int = 0
    in_flight: int = 0
    reserved_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not forwarded: ``status`` and an Anthropic-shaped error."""

    status: int
    kind: str
    message: str
    budget: bool = False
    retry: bool = False


class Runs:
    """Tokens -> runs, with spending per run and for the fleet today."""

    def __init__(self, fleet_daily_usd: float | None = None) -> None:
        self.fleet_daily_usd = fleet_daily_usd
        self.by_hash: dict[str, RunEntry] = {}
        self.by_id: dict[str, RunEntry] = {}
        self.day = 0.0
        self.day_spent = 0.0
        self.day_reserved = 0.0  # worst-case cost of the requests in flight, fleet-wide
        self.in_flight = 0

    def add(self, token_hash: str, entry: RunEntry) -> None:
        old = self.by_id.get(entry.run_id)
        if old is not None:
            self.by_hash = {h: e for h, e in self.by_hash.items() if e is not old}
        self.by_hash[token_hash] = entry
        self.by_id[entry.run_id] = entry

    def end(self, run_id: str) -> None:
        entry = self.by_id.get(run_id)
        if entry is None:
            return
        entry.ended = True
        self.by_hash = {h: e for h, e in self.by_hash.items() if e is not entry}

    def lookup(self, token: str | None) -> RunEntry | None:
        if not token:
            return None
        return self.by_hash.get(token_sha256(token))

    def login(self, user: str, token: str, now: float | None = None) -> bool:
        """A proxy login: ``token`` is the live token of the run named ``user``."""
        entry = self.lookup(token)
        if entry is None or entry.ended:
            return False
        if entry.expires is not None and (time.time() if now is None else now) > entry.expires:
            return False
        return hmac.compare_digest(entry.run_id.encode(), user.encode("utf-8", "replace"))

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

    def reserve(self, entry: RunEntry, cost: float, now: float | None = None) -> Refusal | None:
        """Admit a request of ``entry`` whose worst case is ``cost``, or say why not.

        A request goes upstream only if its worst case fits in what is left of the run's and
        the fleet's budget after the requests already in flight; when nothing else is in flight
        it goes if the budget is not yet spent (so one request may overshoot, by at most its own
        worst case, but concurrent requests never add to that). Each admitted request must be
        followed by :meth:`release` with the same ``cost``.
        """
        now = time.time() if now is None else now
        refusal = self.check(entry, now)
        if refusal is not None:
            return refusal
        if entry.in_flight >= MAX_IN_FLIGHT_PER_RUN:
            return Refusal(
                429,
                "rate_limit_error",
                f"agentkit gateway: {entry.run_id} already has {entry.in_flight} model requests "
                f"in flight (at most {MAX_IN_FLIGHT_PER_RUN}); retry when one has finished",
                retry=True,
            )
        limit = entry.max_cost_usd
        if (
            limit is not None
            and entry.in_flight
            and entry.spent_usd + entry.reserved_usd + cost > limit
        ):
            return Refusal(
                429,
                "rate_limit_error",
                f"agentkit gateway: the worst case of this request (${cost:.4f}) does not fit in "
                f"what is left of max_cost_usd of {entry.run_id} while its other requests are "
                "in flight; retry when they have finished",
                retry=True,
            )
        fleet = self.fleet_daily_usd
        day_spent = self.day_spent if now < self.day + 86_400 else 0.0
        if fleet is not None and self.in_flight and day_spent + self.day_reserved + cost > fleet:
            return Refusal(
                429,
                "rate_limit_error",
                f"agentkit gateway: the worst case of this request (${cost:.4f}) does not fit in "
                "what is left of AGENTKIT_DAILY_BUDGET_USD while other requests are in flight; "
                "retry when they have finished",
                retry=True,
            )
        entry.in_flight += 1
        entry.reserved_usd += cost
        self.in_flight += 1
        self.day_reserved += cost
        return None

    def release(self, entry: RunEntry, cost: float) -> None:
        """The request admitted by :meth:`reserve` is over (its real cost is in ``add_cost``)."""
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.reserved_usd = max(0.0, entry.reserved_usd - cost) if entry.in_flight else 0.0
        self.in_flight = max(0, self.in_flight - 1)
        self.day_reserved = max(0.0, self.day_reserved - cost) if self.in_flight else 0.0
