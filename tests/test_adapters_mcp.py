"""The MCP server, driven by a real MCP client session over stdio (the ``mcp`` SDK's client)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agentkit import ToolResult
from tests.adapter_toolsets import make_toolset

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from mcp import ClientSession, StdioServerParameters, stdio_client

from agentkit.adapters.mcp_server import load_toolset, to_call_tool_result

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def session(*args: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentkit.adapters.mcp_server", *args],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT)},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


async def test_lists_every_tool_with_its_exact_schema_and_description() -> None:
    toolset = make_toolset()
    async with session("--toolset", "tests.adapter_toolsets:toolset") as client:
        listed = (await client.list_tools()).tools
    assert [t.name for t in listed] == toolset.names
    for mcp_tool in listed:
        ours = toolset[mcp_tool.name]
        assert mcp_tool.input_schema == ours.input_schema  # exactly the schema the API gets
        assert mcp_tool.description == ours.description
        assert mcp_tool.annotations is not None
        assert mcp_tool.annotations.destructive_hint is ours.destructive
    # the defaults, enums and additionalProperties survive the wire
    lookup = next(t for t in listed if t.name == "lookup")
    assert lookup.input_schema["properties"]["mode"]["enum"] == ["short", "long"]
    assert lookup.input_schema["additionalProperties"] is False


async def test_calls_map_content_errors_and_structured_data() -> None:
    async with session("--toolset", "tests.adapter_toolsets:make_toolset") as client:
        ok = await client.call_tool("lookup", {"key": "abc", "mode": "long"})
        failed = await client.call_tool("lookup", {"key": "missing"})
        invalid = await client.call_tool("add", {"a": "three"})
        extra = await client.call_tool("add", {"a": 1, "c": 2})
        unknown = await client.call_tool("no_such_tool", {})
        plain = await client.call_tool("add", {"a": 2, "b": 40})
    assert not ok.is_error
    assert ok.content[0].text == "abc found"  # type: ignore[union-attr]
    assert ok.structured_content == {"key": "abc", "mode": "long", "size": 3}
    assert failed.is_error
    assert "no entry named 'missing'" in failed.content[0].text
    assert invalid.is_error
    assert "$.a" in invalid.content[0].text
    assert "Fix the errors" in invalid.content[0].text  # type: ignore[union-attr]
    assert extra.is_error
    assert "'c'" in extra.content[0].text
    assert unknown.is_error
    assert "Available tools" in unknown.content[0].text
    assert not plain.is_error
    assert plain.content[0].text == "42"
    assert plain.structured_content is None


def test_result_mapping_wraps_non_objects_and_redacts_data() -> None:
    toolset = make_toolset()
    toolset.context.redactor.add("hunter2-secret")
    mapped = to_call_tool_result(ToolResult("x", data=["a", "hunter2-secret"]), toolset)
    assert mapped.structured_content == {"result": ["a", "[REDACTED]"]}
    assert to_call_tool_result(ToolResult.error("bad")).is_error


def test_load_toolset_rejects_what_is_not_a_toolset() -> None:
    from agentkit.errors import ConfigError

    assert load_toolset("tests.adapter_toolsets:toolset").names == ["add", "lookup", "delete_thing"]
    with pytest.raises(ConfigError, match="not a Toolset"):
        load_toolset("tests.adapter_toolsets:DELETED")
    with pytest.raises(ConfigError, match="module:attr"):
        load_toolset("tests.adapter_toolsets")


TWELVE = {
    "spawn_claude_agent",
    "get_claude_status",
    "get_claude_output",
    "stop_claude_agent",
    "list_claude_agents",
    "wait_for_claude_agent",
    "clone_repo",
    "create_workspace",
    "list_workspaces",
    "push_workspace",
    "create_branch",
    "delete_workspace",
}


async def test_the_twelve_tools_are_served_and_a_workspace_tool_runs_locally(
    tmp_path: Path,
) -> None:
    from tests.adapter_toolsets import twelve_tools

    expected = twelve_tools()
    root = tmp_path / "agentkit-root"
    (root / "workspaces").mkdir(parents=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "agentkit.adapters.mcp_server",
            "--toolset",
            "tests.adapter_toolsets:twelve_tools",
        ],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT), "AGENTKIT_ROOT": str(root), "AGENTKIT_HOST": ""},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        listed = (await client.list_tools()).tools
        empty = await client.call_tool("list_workspaces", {})
        bad_name = await client.call_tool("delete_workspace", {"workspace_name": "../etc"})
    assert {t.name for t in listed} == TWELVE
    for mcp_tool in listed:
        assert mcp_tool.input_schema == expected[mcp_tool.name].input_schema
    destructive = {t.name for t in listed if t.annotations and t.annotations.destructive_hint}
    assert destructive == {t.name for t in expected if t.destructive}
    assert not empty.is_error
    assert "No workspaces yet" in empty.content[0].text  # type: ignore[union-attr]
    assert empty.structured_content == {"root": str(root / "workspaces"), "workspaces": []}
    assert bad_name.is_error
