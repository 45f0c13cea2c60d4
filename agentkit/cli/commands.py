"""The ``agentkit`` subcommands (except ``demo`` and ``doctor``, which have their own modules)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from agentkit.cli.main import EXIT_OK, EXIT_TOOL_ERROR, EXIT_USAGE
from agentkit.cli.render import EventRenderer
from agentkit.config import load_settings
from agentkit.connect import connect, default_tools
from agentkit.tools.toolset import Toolset

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def tools(args: argparse.Namespace) -> int:
    toolset = Toolset(default_tools())
    if args.as_json:
        _print_json(toolset.to_anthropic())
        return EXIT_OK
    for item in toolset:
        params = ", ".join(item.input_schema.get("properties", {}))
        flag = " [yellow](destructive)[/]" if item.destructive else ""
        first_line = item.description.splitlines()[0]
        out.print(f"[bold cyan]{item.name}[/]({params}){flag}\n    {first_line}")
    return EXIT_OK


async def call(args: argparse.Namespace) -> int:
    try:
        tool_input = json.loads(args.input)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/] --json is not valid JSON: {escape(str(exc))}")
        return EXIT_USAGE
    names = Toolset(default_tools())
    if args.tool not in names:
        available = ", ".join(names.names)
        err.print(f"[red]error:[/] unknown tool {escape(repr(args.tool))}; available: {available}")
        return EXIT_USAGE
    problems = names.validate(args.tool, tool_input)
    if problems:
        err.print(f"[red]error:[/] invalid input for {args.tool}:")
        for problem in problems:
            err.print(f"  - {escape(problem)}")
        return EXIT_USAGE
    async with connect(load_settings()) as conn:
        result = await conn.toolset.call(args.tool, tool_input)
    if args.output == "json":
        _print_json({"is_error": result.is_error, "content": result.content, "data": result.data})
    else:
        (err if result.is_error else out).print(result.content, markup=False, soft_wrap=True)
    return EXIT_TOOL_ERROR if result.is_error else EXIT_OK


def _agent_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(args, "model", None):
        options["model"] = args.model
    if getattr(args, "system", None):
        options["system"] = args.system
    if getattr(args, "max_turns", None):
        options["max_turns"] = args.max_turns
    return options


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    settings.require_api_key()
    renderer = EventRenderer(as_json=args.as_json)
    async with connect(settings) as conn:
        agent = conn.agent(**_agent_options(args))
        try:
            # a failed run yields an ErrorEvent and then raises: main() maps the exit code
            async for event in agent.stream(args.prompt):
                renderer(event)
        finally:
            renderer.close()
    return EXIT_OK


async def chat(args: argparse.Namespace) -> int:
    from agentkit.agent.conversation import Conversation

    settings = load_settings()
    settings.require_api_key()
    renderer = EventRenderer()
    conversation = Conversation()
    async with connect(settings) as conn:
        agent = conn.agent(**_agent_options(args))
        out.print("[dim]agentkit chat — empty line or Ctrl-D to quit[/]")
        while True:
            try:
                prompt = await asyncio.to_thread(input, "you> ")
            except EOFError:
                break
            if not prompt.strip():
                break
            try:
                async for event in agent.stream(prompt, conversation=conversation):
                    renderer(event)
            finally:
                renderer.close()
    return EXIT_OK


async def logs(args: argparse.Namespace) -> int:
    from agentkit.cli.logs import show_logs

    async with connect(load_settings(), reconcile=False) as conn:
        return await show_logs(conn, args.container_id, args.lines, args.follow, args.as_json)


async def costs(args: argparse.Namespace) -> int:
    from agentkit.cli.costs import show_costs

    async with connect(load_settings(), reconcile=False) as conn:
        return await show_costs(conn, args.since, args.by, args.as_json)


async def image(args: argparse.Namespace) -> int:
    from agentkit.executors import make_executor
    from agentkit.runtimes.docker_engine import open_docker
    from agentkit.runtimes.image import ensure_image

    overrides: dict[str, Any] = {}
    if args.base_image:
        overrides["base_image"] = args.base_image
    settings = load_settings(**overrides)

    def progress(line: str) -> None:
        if not args.as_json:
            err.print(line.rstrip(), style="dim", markup=False, soft_wrap=True)

    async with make_executor(settings) as executor:
        docker = await open_docker(executor, settings)
        try:
            info = await ensure_image(docker, settings, force=args.force, progress=progress)
            gateway = None
            if settings.gateway:
                from agentkit.gateway.image import GatewayImageBuilder

                builder = GatewayImageBuilder(docker, settings, progress=progress)
                gateway = await builder.ensure(force=args.force)
        finally:
            await docker.close()
    if args.as_json:
        _print_json({**info.to_dict(), "gateway": gateway.to_dict() if gateway else None})
    else:
        out.print(f"[green]image ready:[/] {info}")
        if gateway is not None:
            out.print(f"[green]gateway image ready:[/] {gateway}")
    return EXIT_OK


async def mcp(args: argparse.Namespace) -> int:
    from agentkit.adapters.mcp_server import serve_stdio

    async with connect(load_settings()) as conn:
        await serve_stdio(conn.toolset)
    return EXIT_OK
