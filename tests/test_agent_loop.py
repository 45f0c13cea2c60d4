"""ToolBasedAgent end to end: the real AsyncAnthropic client against the scripted server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import pytest

from agentkit import (
    ModelText,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolBasedAgent,
    ToolCall,
    ToolCallEvent,
    ToolResult,
    ToolResultEvent,
    Toolset,
    TurnFinished,
    tool,
)
from agentkit.agent import ErrorEvent, deny_tools
from agentkit.errors import ConfigError, MaxTurnsExceeded, ModelError, ToolError
from agentkit.testing import RecordedRequest, ScriptedAnthropicServer, reply
from agentkit.testing.replies import Reply
from tests.support import wait_until


@tool
async def add(a: int, b: int) -> str:
    """Add two integers.

    Args:
        a: first number.
        b: second number.
    """
    return str(a + b)


@tool
async def sqrt(x: float) -> str:
    """Square root of a non-negative number.

    Args:
        x: the number.
    """
    if x < 0:
        raise ToolError(f"x must be >= 0, got {x}; pass a non-negative number")
    return f"{x**0.5:g}"


@asynccontextmanager
async def scripted(
    script: Any, **agent_options: Any
) -> AsyncIterator[tuple[ScriptedAnthropicServer, ToolBasedAgent]]:
    toolset = agent_options.pop("toolset", None) or Toolset([add, sqrt])
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test-key")
        agent_options.setdefault("max_retries", 0)
        yield server, ToolBasedAgent(toolset, client=client, model="claude-test", **agent_options)


async def collect(agent: ToolBasedAgent, prompt: str) -> list[Any]:
    return [event async for event in agent.stream(prompt)]


async def test_single_tool_round_trip() -> None:
    script = [reply.tool_use("add", {"a": 2, "b": 3}), reply.text("2 + 3 = 5")]
    async with scripted(script) as (server, agent):
        result = await agent.run("add 2 and 3")
    assert result.text == "2 + 3 = 5"
    assert result.turns == 2
    assert result.stop_reason == "end_turn"
    assert not result.max_turns_reached
    second = server.message_requests[1]
    (tool_result,) = second.tool_results()
    assert tool_result["content"] == "5"
    assert "is_error" not in tool_result
    assert tool_result["tool_use_id"] == second.messages[1]["content"][0]["id"]
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user", "assistant"]
    assert server.message_requests[0].stream is True
    assert server.message_requests[0].tool_names == ["add", "sqrt"]
    server.check()


async def test_parallel_tools_overlap_and_keep_call_order() -> None:
    a_started, b_started, b_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @tool
    async def wait_a() -> str:
        """Sets A, then waits for B to finish."""
        a_started.set()
        await asyncio.wait_for(b_started.wait(), 30)
        # finish after b: completion order differs from call order
        await asyncio.wait_for(b_done.wait(), 30)
        return "a done"

    @tool
    async def wait_b() -> str:
        """Sets B, then waits for A."""
        b_started.set()
        await asyncio.wait_for(a_started.wait(), 30)
        b_done.set()
        return "b done"

    script = [reply.tool_use("wait_a") + reply.tool_use("wait_b"), reply.text("both")]
    async with scripted(script, toolset=Toolset([wait_a, wait_b])) as (server, agent):
        events = await collect(agent, "go")
    finished = [e for e in events if isinstance(e, ToolResultEvent)]
    # each tool waited on the other: sequential execution would have timed out
    assert {e.result.content for e in finished} == {"a done", "b done"}
    assert [e.call.name for e in finished] == ["wait_b", "wait_a"]  # completion order
    results = server.message_requests[1].tool_results()
    assert [r["content"] for r in results] == ["a done", "b done"]  # call order


async def test_tool_error_is_fed_back_and_corrected() -> None:
    def model(request: RecordedRequest) -> Reply:
        results = request.tool_results()
        if not results:
            return reply.tool_use("sqrt", {"x": -4})
        if results[0].get("is_error"):
            assert "must be >= 0" in results[0]["content"]
            return reply.tool_use("sqrt", {"x": 4})
        return reply.text(f"The root is {results[0]['content']}.")

    async with scripted(model) as (server, agent):
        result = await agent.run("root of -4?")
    assert result.text == "The root is 2."
    assert result.turns == 3
    second, third = server.message_requests[1:]
    assert second.tool_results()[0]["is_error"] is True
    assert "is_error" not in third.tool_results()[0]


async def test_unknown_tool_lists_available_tools() -> None:
    script = [reply.tool_use("multiply", {"a": 1}), reply.text("sorry")]
    async with scripted(script) as (server, agent):
        await agent.run("x")
    (result,) = server.message_requests[1].tool_results()
    assert result["is_error"] is True
    assert "Unknown tool 'multiply'" in result["content"]
    assert "add, sqrt" in result["content"]


async def test_schema_violations_list_every_error() -> None:
    script = [reply.tool_use("add", {"a": "one", "c": 3}), reply.text("oops")]
    async with scripted(script) as (server, agent):
        await agent.run("x")
    content = server.message_requests[1].tool_results()[0]["content"]
    assert "$.a: 'one' is not of type 'integer'" in content
    assert "'b' is a required property" in content
    assert "'c' was unexpected" in content
    assert "Fix the errors" in content


async def test_max_turns_returns_a_flagged_result_without_running_last_tools() -> None:
    calls: list[int] = []

    @tool
    async def step(n: int) -> str:
        """One more step.

        Args:
            n: step number.
        """
        calls.append(n)
        return "next"

    def model(request: RecordedRequest) -> Reply:
        return reply.tool_use("step", {"n": len(request.messages)})

    async with scripted(model, toolset=Toolset([step]), max_turns=3) as (server, agent):
        result = await agent.run("loop forever")
    assert result.max_turns_reached is True
    assert result.turns == 3
    assert len(server.message_requests) == 3
    assert calls == [1, 3]  # the third answer's call was not run
    last = result.messages[-1]["content"][0]
    assert last["is_error"] is True
    assert "max_turns" in last["content"]

    async with scripted(model, toolset=Toolset([step]), max_turns=2, raise_on_max_turns=True) as (
        _,
        agent,
    ):
        with pytest.raises(MaxTurnsExceeded, match="max_turns=2") as info:
            await agent.run("loop forever")
    assert info.value.result is not None
    assert info.value.result.turns == 2


async def test_refusal_ends_the_run() -> None:
    async with scripted([reply.refusal()]) as (_, agent):
        result = await agent.run("something bad")
    assert result.stop_reason == "refusal"
    assert result.text == ""
    assert result.turns == 1


async def test_pause_turn_resends_to_continue() -> None:
    script = [reply.pause_turn("Searching..."), reply.text("Found it.")]
    async with scripted(script) as (server, agent):
        result = await agent.run("search")
    assert result.turns == 2
    assert result.text == "Found it."
    resent = server.message_requests[1]
    assert resent.messages[-1]["role"] == "assistant"
    assert resent.messages[-1]["content"][0]["text"] == "Searching..."
    assert len(resent.messages) == 2


async def test_max_tokens_text_and_cut_tool_call() -> None:
    async with scripted([reply.text("a long essay", stop_reason="max_tokens")]) as (_, agent):
        result = await agent.run("write")
    assert result.stop_reason == "max_tokens"
    assert result.text == "a long essay"

    ran: list[str] = []

    @tool
    async def save(text: str) -> str:
        """Save text.

        Args:
            text: what to save.
        """
        ran.append(text)
        return "saved"

    script = [
        reply.tool_use("save", {"text": "trunc"}, stop_reason="max_tokens"),
        reply.text("I will split it."),
    ]
    async with scripted(script, toolset=Toolset([save]), max_tokens=50) as (server, agent):
        result = await agent.run("save a lot")
    assert ran == []  # a cut tool call is never run
    (told,) = server.message_requests[1].tool_results()
    assert told["is_error"] is True
    assert "max_tokens limit (50)" in told["content"]
    assert result.text == "I will split it."


async def test_stream_events_in_order() -> None:
    script = [
        reply.text("Adding.") + reply.tool_use("add", {"a": 1, "b": 1}),
        reply.text("Two."),
    ]
    async with scripted(script) as (_, agent):
        events = await collect(agent, "1+1")
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "RunStarted",
        "TextDelta",
        "ModelText",
        "ToolCallEvent",
        "ToolResultEvent",
        "TurnFinished",
        "TextDelta",
        "ModelText",
        "TurnFinished",
        "RunFinished",
    ]
    assert isinstance(events[0], RunStarted)
    assert events[0].prompt == "1+1"
    assert isinstance(events[3], ToolCallEvent)
    assert events[3].call.input == {"a": 1, "b": 1}
    assert isinstance(events[4], ToolResultEvent)
    assert events[4].result == ToolResult("2")
    assert events[4].duration >= 0
    assert [e.turn for e in events if isinstance(e, TurnFinished)] == [1, 2]
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result.text == "Two."


async def test_text_deltas_arrive_live() -> None:
    script = [reply.text("x" * 40).streamed(chunk_size=5, chunk_delay=0.02)]
    async with scripted(script) as (_, agent):
        stamps: list[tuple[str, float]] = []
        async for event in agent.stream("talk"):
            stamps.append((type(event).__name__, time.perf_counter()))
    deltas = [t for name, t in stamps if name == "TextDelta"]
    done = next(t for name, t in stamps if name == "ModelText")
    assert len(deltas) == 8
    assert done - deltas[0] >= 0.1  # the first delta came long before the message ended


async def test_usage_is_summed_over_turns() -> None:
    script = [
        reply.tool_use("add", {"a": 1, "b": 2}).with_usage(
            input_tokens=100, output_tokens=20, cache_creation_input_tokens=1000
        ),
        reply.text("3").with_usage(input_tokens=30, output_tokens=5, cache_read_input_tokens=1000),
    ]
    async with scripted(script) as (_, agent):
        events = await collect(agent, "x")
    result = events[-1].result
    assert result.usage.input_tokens == 130
    assert result.usage.output_tokens == 25
    assert result.usage.cache_creation_input_tokens == 1000
    assert result.usage.cache_read_input_tokens == 1000
    assert result.usage.total_input_tokens == 2130
    per_turn = [e.usage.output_tokens for e in events if isinstance(e, TurnFinished)]
    assert per_turn == [20, 5]


async def test_cache_control_breakpoints() -> None:
    script = [
        reply.tool_use("add", {"a": 1, "b": 2}) + reply.tool_use("add", {"a": 3, "b": 4}),
        reply.tool_use("add", {"a": 5, "b": 6}),
        reply.text("done"),
    ]
    async with scripted(script, system="You add numbers.") as (server, agent):
        result = await agent.run("add things")
    first, second, third = server.message_requests
    assert first.cache_breakpoints() == ["tools[1]", "system[0]", "messages[0][0]"]
    assert first.system == [
        {"type": "text", "text": "You add numbers.", "cache_control": {"type": "ephemeral"}}
    ]
    # newest message (the two tool results) + the previous request's newest message
    assert second.cache_breakpoints() == [
        "tools[1]",
        "system[0]",
        "messages[0][0]",
        "messages[2][1]",
    ]
    # the breakpoint moved forward: never more than four
    assert third.cache_breakpoints() == [
        "tools[1]",
        "system[0]",
        "messages[2][1]",
        "messages[4][0]",
    ]
    assert all(len(r.cache_breakpoints()) <= 4 for r in server.message_requests)
    assert "cache_control" not in str(result.messages)  # the history itself stays clean

    async with scripted([reply.text("x")], system="s", cache=False) as (server, agent):
        await agent.run("x")
    assert server.message_requests[0].cache_breakpoints() == []
    assert server.message_requests[0].json["system"] == "s"


async def test_retries_on_429_and_529_then_success() -> None:
    script = [reply.error(429), reply.error(529), reply.text("finally")]
    async with scripted(script, max_retries=2) as (server, agent):
        result = await agent.run("x")
    assert result.text == "finally"
    assert len(server.message_requests) == 3


async def test_retries_exhausted_raise_model_error_and_emit_error_event() -> None:
    script = [reply.error(529, "Overloaded")] * 3
    async with scripted(script, max_retries=2) as (server, agent):
        events: list[Any] = []

        async def consume() -> None:
            async for event in agent.stream("x"):
                events.append(event)

        with pytest.raises(ModelError, match="529") as info:
            await consume()
    assert isinstance(info.value.__cause__, anthropic.APIStatusError)
    assert "overloaded_error: Overloaded" in str(info.value)
    assert "after 2 retries" in str(info.value)
    assert len(server.message_requests) == 3
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].error is info.value


async def test_failed_request_after_tools_retries_only_the_request() -> None:
    ran: list[int] = []

    @tool
    async def once(n: int) -> str:
        """Side effect.

        Args:
            n: a number.
        """
        ran.append(n)
        return "ok"

    script = [reply.tool_use("once", {"n": 1}), reply.error(529), reply.text("done")]
    async with scripted(script, toolset=Toolset([once]), max_retries=1) as (server, agent):
        result = await agent.run("x")
    assert result.text == "done"
    assert ran == [1]
    assert server.message_requests[1].messages == server.message_requests[2].messages

    script = [reply.tool_use("once", {"n": 2}), reply.error(500), reply.error(500)]
    async with scripted(script, toolset=Toolset([once]), max_retries=1) as (server, agent):
        with pytest.raises(ModelError, match="500"):
            await agent.run("x")
    assert ran == [1, 2]


async def test_before_tool_short_circuits_and_after_tool_observes() -> None:
    ran: list[str] = []
    observed: list[tuple[str, str, bool]] = []

    @tool
    async def delete_all() -> str:
        """Delete everything."""
        ran.append("delete_all")
        return "deleted"

    async def before(call: ToolCall) -> ToolResult | None:
        if call.name == "delete_all":
            return ToolResult.error("Denied by policy: ask a human.")
        return None

    async def after(call: ToolCall, result: ToolResult) -> None:
        observed.append((call.name, result.content, result.is_error))
        raise RuntimeError("observer bug")  # logged, never breaks the run

    script = [
        reply.tool_use("delete_all") + reply.tool_use("add", {"a": 1, "b": 1}),
        reply.text("ok"),
    ]
    async with scripted(
        script, toolset=Toolset([delete_all, add]), before_tool=before, after_tool=after
    ) as (server, agent):
        result = await agent.run("clean up")
    assert result.text == "ok"
    assert ran == []
    denied, added = server.message_requests[1].tool_results()
    assert denied["is_error"] is True
    assert denied["content"] == "Denied by policy: ask a human."
    assert added["content"] == "2"
    assert sorted(observed) == [("add", "2", False), ("delete_all", denied["content"], True)]


async def test_deny_tools_refuses_the_named_tools_and_runs_the_rest() -> None:
    ran: list[str] = []

    @tool
    async def push() -> str:
        """Push the work."""
        ran.append("push")
        return "pushed"

    @tool
    async def status() -> str:
        """Say how things are."""
        ran.append("status")
        return "all fine"

    script = [
        reply.tool_use("push") + reply.tool_use("status") + reply.tool_use("add", {"a": 2, "b": 2}),
        reply.text("done"),
    ]
    async with scripted(
        script,
        toolset=Toolset([push, status, add]),
        before_tool=deny_tools({"push", "delete_workspace"}, reason="needs a human"),
    ) as (server, agent):
        result = await agent.run("ship it")
    assert result.text == "done"
    assert ran == ["status"]  # the denied tool never ran
    denied, allowed, added = server.message_requests[1].tool_results()
    assert denied["is_error"] is True
    assert denied["content"] == "Tool push needs a human."
    assert not allowed.get("is_error")
    assert allowed["content"] == "all fine"
    assert added["content"] == "4"

    default_hook = deny_tools({"push"})
    refused = await default_hook(ToolCall(id="t1", name="push", input={}))
    assert refused is not None
    assert refused.is_error
    assert refused.content == "Tool push is not allowed here."
    assert await default_hook(ToolCall(id="t2", name="pushy", input={})) is None


async def test_config_error_from_a_tool_propagates() -> None:
    @tool
    async def needs_setup() -> str:
        """Needs configuration."""
        raise ConfigError("GITHUB_TOKEN is not set")

    script = [reply.tool_use("needs_setup"), reply.text("never")]
    async with scripted(script, toolset=Toolset([needs_setup])) as (server, agent):
        with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
            await agent.run("x")
    assert len(server.message_requests) == 1


async def test_cancellation_cancels_running_tools() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    @tool
    async def forever() -> str:
        """Never returns."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async with scripted(
        [reply.tool_use("forever"), reply.text("x")], toolset=Toolset([forever])
    ) as (server, agent):
        task = asyncio.create_task(agent.run("x"))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cancelled == [True]
    assert len(server.message_requests) == 1


async def test_cancellation_during_a_slow_model_request() -> None:
    async with scripted([reply.delay(600, reply.text("late"))]) as (server, agent):
        task = asyncio.create_task(agent.run("x"))
        await wait_until(lambda: server.message_requests, "the model request")
        task.cancel()
        # the run ends without waiting for the (600 s) reply; the generous bound only fails a
        # run that ignored the cancellation
        done, _ = await asyncio.wait([task], timeout=60)
        assert done == {task}
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_breaking_out_of_stream_cancels_tools() -> None:
    cancelled: list[bool] = []

    @tool
    async def slow() -> str:
        """Slow."""
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    @tool
    async def fast() -> str:
        """Fast."""
        return "fast"

    script = [reply.tool_use("fast") + reply.tool_use("slow"), reply.text("x")]
    async with scripted(script, toolset=Toolset([fast, slow])) as (_, agent):
        stream = agent.stream("x")
        async for event in stream:
            if isinstance(event, ToolResultEvent):
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert cancelled == [True]


def test_run_sync_for_sync_callers() -> None:
    server = ScriptedAnthropicServer([reply.tool_use("add", {"a": 1, "b": 1}), reply.text("2")])
    with server.start_in_thread() as running:
        client = anthropic.AsyncAnthropic(base_url=running.url, api_key="t")
        agent = ToolBasedAgent(Toolset([add]), client=client)
        result = agent.run_sync("1+1")
    assert result.text == "2"
    assert result.turns == 2


async def test_run_sync_refuses_inside_an_event_loop() -> None:
    agent = ToolBasedAgent(Toolset([add]), client=anthropic.AsyncAnthropic(api_key="t"))
    with pytest.raises(RuntimeError, match=r"await agent\.run"):
        agent.run_sync("x")


async def test_text_only_prompt_and_model_text_events() -> None:
    async with scripted([reply.text("first") + reply.text("second")]) as (server, agent):
        events = await collect(agent, "hello")
    texts = [e.text for e in events if isinstance(e, ModelText)]
    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert texts == ["first", "second"]
    assert deltas == "firstsecond"
    assert events[-1].result.text == "firstsecond"
    body = server.message_requests[0].json
    assert body["model"] == "claude-test"
    assert body["max_tokens"] == 4096
    assert body["messages"][0]["content"][0]["text"] == "hello"


async def test_stream_failing_before_any_text_is_retried() -> None:
    script = [reply.stream_error("overloaded_error"), reply.text("second try")]
    async with scripted(script, max_retries=1) as (server, agent):
        result = await agent.run("x")
    assert result.text == "second try"
    assert len(server.message_requests) == 2


async def test_stream_failing_after_text_raises_model_error() -> None:
    script = [reply.stream_error("overloaded_error", "Overloaded", partial_text="Half an ans")]
    async with scripted(script, max_retries=3) as (server, agent):
        events: list[Any] = []

        async def consume() -> None:
            async for event in agent.stream("x"):
                events.append(event)

        with pytest.raises(ModelError, match="stream error") as info:
            await consume()
    assert "overloaded_error: Overloaded" in str(info.value)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Half an ans"]
    assert len(server.message_requests) == 1  # text was delivered: not retried
