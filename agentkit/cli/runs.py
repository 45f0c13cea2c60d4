"""``agentkit runs list|prune``: the run history on the host, a page at a time, and retention."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from agentkit.cli.main import EXIT_OK, EXIT_TOOL_ERROR
from agentkit.config import load_settings
from agentkit.connect import connect

__all__ = ["add_runs_parser", "runs"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def add_runs_parser(sub: Any) -> None:
    runs_p = sub.add_parser("runs", help="list run history a page at a time; prune old records")
    runs_sub = runs_p.add_subparsers(dest="runs_command", metavar="ACTION")
    listing = runs_sub.add_parser("list", help="runs newest first (list_claude_agents' filters)")
    listing.add_argument("--state", help="running, finished, succeeded, failed, ...")
    listing.add_argument("--workspace", help="a workspace name or host path")
    listing.add_argument("--since", help="ISO 8601 time or an age like 2h, 7d")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (max 500)")
    listing.add_argument("--cursor", help="next_cursor of the previous page")
    listing.add_argument("--json", dest="as_json", action="store_true", help="JSON output")
    prune = runs_sub.add_parser(
        "prune", help="remove finished run records beyond AGENTKIT_RUN_RETENTION"
    )
    prune.add_argument(
        "--retention", help="override AGENTKIT_RUN_RETENTION for this call, e.g. 30d,5000"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.add_argument("--json", dest="as_json", action="store_true", help="JSON output")


async def runs(args: argparse.Namespace) -> int:
    async with connect(load_settings()) as conn:
        if args.runs_command == "list":
            params = {
                k: v
                for k, v in {
                    "state": args.state,
                    "workspace": args.workspace,
                    "since": args.since,
                    "limit": args.limit,
                    "cursor": args.cursor,
                }.items()
                if v is not None
            }
            result = await conn.toolset.call("list_claude_agents", params)
            if args.as_json:
                _print_json(
                    {"is_error": result.is_error, "content": result.content, "data": result.data}
                )
            else:
                (err if result.is_error else out).print(escape(result.content))
            return EXIT_TOOL_ERROR if result.is_error else EXIT_OK
        report = await conn.agents.prune(args.retention, dry_run=args.dry_run)
    if args.as_json:
        _print_json(report.to_dict())
    else:
        verb = "would remove" if report.dry_run else "removed"
        out.print(
            f"retention: keep {report.retention}; {verb} {len(report.pruned)} run records "
            f"({report.bytes_freed / 1e6:.1f} MB), kept {report.kept}"
            + (
                f"; {len(report.skipped_live)} still running or not yet recorded were kept"
                if report.skipped_live
                else ""
            )
        )
    return EXIT_OK


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
