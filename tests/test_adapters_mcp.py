"""The MCP server, driven by a real MCP client session over stdio (the ``mcp`` SDK's client)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from agentkit import ToolResult
from agentkit.adapters.mcp_server import load_toolset, to_call_tool_result
from tests.adapter_toolsets import LEAKED_SECRET, make_toolset
from tests.support import TOOL_NAMES

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def session(*args: str, errlog: TextIO = sys.stderr) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentkit.adapters.mcp_server", *args],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT)},
    )
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as client,
    ):
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
    async with session(
        "--toolset", "tests.adapter_toolsets:make_toolset", "--structured-content"
    ) as client:
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


async def test_a_configuration_error_is_redacted_in_the_result_and_the_log(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server-stderr.txt"
    with log.open("w") as errlog:
        async with session("--toolset", "tests.adapter_toolsets:leaky_toolset", errlog=errlog) as c:
            failed = await c.call_tool("misconfigured", {})
    assert failed.is_error
    assert "bad setting" in failed.content[0].text  # type: ignore[union-attr]
    assert LEAKED_SECRET not in failed.content[0].text  # type: ignore[union-attr]
    logged = log.read_text()
    assert "misconfigured" in logged
    assert LEAKED_SECRET not in logged


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


async def test_the_product_tools_are_served_and_a_workspace_tool_runs_locally(
    tmp_path: Path,
) -> None:
    from tests.adapter_toolsets import product_tools

    expected = product_tools()
    root = tmp_path / "agentkit-root"
    (root / "workspaces").mkdir(parents=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "agentkit.adapters.mcp_server",
            "--toolset",
            "tests.adapter_toolsets:product_tools",
        ],
        cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT), "AGENTKIT_ROOT": str(root), "AGENTKIT_HOST": ""},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        listed = (await client.list_tools()).tools
        empty = await client.call_tool("list_workspaces", {})
        bad_name = await client.call_tool("delete_workspace", {"workspace_name": "../etc"})
    assert {t.name for t in listed} == TOOL_NAMES
    for mcp_tool in listed:
        assert mcp_tool.input_schema == expected[mcp_tool.name].input_schema
    destructive = {t.name for t in listed if t.annotations and t.annotations.destructive_hint}
    assert destructive == {t.name for t in expected if t.destructive}
    assert not empty.is_error
    assert "No workspaces yet" in empty.content[0].text  # type: ignore[union-attr]
    assert empty.structured_content is None  # data stays off the wire unless asked for
    assert bad_name.is_error


def _claude_bin() -> str:
    import os

    from tests.support import require

    path = os.environ.get("AGENTKIT_TEST_CLAUDE_BIN", "")
    require(
        bool(path) and os.access(path, os.X_OK), "the Claude Code CLI at $AGENTKIT_TEST_CLAUDE_BIN"
    )
    return path


@pytest.mark.slow
async def test_claude_code_uses_the_server_as_an_mcp_client(tmp_path: Path) -> None:
    """The real Claude Code CLI, offline against the scripted model, calls our MCP tool."""
    import asyncio
    import json
    import os

    from agentkit.testing import ScriptedAnthropicServer, reply, scripts

    binary = _claude_bin()
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    script = scripts.ClaudeCodeScript(
        [reply.tool_use("mcp__agentkit__lookup", {"key": "abc"}), reply.text("Found it.")]
    )
    mcp_config = {
        "mcpServers": {
            "agentkit": {
                "command": sys.executable,
                "args": [
                    "-m",
                    "agentkit.adapters.mcp_server",
                    "--toolset",
                    "tests.adapter_toolsets:toolset",
                ],
                "env": {"PYTHONPATH": str(ROOT)},
            }
        }
    }
    async with ScriptedAnthropicServer(script) as server:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "ENABLE_TOOL_SEARCH": "false",  # MCP tools in the request, not deferred
        }
        if os.geteuid() == 0:
            env["IS_SANDBOX"] = "1"
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-p",
            "--verbose",
            "--output-format",
            "stream-json",
            "--dangerously-skip-permissions",
            "--strict-mcp-config",
            "--mcp-config",
            json.dumps(mcp_config),
            "--",
            "look up abc",
            cwd=work,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, err.decode()[-2000:]
    first = script.main_requests[0]
    offered = {t["name"]: t for t in first.tools if t["name"].startswith("mcp__agentkit__")}
    ours = make_toolset()
    assert set(offered) == {f"mcp__agentkit__{name}" for name in ours.names}
    assert offered["mcp__agentkit__lookup"]["input_schema"] == ours["lookup"].input_schema
    (result,) = script.main_requests[1].tool_results()
    # the model reads our text content (with structuredContent, Claude Code shows that instead)
    assert "abc found" in json.dumps(result["content"])
    assert not result.get("is_error")
    assert events[-1]["type"] == "result"
    assert events[-1]["result"] == "Found it."


#: what the three test tools' signatures and docstrings promise, written out by hand
EXPECTED_DEFINITIONS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "add": (
        "Add two integers.",
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "first number."},
                "b": {"type": "integer", "description": "second number.", "default": 1},
            },
            "required": ["a"],
            "additionalProperties": False,
        },
        False,
    ),
    "lookup": (
        "Look a key up and return structured data.",
        {
            "type": "object",
            "properties": {
                "key": {"type": "string", "description": "what to look up."},
                "mode": {
                    "type": "string",
                    "enum": ["short", "long"],
                    "description": "how much to say.",
                    "default": "short",
                },
            },
            "required": ["key"],
            "additionalProperties": False,
        },
        False,
    ),
    "delete_thing": (
        "Delete a thing permanently.",
        {
            "type": "object",
            "properties": {"name": {"type": "string", "description": "the thing to delete."}},
            "required": ["name"],
            "additionalProperties": False,
        },
        True,
    ),
}


def test_each_export_format_carries_the_expected_definition() -> None:
    """Anthropic, OpenAI and MCP exports, each checked against the hand-written expectation
    (not against each other), in the toolset's order; MCP's survives the SDK's own model."""
    import mcp.types

    toolset = make_toolset()
    names = list(EXPECTED_DEFINITIONS)
    anthropic_defs = toolset.to_anthropic()
    openai_defs = toolset.to_openai()
    mcp_defs = toolset.to_mcp()
    assert [d["name"] for d in anthropic_defs] == names
    assert [d["function"]["name"] for d in openai_defs] == names
    assert [d["name"] for d in mcp_defs] == names
    for anthropic_def, openai_def, mcp_def in zip(
        anthropic_defs, openai_defs, mcp_defs, strict=True
    ):
        description, schema, destructive = EXPECTED_DEFINITIONS[anthropic_def["name"]]
        assert anthropic_def == {
            "name": anthropic_def["name"],
            "description": description,
            "input_schema": schema,
        }
        assert openai_def == {
            "type": "function",
            "function": {
                "name": anthropic_def["name"],
                "description": description,
                "parameters": schema,
            },
        }
        assert mcp_def == {
            "name": anthropic_def["name"],
            "description": description,
            "inputSchema": schema,
            "annotations": {"destructiveHint": destructive},
        }
        parsed = mcp.types.Tool.model_validate(mcp_def)
        dumped = parsed.model_dump(by_alias=True, exclude_none=True)
        assert dumped["inputSchema"] == schema
        assert dumped["annotations"]["destructiveHint"] is destructive
