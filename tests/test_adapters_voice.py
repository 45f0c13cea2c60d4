"""ElevenLabs client tools: our tools run through the SDK's own ``ClientTools`` registry."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from elevenlabs.conversational_ai.conversation import ClientTools

from agentkit import Toolset, tool
from agentkit.adapters.voice import (
    client_tool_configs,
    register_voice_tools,
    speech_summary,
)
from tests.adapter_toolsets import DELETED, make_toolset

SEEN_LOOPS: list[asyncio.AbstractEventLoop] = []


@tool
async def where_am_i() -> str:
    """Report which event loop ran the tool."""
    SEEN_LOOPS.append(asyncio.get_running_loop())
    return "Here.\n- one\n- two\n- three\n- four\n- five"


async def execute(client_tools: ClientTools, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Drive a call the way the SDK's Conversation does: execute_tool + a response callback."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[dict[str, Any]] = loop.create_future()

    def callback(response: dict[str, Any]) -> None:  # called on the SDK's loop thread
        loop.call_soon_threadsafe(answer.set_result, response)

    client_tools.execute_tool(name, params, callback)
    return await asyncio.wait_for(answer, 10)


@pytest.fixture
def client_tools() -> Any:
    registry = ClientTools()  # the SDK runs handlers on its own loop in its own thread
    registry.start()
    yield registry
    registry.stop()


async def test_registered_tools_run_on_the_toolset_loop_via_the_sdk_registry(
    client_tools: ClientTools,
) -> None:
    SEEN_LOOPS.clear()
    toolset = Toolset([*make_toolset(), where_am_i])
    returned = register_voice_tools(toolset, client_tools, max_sentences=3)
    assert returned is client_tools
    assert set(client_tools.tools) == set(toolset.names) - {"delete_thing"}

    ok = await execute(client_tools, "lookup", {"tool_call_id": "call-1", "key": "abc"})
    assert ok == {
        "type": "client_tool_result",
        "tool_call_id": "call-1",
        "result": "abc found.",
        "is_error": False,
    }
    here = await execute(client_tools, "where_am_i", {"tool_call_id": "call-2"})
    # the SDK ran the handler on its thread; the tool itself ran on this (the home) loop
    assert [asyncio.get_running_loop()] == SEEN_LOOPS
    assert threading.current_thread() is threading.main_thread()
    assert here["result"] == "Here. one. two. And more."


async def test_errors_and_invalid_arguments_come_back_as_error_results(
    client_tools: ClientTools,
) -> None:
    register_voice_tools(make_toolset(), client_tools)
    missing = await execute(client_tools, "lookup", {"tool_call_id": "c3", "key": "missing"})
    assert missing["is_error"] is True
    assert missing["tool_call_id"] == "c3"
    assert "no entry named" in missing["result"]
    defaulted = await execute(client_tools, "add", {"tool_call_id": "c6", "a": 1, "b": None})
    assert defaulted["result"] == "2."  # null: the default b=1 applies
    invalid = await execute(client_tools, "add", {"tool_call_id": "c4", "a": "many"})
    assert invalid["is_error"] is True
    assert "Invalid input for tool add" in invalid["result"]


async def test_handlers_on_the_home_loop_are_awaited_directly() -> None:
    SEEN_LOOPS.clear()
    registry = ClientTools(loop=asyncio.get_running_loop())
    registry.start()
    register_voice_tools(Toolset([where_am_i]), registry, names=["where_am_i"])
    response = await execute(registry, "where_am_i", {"tool_call_id": "c5"})
    registry.stop()
    assert response["is_error"] is False
    assert [asyncio.get_running_loop()] == SEEN_LOOPS


async def test_destructive_tools_are_denied_by_default(client_tools: ClientTools) -> None:
    toolset = make_toolset()
    register_voice_tools(toolset, client_tools)
    assert "delete_thing" not in client_tools.tools  # no approval step on a microphone
    assert "delete_thing" not in {c["name"] for c in client_tool_configs(toolset)}
    with pytest.raises(ValueError, match="allow_destructive"):
        register_voice_tools(toolset, ClientTools(), names=["add", "delete_thing"])

    DELETED.clear()
    registry = ClientTools(loop=asyncio.get_running_loop())
    registry.start()
    register_voice_tools(toolset, registry, allow_destructive=True)
    response = await execute(registry, "delete_thing", {"tool_call_id": "c7", "name": "x"})
    registry.stop()
    assert response["is_error"] is False
    assert DELETED == ["x"]
    configs = client_tool_configs(toolset, allow_destructive=True)
    assert "delete_thing" in {c["name"] for c in configs}


def test_registering_an_unknown_tool_fails() -> None:
    with pytest.raises(ValueError, match="unknown tool"):
        register_voice_tools(make_toolset(), ClientTools(), names=["nope"])


def test_speech_summary_is_short_and_plain() -> None:
    text = "## Result\n**Done**. See `main.py` and [the docs](https://x.y).\n```\ncode\n```\nBye"
    assert speech_summary(text) == "Result. Done. See main.py and the docs. And more."
    long = speech_summary("word " * 400, max_chars=120)
    assert len(long) <= 120
    assert long.endswith("And more.")
    assert speech_summary("") == ""


def test_client_tool_configs_follow_the_schema() -> None:
    configs = {c["name"]: c for c in client_tool_configs(make_toolset())}
    lookup = configs["lookup"]
    assert lookup["type"] == "client"
    assert lookup["expects_response"] is True
    assert lookup["parameters"]["required"] == ["key"]
    mode = lookup["parameters"]["properties"]["mode"]
    assert mode["enum"] == ["short", "long"]
    assert "Default: short" in mode["description"]
    assert configs["add"]["parameters"]["properties"]["a"]["type"] == "integer"


async def test_a_client_tool_call_message_from_the_service_is_answered_on_the_socket() -> None:
    """The SDK's own Conversation handles the wire message; a fake socket stands in for
    ElevenLabs' service."""
    import json

    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import Conversation

    loop = asyncio.get_running_loop()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    class FakeSocket:
        def send(self, data: str) -> None:  # called from the SDK's thread
            loop.call_soon_threadsafe(sent.put_nowait, json.loads(data))

    client_tools = register_voice_tools(make_toolset())
    conversation = Conversation(
        ElevenLabs(api_key="test-key"), "agent-id", requires_auth=False, client_tools=client_tools
    )
    try:
        message = {
            "type": "client_tool_call",
            "client_tool_call": {
                "tool_name": "add",
                "tool_call_id": "call-9",
                "parameters": {"a": 40, "b": 2},
            },
        }
        conversation._handle_message(message, FakeSocket())
        response = await asyncio.wait_for(sent.get(), 10)
    finally:
        client_tools.stop()
    assert response == {
        "type": "client_tool_result",
        "tool_call_id": "call-9",
        "result": "42.",
        "is_error": False,
    }


def test_voice_example_prints_client_tool_definitions_for_the_product_tools() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def printed(*extra: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, str(root / "examples" / "voice_agent.py"), "--print-tools", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=root,
        ).stdout
        return list(json.loads(out))

    safe = {c["name"] for c in printed()}
    assert len(safe) == 11
    assert not safe & {
        "stop_claude_agent",
        "push_workspace",
        "delete_workspace",
        "approve_claude_agent",
    }
    configs = printed("--allow-destructive")
    assert len(configs) == 15
    spawn = next(c for c in configs if c["name"] == "spawn_claude_agent")
    assert spawn["parameters"]["required"] == ["task", "workspace_path"]
    assert all(c["type"] == "client" for c in configs)
