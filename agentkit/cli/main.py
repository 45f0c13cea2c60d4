"""The ``agentkit`` command: argument parsing and dispatch. Commands live in sibling modules."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from agentkit import __version__
from agentkit.errors import AgentkitError, ConfigError

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentkit",
        description="Let Claude drive Claude Code agents in hardened containers.",
    )
    parser.add_argument("--version", action="version", version=f"agentkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="the whole path offline: scripted model, real container, real Claude Code"
    )
    demo.add_argument("--clean", action="store_true", help="delete the demo workspace afterwards")
    _json_flag(demo)

    tools = sub.add_parser("tools", help="list the tools and their schemas")
    _json_flag(tools)

    call = sub.add_parser("call", help="call one tool directly: agentkit call TOOL --json '{}'")
    call.add_argument("tool", help="tool name (see `agentkit tools`)")
    call.add_argument(
        "--json", dest="input", default="{}", metavar="JSON", help="tool input as a JSON object"
    )
    call.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="output format"
    )

    run = sub.add_parser("run", help="run the agent on one prompt, streaming what it does")
    run.add_argument("prompt")
    _agent_flags(run)
    _json_flag(run)

    chat = sub.add_parser("chat", help="interactive conversation keeping history")
    _agent_flags(chat)

    logs = sub.add_parser("logs", help="show what a Claude Code agent did (stream-json rendered)")
    logs.add_argument("container_id")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until it finishes")
    logs.add_argument("-n", "--lines", type=int, default=100, help="how many events to show")
    _json_flag(logs)

    costs = sub.add_parser(
        "costs", help="what agents and the controlling model spent (the gateway's ledger)"
    )
    costs.add_argument(
        "--since", help="only since: 30m, 24h, 7d, a date (2026-11-30) or unix seconds"
    )
    costs.add_argument(
        "--by", choices=["agent", "workspace", "day"], default="agent", help="group by"
    )
    _json_flag(costs)

    image = sub.add_parser("image", help="manage the agent image")
    image_sub = image.add_subparsers(dest="image_command", metavar="ACTION")
    build = image_sub.add_parser(
        "build", help="build the agent image (and the gateway image) on the target host"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--base-image", help="BASE_IMAGE build argument")
    _json_flag(build)

    doctor = sub.add_parser("doctor", help="check settings, host, Docker, image and keys")
    _json_flag(doctor)

    sub.add_parser("mcp", help="serve the tools over MCP on stdio")

    serve = sub.add_parser(
        "serve", help="HTTP API and live dashboard (needs AGENTKIT_API_TOKEN; extra [serve])"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument(
        "--insecure-localhost",
        action="store_true",
        help="serve without a token, on a loopback address only (trials on your own machine)",
    )

    from agentkit.cli.runs import add_runs_parser

    add_runs_parser(sub)
    return parser


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", dest="as_json", action="store_true", help="machine-readable output")


def _agent_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (default: AGENTKIT_MODEL)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-turns", type=int, help="stop after this many model turns")


async def _dispatch(args: argparse.Namespace) -> int:
    from agentkit.cli import commands

    command = args.command
    if command == "tools":
        return commands.tools(args)
    if command == "call":
        return await commands.call(args)
    if command == "run":
        return await commands.run(args)
    if command == "chat":
        return await commands.chat(args)
    if command == "logs":
        return await commands.logs(args)
    if command == "costs":
        return await commands.costs(args)
    if command == "image":
        return await commands.image(args)
    if command == "doctor":
        from agentkit.cli.doctor import doctor

        return await doctor(args)
    if command == "mcp":
        return await commands.mcp(args)
    if command == "serve":
        from agentkit.cli.serve import serve

        return await serve(args)
    if command == "runs":
        from agentkit.cli.runs import runs

        return await runs(args)
    if command == "demo":
        from agentkit.cli.demo import demo

        return await demo(args)
    raise AssertionError(command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (
        not args.command
        or (args.command == "image" and not args.image_command)
        or (args.command == "runs" and not args.runs_command)
    ):
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    err = Console(stderr=True, highlight=False)
    try:
        return asyncio.run(_dispatch(args))
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    except AgentkitError as exc:
        err.print(f"[red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
        return EXIT_TOOL_ERROR
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
