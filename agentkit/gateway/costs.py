"""Cost reports from the ledger: grouping, totals, a table and a small terminal bar plot.

Pure functions over the ledger's rows (as the admin API returns them), used by
``agentkit costs``. Groups: ``agent`` (the run id; the outer agent's own turns are
``controller``), ``workspace``, ``day`` (UTC).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentkit.gateway.pricing import TokenCounts

__all__ = ["BY", "CostGroup", "bar_plot", "group_rows", "parse_since"]

BY = ("agent", "workspace", "day")
_RELATIVE = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(value: str | None, *, now: float | None = None) -> float:
    """``7d`` / ``24h`` / ``30m`` / ``2026-11-30`` / ``2026-11-30T12:00`` / unix seconds -> unix
    time; ``None`` or empty: the beginning. Raises ``ValueError`` with the accepted forms."""
    if value is None or not value.strip():
        return 0.0
    text = value.strip().lower()
    now = time.time() if now is None else now
    match = _RELATIVE.fullmatch(text)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value!r}: use a duration (30m, 24h, 7d, 2w), a date (2026-11-30), a "
            "date and time (2026-11-30T12:00, UTC unless it has an offset) or unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(slots=True)
class CostGroup:
    key: str
    requests: int = 0
    tokens: TokenCounts = field(default_factory=TokenCounts)
    cost_usd: float = 0.0
    first_at: float | None = None
    last_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "requests": self.requests,
            **self.tokens.to_dict(),
            "cost_usd": round(self.cost_usd, 6),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


def _key(row: Mapping[str, Any], by: str) -> str:
    if by == "day":
        return datetime.fromtimestamp(float(row.get("at") or 0), UTC).strftime("%Y-%m-%d")
    if row.get("source") == "controller":
        return "controller"
    if by == "workspace":
        workspace = str(row.get("workspace") or "?")
        return workspace.rstrip("/").rsplit("/", 1)[-1] or workspace
    return str(row.get("run_id") or "?")


def group_rows(rows: Iterable[Mapping[str, Any]], by: str) -> tuple[list[CostGroup], CostGroup]:
    """Groups (``day``: by date; else most expensive first) and the total."""
    if by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}")
    groups: dict[str, CostGroup] = {}
    total = CostGroup("total")
    for row in rows:
        if str(row.get("note") or "").startswith("refused"):
            continue  # a refused request cost nothing and never went upstream
        key = _key(row, by)
        group = groups.setdefault(key, CostGroup(key))
        tokens = TokenCounts.from_mapping(row)
        cost = float(row.get("cost_usd") or 0.0)
        at = float(row.get("at") or 0.0)
        requests = int(row.get("requests") or 1)  # a pruned day's aggregate stands for many
        for g in (group, total):
            g.requests += requests
            g.tokens += tokens
            g.cost_usd += cost
            g.first_at = at if g.first_at is None else min(g.first_at, at)
            g.last_at = at if g.last_at is None else max(g.last_at, at)
    ordered = sorted(groups.values(), key=lambda g: g.key if by == "day" else -g.cost_usd)
    return ordered, total


_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar_plot(groups: Iterable[CostGroup], *, width: int = 40, limit: int = 30) -> list[str]:
    """One line per group: key, a bar proportional to its cost, the cost."""
    items = list(groups)[-limit:]
    if not items:
        return []
    top = max(g.cost_usd for g in items) or 1.0
    key_width = min(max(len(g.key) for g in items), 40)
    lines = []
    for g in items:
        eighths = round(g.cost_usd / top * width * 8)
        bar = "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
        lines.append(f"{g.key[:key_width]:<{key_width}} {bar:<{width}} ${g.cost_usd:.4f}")
    return lines
