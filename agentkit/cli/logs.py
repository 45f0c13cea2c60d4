"""``agentkit logs ID [-f]``: an agent's Claude Code stream, rendered for a reader."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from agentkit.connect import Connection

console = Console(highlight=False)


async def show_logs(
    conn: Connection, container_id: str, lines: int, follow: bool, as_json: bool
) -> int:
    """Print the last ``lines`` events; with ``follow``, keep printing until the agent ends.

    Following is event-driven: each step waits on the agent (``wait`` wakes the moment it exits)
    for at most a second, then prints whatever arrived meanwhile.
    """
    agents = conn.agents
    out = await agents.output(container_id, lines)
    seen = out.events
    _emit(out.text, as_json, container_id)
    if not follow:
        return 0
    started = time.monotonic()
    status = await agents.status(container_id)
    with console.status("", spinner="dots") as spinner:
        while not status.finished:
            spinner.update(f"{status.id} running — {time.monotonic() - started:.0f}s")
            waited = await agents.wait(container_id, timeout_ms=1000)
            status = waited.status
            out = await agents.output(container_id, max(1, min(500, out.events)))
            if out.events > seen:
                fresh = await agents.output(container_id, out.events - seen)
                spinner.stop()
                _emit(fresh.text, as_json, container_id)
                spinner.start()
                seen = out.events
    summary = f"[{status.state}] turns={status.turns} cost=${status.cost_usd or 0:.4f}"
    if as_json:
        sys.stdout.write(json.dumps({"id": status.id, "final": status.to_dict()}) + "\n")
    else:
        console.print(summary, markup=False)
    return 0 if status.state == "succeeded" else 1


def _emit(text: str, as_json: bool, container_id: str) -> None:
    if not text.strip():
        return
    if as_json:
        sys.stdout.write(json.dumps({"id": container_id, "text": text}) + "\n")
    else:
        console.print(text, markup=False, soft_wrap=True)
