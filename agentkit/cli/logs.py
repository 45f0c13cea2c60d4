"""``agentkit logs ID [-f]``: an agent's Claude Code stream, rendered for a reader."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console

from agentkit.containers.streamjson import render_event

if TYPE_CHECKING:
    from agentkit.connect import Connection

console = Console(highlight=False)


async def show_logs(
    conn: Connection, container_id: str, lines: int, follow: bool, as_json: bool
) -> int:
    """Print the last ``lines`` events; with ``follow``, print new ones live until the agent ends.

    Following uses the service's live event feed (the container's log stream), not polling.
    """
    agents = conn.agents
    if not follow:
        out = await agents.output(container_id, lines)
        _emit(out.text, as_json, container_id)
        status = await agents.status(container_id)
        if as_json:
            sys.stdout.write(json.dumps({"id": status.id, "status": status.to_dict()}) + "\n")
        return 0
    started = time.monotonic()
    shown = 0
    with console.status(f"{container_id} running", spinner="dots") as spinner:
        async for event in agents.watch(container_id):
            text = render_event(event)
            if text:
                spinner.stop()
                _emit(text, as_json, container_id)
                spinner.start()
                shown += 1
            spinner.update(f"{container_id} running — {time.monotonic() - started:.0f}s")
    status = await agents.status(container_id)
    if as_json:
        sys.stdout.write(json.dumps({"id": status.id, "final": status.to_dict()}) + "\n")
    else:
        cost = f"${status.cost_usd:.4f}" if status.cost_usd is not None else "n/a"
        console.print(f"[{status.state}] turns={status.turns} cost={cost}", markup=False)
    return 0 if status.state == "succeeded" else 1


def _emit(text: str, as_json: bool, container_id: str) -> None:
    if not text.strip():
        return
    if as_json:
        sys.stdout.write(json.dumps({"id": container_id, "text": text}) + "\n")
    else:
        console.print(text, markup=False, soft_wrap=True)
