"""Conversation: history across prompts that stays valid for the API after failures."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import anthropic
import pytest

from agentkit import Conversation, ToolBasedAgent, Toolset, tool
from agentkit.agent.conversation import repair_messages
from agentkit.errors import ModelError
from agentkit.testing import ScriptedAnthropicServer, reply


@tool
async def echo(text: str) -> str:
    """Echo text back.

    Args:
        text: what to echo.
    """
    return text


def agent_for(server: ScriptedAnthropicServer, **options: Any) -> ToolBasedAgent:
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
    tools = options.pop("toolset", None) or Toolset([echo])
    return ToolBasedAgent(tools, client=client, **options)


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def assert_valid(messages: list[dict[str, Any]]) -> None:
    """Roles alternate, start with user, and every tool_use is answered in the next message."""
    assert messages[0]["role"] == "user"
    for before, after in itertools.pairwise(messages):
        assert before["role"] != after["role"]
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        uses = {b["id"] for b in message["content"] if b["type"] == "tool_use"}
        if uses:
            answered = {
                b["tool_use_id"] for b in messages[i + 1]["content"] if b["type"] == "tool_result"
            }
            assert uses <= answered


async def test_history_is_kept_across_prompts() -> None:
    script = [
        reply.tool_use("echo", {"text": "hi"}),
        reply.text("I echoed hi."),
        reply.text("You asked me to echo."),
    ]
    async with ScriptedAnthropicServer(script) as server:
        conv = Conversation()
        agent = agent_for(server, conversation=conv)
        first = await agent.run("echo hi")
        second = await agent.run("what did I ask?")
    assert first.text == "I echoed hi."
    assert second.text == "You asked me to echo."
    assert roles(conv.messages) == ["user", "assistant", "user", "assistant", "user", "assistant"]
    third_request = server.message_requests[2]
    assert third_request.messages[0]["content"][0]["text"] == "echo hi"
    assert third_request.last_user_text() == "what did I ask?"
    assert len(third_request.messages) == 5
    # the previous run's last message is a cache breakpoint: the whole history is read from cache
    assert "messages[3][0]" in third_request.cache_breakpoints()
    assert "messages[4][0]" in third_request.cache_breakpoints()
    assert_valid(conv.messages)
    assert second.messages == conv.messages


async def test_conversation_passed_per_run() -> None:
    async with ScriptedAnthropicServer([reply.text("one"), reply.text("two")]) as server:
        agent = agent_for(server)
        a, b = Conversation(), Conversation()
        await agent.run("to a", conversation=a)
        await agent.run("to b", conversation=b)
    assert [m["content"][0]["text"] for m in a.messages] == ["to a", "one"]
    assert [m["content"][0]["text"] for m in b.messages] == ["to b", "two"]


async def test_failed_first_request_rolls_the_prompt_back() -> None:
    async with ScriptedAnthropicServer([reply.text("ok"), reply.error(500)]) as server:
        conv = Conversation()
        agent = agent_for(server, conversation=conv)
        await agent.run("first")
        before = list(conv.messages)
        with pytest.raises(ModelError):
            await agent.run("second")
    assert conv.messages == before


async def test_cancelled_tool_call_is_answered_in_history() -> None:
    started = asyncio.Event()

    @tool
    async def slow() -> str:
        """Slow."""
        started.set()
        await asyncio.sleep(60)
        return "never"

    script = [
        reply.tool_use("echo", {"text": "done"}) + reply.tool_use("slow"),
        reply.text("Picking up again."),
    ]
    async with ScriptedAnthropicServer(script) as server:
        conv = Conversation()
        agent = agent_for(server, toolset=Toolset([echo, slow]), conversation=conv)
        task = asyncio.create_task(agent.run("work"))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert roles(conv.messages) == ["user", "assistant", "user"]
        results = conv.messages[2]["content"]
        assert [r["is_error"] for r in results] == [True, True]
        assert "interrupted" in results[0]["content"]
        result = await agent.run("continue")
    assert result.text == "Picking up again."
    assert_valid(conv.messages)
    resumed = server.message_requests[1]
    # the new prompt joined the user message that answers the interrupted calls
    last = resumed.messages[-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]
    assert last[-1]["text"] == "continue"


async def test_refused_prompt_is_rolled_back() -> None:
    async with ScriptedAnthropicServer([reply.text("hello"), reply.refusal()]) as server:
        conv = Conversation()
        agent = agent_for(server, conversation=conv)
        await agent.run("hi")
        result = await agent.run("something refused")
    assert result.stop_reason == "refusal"
    assert roles(conv.messages) == ["user", "assistant"]
    assert roles(result.messages) == ["user", "assistant", "user"]


async def test_concurrent_runs_on_one_conversation_are_serialized() -> None:
    script = [reply.delay(0.1, reply.text("first answer")), reply.text("second answer")]
    async with ScriptedAnthropicServer(script) as server:
        conv = Conversation()
        agent = agent_for(server, conversation=conv)
        await asyncio.gather(agent.run("one"), agent.run("two"))
    assert len(server.message_requests[1].messages) == 3  # saw the whole first exchange
    assert_valid(conv.messages)
    assert len(conv.messages) == 4


def test_json_round_trip_and_repair_on_load() -> None:
    conv = Conversation(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "echo", "input": {}}],
            },
        ]
    )
    assert roles(conv.messages) == ["user", "assistant", "user"]
    assert conv.messages[2]["content"][0]["tool_use_id"] == "t1"
    again = Conversation.from_json(conv.to_json())
    assert again.messages == conv.messages
    conv.clear()
    assert len(conv) == 0
    with pytest.raises(ValueError, match="JSON list"):
        Conversation.from_json("{}")


def test_repair_adds_missing_results_first_in_an_existing_user_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "a", "name": "x", "input": {}},
                {"type": "tool_use", "id": "b", "name": "x", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "a", "content": "ok"}],
        },
    ]
    repair_messages(messages, note="lost")
    content = messages[2]["content"]
    assert [(b["tool_use_id"], b["content"]) for b in content] == [("b", "lost"), ("a", "ok")]
    assert_valid(messages)


async def test_refusal_after_tools_keeps_the_tool_exchange() -> None:
    script = [
        reply.tool_use("echo", {"text": "x"}),
        reply.refusal("I can't continue."),
        reply.text("fine"),
    ]
    async with ScriptedAnthropicServer(script) as server:
        conv = Conversation()
        agent = agent_for(server, conversation=conv)
        result = await agent.run("do it")
        assert result.stop_reason == "refusal"
        assert roles(conv.messages) == ["user", "assistant", "user"]
        await agent.run("something else")
    assert_valid(conv.messages)
    last = server.message_requests[-1].messages[-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]
