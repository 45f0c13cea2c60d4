"""Serve a :class:`~agentkit.Toolset` to MCP clients (Claude Code, Claude Desktop, ...) over stdio.

Built on the official ``mcp`` SDK's low-level :class:`mcp.server.lowlevel.Server`, so the tool
list is exactly :meth:`Toolset.to_mcp` — the same JSON schema the Anthropic API gets and the
toolset validates with — rather than a schema re-derived from Python signatures. Every call goes
through :meth:`Toolset.call` (validation, redaction, size caps); a ``ToolResult`` maps to a
``CallToolResult``: ``content`` -> one text block, ``is_error`` -> ``isError``.

``data`` -> ``structuredContent`` only with ``structured_content=True``: clients such as Claude
Code show the model ``structuredContent`` *instead of* the text content, and ``data`` is neither
written for the model nor capped like ``content`` is. Turn it on for programmatic clients.

The ``agentkit mcp`` command calls :func:`serve_stdio` with the toolset of ``agentkit.connect()``;
``python -m agentkit.adapters.mcp_server --toolset package.module:attr`` serves any toolset.

Needs the ``mcp`` extra: ``pip install 'claude-agentkit[mcp]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentkit.errors import AgentkitError, ConfigError
from agentkit.tools.base import ToolResult
from agentkit.tools.toolset import Toolset

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server
    from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult
    from mcp.types import PaginatedRequestParams as PaginatedParams

logger = logging.getLogger("agentkit.adapters.mcp")

EXTRA_HINT = "the MCP server needs the mcp extra: pip install 'claude-agentkit[mcp]'"
DEFAULT_INSTRUCTIONS = (
    "agentkit tools run Claude Code agents in Docker containers and manage the git workspaces "
    "they work in. Typical flow: create_workspace or clone_repo, spawn_claude_agent with a "
    "task, wait_for_claude_agent, then push_workspace."
)


def _require_mcp() -> None:
    try:
        import mcp.server.lowlevel  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(EXTRA_HINT) from exc


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def structured_content(result: ToolResult, toolset: Toolset | None = None) -> dict[str, Any] | None:
    """``result.data`` as MCP ``structuredContent`` (a JSON object), redacted; None if absent."""
    if result.data is None:
        return None
    try:
        data = _jsonable(result.data)
    except Exception:
        logger.debug("tool data is not JSON serialisable; sending text only", exc_info=True)
        return None
    if toolset is not None:
        data = toolset.context.redactor.redact_data(data)
    return data if isinstance(data, dict) else {"result": data}


def to_call_tool_result(result: ToolResult, toolset: Toolset | None = None) -> CallToolResult:
    """Map a :class:`ToolResult` to an MCP ``CallToolResult``."""
    from mcp.types import CallToolResult, TextContent

    out = CallToolResult(content=[TextContent(text=result.content)], is_error=result.is_error)
    structured = structured_content(result, toolset)
    if structured is not None:
        out.structured_content = structured
    return out


def build_server(
    toolset: Toolset,
    *,
    name: str = "agentkit",
    version: str | None = None,
    instructions: str | None = DEFAULT_INSTRUCTIONS,
    structured_content: bool = False,
) -> Server[Any]:
    """A low-level MCP ``Server`` listing and calling every tool of ``toolset``.

    ``structured_content``: also send ``ToolResult.data`` as ``structuredContent`` (see the
    module docs for why it is off by default).
    """
    _require_mcp()
    from mcp.server.lowlevel import Server
    from mcp.types import CallToolResult, ListToolsResult, TextContent, Tool

    if version is None:
        from agentkit import __version__

        version = __version__

    tools = [Tool.model_validate(definition) for definition in toolset.to_mcp()]
    schemas = {tool.name: tool.input_schema for tool in tools}

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: PaginatedParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        try:
            result = await toolset.call(params.name, params.arguments or {})
        except AgentkitError as exc:  # configuration problems: the human must fix them
            message = toolset.context.redactor.redact(str(exc))
            logger.warning("tool %s: %s", params.name, message)
            return CallToolResult(content=[TextContent(text=message)], is_error=True)
        if not structured_content:
            result = ToolResult(result.content, result.is_error)
        return to_call_tool_result(result, toolset)

    options: dict[str, Any] = {}
    if "get_tool_input_schema" in inspect.signature(Server.__init__).parameters:  # mcp >= 2.3
        options["get_tool_input_schema"] = schemas.get
    return Server(
        name,
        version=version,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        **options,
    )


async def serve_stdio(
    toolset: Toolset,
    *,
    name: str = "agentkit",
    instructions: str | None = DEFAULT_INSTRUCTIONS,
    structured_content: bool = False,
) -> None:
    """Serve ``toolset`` over this process's stdin/stdout until the client disconnects.

    While serving, anything printed to stdout goes to stderr instead (the SDK diverts fd 1),
    so stray output cannot corrupt the protocol stream.
    """
    _require_mcp()
    from mcp.server.stdio import stdio_server

    server = build_server(
        toolset, name=name, instructions=instructions, structured_content=structured_content
    )
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def load_toolset(spec: str) -> Toolset:
    """Import ``package.module:attr``; ``attr`` is a Toolset or a zero-argument factory of one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--toolset wants package.module:attribute, got {spec!r}")
    target: Any = getattr(importlib.import_module(module_name), attr)
    if callable(target) and not isinstance(target, Toolset):
        target = target()
    if not isinstance(target, Toolset):
        raise ConfigError(f"{spec} is a {type(target).__name__}, not a Toolset")
    return target


async def _serve_connected(name: str, structured: bool) -> None:
    import agentkit

    connect = getattr(agentkit, "connect", None)
    if connect is None:  # pragma: no cover - only before connect() exists
        raise ConfigError("agentkit.connect() is not available; pass --toolset module:attr")
    async with connect() as connection:
        await serve_stdio(connection.toolset, name=name, structured_content=structured)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentkit.adapters.mcp_server",
        description="Serve agentkit tools to an MCP client over stdio.",
    )
    parser.add_argument(
        "--toolset",
        help="serve this toolset (package.module:attr) instead of agentkit.connect()'s",
    )
    parser.add_argument("--name", default="agentkit", help="server name shown to clients")
    parser.add_argument(
        "--structured-content",
        action="store_true",
        help="also send each result's data as structuredContent",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if args.toolset:
            toolset = load_toolset(args.toolset)
            structured = args.structured_content
            asyncio.run(serve_stdio(toolset, name=args.name, structured_content=structured))
        else:
            asyncio.run(_serve_connected(args.name, args.structured_content))
    except ConfigError as exc:
        print(f"agentkit mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
