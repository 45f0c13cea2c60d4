"""``agentkit costs [--since 7d] [--by agent|workspace|day] [--json]``: the cost ledger."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from agentkit.errors import ConfigError, RuntimeUnavailable
from agentkit.gateway.costs import bar_plot, group_rows, parse_since

if TYPE_CHECKING:
    from agentkit.connect import Connection

console = Console(highlight=False)


async def show_costs(conn: Connection, since: str | None, by: str, as_json: bool) -> int:
    """Print the ledger's spending since ``since``, grouped ``by``, with totals."""
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    gateway = await conn.agents.gateway()
    if gateway is None:
        raise ConfigError(
            "the cost ledger lives in the agent gateway, which is off here "
            "(AGENTKIT_GATEWAY=false or the in-memory runtime)"
        )
    try:
        rows = await (await gateway.host.attach()).usage(since=start)
    except RuntimeUnavailable:  # not running (removed, or never started): the ledger stays
        rows = await (await gateway.client()).usage(since=start)  # on the host; start it
    groups, total = group_rows(rows, by)
    if as_json:
        data = {
            "since": start,
            "by": by,
            "groups": [g.to_dict() for g in groups],
            "total": total.to_dict(),
        }
        sys.stdout.write(json.dumps(data) + "\n")
        return 0
    if not groups:
        console.print("No metered usage in the ledger for this period.")
        return 0
    table = Table(title=f"Cost by {by}", title_justify="left")
    widest = min(max(len(g.key) for g in groups), 40)
    table.add_column("group", no_wrap=True, min_width=max(widest, 5))
    for name in ("requests", "input", "output", "cache read", "cache write", "cost $"):
        table.add_column(name, justify="right")
    for g in [*groups, total]:
        t = g.tokens
        table.add_row(
            g.key,
            str(g.requests),
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.cache_read_input_tokens:,}",
            f"{t.cache_creation_input_tokens:,}",
            f"{g.cost_usd:.4f}",
            end_section=g is groups[-1],
        )
    console.print(table)
    if len(groups) > 1:
        for line in bar_plot(groups):
            console.print(line, markup=False)
    return 0
