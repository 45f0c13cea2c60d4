"""DiscordWebhookNotifier against a respx-mocked webhook: order, 429s, limits, redaction, drops."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest
import respx

from agentkit import Settings, ToolResult
from agentkit.adapters.notify import DiscordWebhookNotifier, embed_length, embed_messages
from agentkit.agent.events import (
    ErrorEvent,
    RunFinished,
    RunResult,
    RunStarted,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)
from agentkit.redact import Redactor
from tests.support import wait_until

URL = "https://discord.com/api/webhooks/123456/webhook-secret-token-abcdef"
CONTAINER = "claude-agent-1764240000000-a1b2c3"


def bodies(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


def text_of(body: dict[str, Any]) -> str:
    parts = [body.get("content", "")]
    for embed in body.get("embeds", []):
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f["name"] + " " + f["value"] for f in embed.get("fields", [])]
    return "\n".join(parts)


def status(**fields: Any) -> dict[str, Any]:
    """A status dict shaped like ``AgentStatus.to_dict()``."""
    base: dict[str, Any] = {
        "id": CONTAINER,
        "state": "running",
        "exit_code": None,
        "elapsed_s": 0.5,
        "workspace": "/opt/agentflow/workspaces/demo",
        "task": "Fix the flaky test",
        "turns": 3,
        "cost_usd": None,
        "result_text": None,
        "is_error": False,
        "error": None,
    }
    return {**base, **fields}


def spawn_events() -> list[Any]:
    call = ToolCall(
        id="toolu_1",
        name="spawn_claude_agent",
        input={"task": "Fix the flaky test", "workspace_path": "demo"},
    )
    result = ToolResult(f"Spawned agent {CONTAINER}", data=status(state="running"))
    wait = ToolCall(id="toolu_2", name="wait_for_claude_agent", input={"container_id": CONTAINER})
    finished = ToolResult(
        "Agent succeeded",
        data={
            **status(
                state="succeeded",
                result_text="All tests pass now.",
                cost_usd=0.0123,
                elapsed_s=65.2,
            ),
            "wait_timed_out": False,
        },
    )
    run = RunResult(
        text="The agent fixed the test.",
        messages=[],
        turns=3,
        stop_reason="end_turn",
        usage=Usage(input_tokens=100, output_tokens=20),
    )
    return [
        RunStarted(prompt="Fix the flaky test in demo"),
        ToolCallEvent(call=call, turn=1),
        ToolResultEvent(call=call, result=result, duration=0.5, turn=1),
        ToolCallEvent(call=wait, turn=2),
        ToolResultEvent(call=wait, result=finished, duration=65.0, turn=2),
        RunFinished(result=run),
    ]


@respx.mock
async def test_events_are_posted_in_order_with_agent_start_and_completion() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    async with DiscordWebhookNotifier(URL) as notifier:
        for event in spawn_events():
            notifier.notify(event)
    sent = bodies(route)
    assert notifier.sent == len(sent) == 6
    assert "Run started" in text_of(sent[0])
    assert "spawn_claude_agent" in sent[1]["content"]
    assert "Fix the flaky test" in sent[1]["content"]
    assert "Agent started" in text_of(sent[2])
    assert "Fix the flaky test" in text_of(sent[2])
    assert CONTAINER in text_of(sent[2])
    assert "wait_for_claude_agent" in sent[3]["content"]
    finished = text_of(sent[4])
    assert "Agent finished" in finished
    assert "All tests pass now." in finished
    assert "$0.0123" in finished
    assert "1 min 5 s" in finished
    assert "Run finished" in text_of(sent[5])
    assert "The agent fixed the test." in text_of(sent[5])
    # never pings anyone, whatever the model wrote
    assert all(b["allowed_mentions"] == {"parse": []} for b in sent)


@respx.mock
async def test_tap_passes_events_through_and_errors_are_reported() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))

    async def events() -> Any:
        call = ToolCall(id="t", name="get_claude_output", input={"container_id": "x"})
        yield RunStarted(prompt="hi")
        yield ToolResultEvent(
            call=call, result=ToolResult.error("no such agent"), duration=0.1, turn=1
        )
        yield ErrorEvent(error=RuntimeError("boom"), message="API overloaded")

    async with DiscordWebhookNotifier(URL, tool_use=False) as notifier:
        seen = [event async for event in notifier.tap(events())]
    assert [type(e).__name__ for e in seen] == ["RunStarted", "ToolResultEvent", "ErrorEvent"]
    texts = [text_of(b) for b in bodies(route)]
    assert "get_claude_output failed" in texts[1]
    assert "no such agent" in texts[1]
    assert "Run failed" in texts[2]
    assert "API overloaded" in texts[2]


@respx.mock
async def test_after_tool_hook_reports_use_and_notable_results() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    events = spawn_events()
    async with DiscordWebhookNotifier(URL) as notifier:
        await notifier.after_tool(events[1].call, events[2].result)
        await notifier.after_tool(
            ToolCall(id="x", name="list_workspaces", input={}), ToolResult("a")
        )
    texts = [text_of(b) for b in bodies(route)]
    assert len(texts) == 3  # use + agent started, then use only (plain result: not notable)
    assert "spawn_claude_agent" in texts[0]
    assert "Agent started" in texts[1]
    assert "list_workspaces" in texts[2]


@respx.mock
async def test_429_retry_after_from_json_body_is_honoured() -> None:
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(
                429, json={"message": "rate limited", "retry_after": 0.3, "global": False}
            ),
            httpx.Response(204),
            httpx.Response(204),
        ]
    )
    async with DiscordWebhookNotifier(URL) as notifier:
        started = time.monotonic()
        notifier.post("first")
        notifier.post("second")
    elapsed = time.monotonic() - started
    sent = bodies(route)
    assert [b["content"] for b in sent] == ["first", "first", "second"]
    assert elapsed >= 0.3
    assert notifier.sent == 2
    assert notifier.failed == 0


@respx.mock
async def test_429_retry_after_header_is_honoured() -> None:
    route = respx.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "0.25"}), httpx.Response(204)]
    )
    async with DiscordWebhookNotifier(URL) as notifier:
        started = time.monotonic()
        notifier.post("only")
    assert time.monotonic() - started >= 0.25
    assert [b["content"] for b in bodies(route)] == ["only", "only"]


@respx.mock
async def test_empty_bucket_headers_delay_the_next_message() -> None:
    sent_at: list[float] = []
    answers = [
        httpx.Response(
            204, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.3"}
        ),
        httpx.Response(204),
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return answers[len(sent_at) - 1]

    route = respx.post(URL).mock(side_effect=answer)
    async with DiscordWebhookNotifier(URL) as notifier:
        notifier.post("a")
        notifier.post("b")
    assert [b["content"] for b in bodies(route)] == ["a", "b"]
    # the second message waited for the bucket to refill (a lower bound: never flaky)
    assert sent_at[1] - sent_at[0] >= 0.3


@respx.mock
async def test_client_errors_are_not_retried_and_server_errors_are() -> None:
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(400, json={"message": "bad"}),
            httpx.Response(502),
            httpx.Response(204),
        ]
    )
    async with DiscordWebhookNotifier(URL) as notifier:
        notifier.post("bad one")
        notifier.post("good one")
    assert [b["content"] for b in bodies(route)] == ["bad one", "good one", "good one"]
    assert notifier.failed == 1
    assert notifier.sent == 1


@respx.mock
async def test_long_texts_are_split_within_discord_limits() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    words = " ".join(f"word{i}" for i in range(3000))  # ~26000 characters
    run = RunResult(text=words, messages=[], turns=1, stop_reason="end_turn")
    async with DiscordWebhookNotifier(URL) as notifier:
        notifier.notify(RunFinished(result=run))
        notifier.post("x" * 4500)
    sent = bodies(route)
    embeds = [b["embeds"][0] for b in sent if "embeds" in b]
    contents = [b["content"] for b in sent if "content" in b]
    assert len(embeds) >= 7
    assert all(len(e.get("description", "")) <= 4096 for e in embeds)
    assert all(embed_length(e) <= 6000 for e in embeds)
    assert all(len(e["title"]) <= 256 for e in embeds)
    assert " ".join(e["description"] for e in embeds).split() == words.split()
    assert [len(c) for c in contents] == [2000, 2000, 500]


def test_embed_messages_respect_the_total_with_many_large_fields() -> None:
    fields = [(f"name{i}" * 40, "v" * 5000) for i in range(30)]
    payloads = embed_messages("t" * 400, "d" * 9000, fields=fields)
    for payload in payloads:
        (embed,) = payload["embeds"]
        assert embed_length(embed) <= 6000
        assert len(embed.get("fields", [])) <= 25
        assert all(
            len(f["value"]) <= 1024 and len(f["name"]) <= 256 for f in embed.get("fields", [])
        )
    assert sum(len(p["embeds"][0].get("description", "")) for p in payloads) == 9000


@respx.mock
async def test_secrets_are_redacted_from_every_message() -> None:
    token = "ghp_" + "A1b2C3d4" * 5
    api_key = "sk-ant-api03-" + "z" * 30
    settings = Settings(
        github_token=token,
        anthropic_api_key=api_key,
        discord_webhook_url=URL,
    )
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    call = ToolCall(id="t", name="push_workspace", input={"commit_message": f"token {token}"})
    leaky = ToolResult.error(
        f"push to https://x:{token}@github.com failed; key={api_key}; hook={URL}"
    )
    async with DiscordWebhookNotifier.from_settings(settings) as notifier:
        notifier.notify(RunStarted(prompt=f"use {api_key}"))
        notifier.notify(ToolCallEvent(call=call, turn=1))
        notifier.notify(ToolResultEvent(call=call, result=leaky, duration=1.0, turn=1))
    raw = " ".join(call.request.content.decode() for call in route.calls)
    assert route.call_count == 3
    assert token not in raw
    assert api_key not in raw
    assert "webhook-secret-token" not in raw
    assert raw.count("[REDACTED]") >= 4


@respx.mock
async def test_the_webhook_url_is_not_logged_by_httpx(caplog: pytest.LogCaptureFixture) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    with caplog.at_level(logging.INFO, logger="httpx"):
        async with DiscordWebhookNotifier(URL) as notifier:
            notifier.post("hello")
    assert route.call_count == 1
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request...
    assert "webhook-secret-token" not in caplog.text  # ...without the token


@respx.mock
async def test_a_secret_cut_by_clipping_or_splitting_is_still_redacted() -> None:
    secret = "EL7f3a9c2e1b4d8f6a0c5e9d7b"  # a registered key with no well-known shape
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    # the rendered input is clipped to a few hundred characters, inside the secret
    call = ToolCall(id="t", name="spawn_claude_agent", input={"task": "x" * 280 + " " + secret})
    failed = ToolResult.error("spawn failed", data={"task": "x" * 4089 + secret})
    run = RunResult(
        text="y" * 4090 + secret,  # split at 4096 characters, inside the secret
        messages=[],
        turns=1,
        stop_reason="end_turn",
        usage=Usage(),
    )
    async with DiscordWebhookNotifier(URL, redactor=Redactor([secret])) as notifier:
        notifier.notify(ToolCallEvent(call=call, turn=1))
        notifier.notify(ToolResultEvent(call=call, result=failed, duration=1.0, turn=1))
        await notifier.after_tool(call, failed)
        notifier.notify(RunFinished(result=run))
    raw = " ".join(call.request.content.decode() for call in route.calls)
    assert route.call_count >= 4
    assert secret[:6] not in raw


@respx.mock
async def test_queue_overflow_is_counted_and_reported_without_blocking() -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(204)

    route = respx.post(URL).mock(side_effect=slow)
    notifier = DiscordWebhookNotifier(URL, queue_size=2)
    for i in range(10):
        notifier.post(f"message {i}")
    # notify returned while the webhook is still blocked: it never waits on the network
    assert notifier.dropped == 8
    assert notifier.pending == 2
    gate.set()
    await notifier.aclose()
    sent = [b["content"] for b in bodies(route)]
    assert sent[:2] == ["message 0", "message 1"]
    assert "8 notifications dropped" in sent[2]
    assert notifier.dropped == 8


@respx.mock
async def test_drops_while_busy_are_reported_once_the_backlog_clears() -> None:
    gate, in_flight = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        await gate.wait()
        return httpx.Response(204)

    route = respx.post(URL).mock(side_effect=slow)
    async with DiscordWebhookNotifier(URL, queue_size=1) as notifier:
        notifier.post("one")
        # the sender holds "one" in flight, the queue is empty
        await asyncio.wait_for(in_flight.wait(), 60)
        notifier.post("two")
        notifier.post("three")  # dropped
        gate.set()
        await wait_until(lambda: route.call_count >= 3, "the backlog and the drop report")
        sent = [b["content"] for b in bodies(route)]
        assert sent == ["one", "two", sent[2]]
        assert "1 notification dropped" in sent[2]
    assert notifier.dropped == 1


async def test_after_close_messages_are_dropped_and_counted() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with httpx.AsyncClient(transport=transport) as client:
        notifier = DiscordWebhookNotifier(URL, client=client)
        await notifier.aclose()
        notifier.post("late")
        assert notifier.dropped == 1


def test_a_non_http_url_is_a_config_error() -> None:
    from agentkit.errors import ConfigError

    with pytest.raises(ConfigError, match="DISCORD_WEBHOOK_URL"):
        DiscordWebhookNotifier("discord.com/api/webhooks/1/x")
    with pytest.raises(ConfigError, match="DISCORD_WEBHOOK_URL"):
        DiscordWebhookNotifier.from_settings(Settings(discord_webhook_url=None))


async def test_a_real_agent_run_is_reported_through_tap_and_after_tool() -> None:
    import anthropic

    from agentkit import ToolBasedAgent
    from agentkit.testing import ScriptedAnthropicServer, reply
    from tests.adapter_toolsets import make_toolset

    script = [
        reply.text("Adding.") + reply.tool_use("add", {"a": 2, "b": 3}),
        reply.text("It is 5."),
        reply.tool_use("lookup", {"key": "missing"}),
        reply.text("Not found."),
    ]
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0)
        with respx.mock:
            respx.route(host="127.0.0.1").pass_through()  # the scripted model
            route = respx.post(URL).mock(return_value=httpx.Response(204))
            async with DiscordWebhookNotifier(URL) as notifier:
                agent = ToolBasedAgent(make_toolset(), client=client)
                async for _ in notifier.tap(agent.stream("add 2 and 3")):
                    pass
                hooked = ToolBasedAgent(
                    make_toolset(), client=client, after_tool=notifier.after_tool
                )
                await hooked.run("look up missing")
    texts = [text_of(b) for b in bodies(route)]
    assert "Run started" in texts[0]
    assert "add 2 and 3" in texts[0]
    assert "`add`" in texts[1]
    assert "Run finished" in texts[2]
    assert "It is 5." in texts[2]
    assert "`lookup`" in texts[3]
    assert "lookup failed" in texts[4]
    assert "no entry named 'missing'" in texts[4]
    assert len(texts) == 5


@respx.mock
async def test_agent_end_is_reported_once_per_agent_with_its_state() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    poll = ToolCall(id="p", name="get_claude_status", input={"container_id": CONTAINER})
    other = "claude-agent-1764240000001-zz9zz9"
    stop = ToolCall(id="s", name="stop_claude_agent", input={"container_id": other})
    timed = "claude-agent-1764240000002-tt1tt1"
    spent = "claude-agent-1764240000003-bb1bb1"
    results = [
        ToolResult("running", data=status(state="running")),  # not finished: nothing
        ToolResult("done", data=status(state="succeeded", result_text="Done.", cost_usd=0.5)),
        ToolResult("done", data=status(state="succeeded", result_text="Done.")),  # polled again
        ToolResult("stopped", data=status(id=other, state="stopped")),
        ToolResult("late", data=status(id=timed, state="timed_out", error="deadline passed")),
        ToolResult(
            "spent",
            data=status(
                id=spent, state="budget_exceeded", cost_usd=0.61, error="agentkit budget exceeded"
            ),
        ),
    ]
    calls = [poll, poll, poll, stop, poll, poll]
    async with DiscordWebhookNotifier(URL, tool_use=False) as notifier:
        for call, result in zip(calls, results, strict=True):
            notifier.notify(ToolResultEvent(call=call, result=result, duration=0.1, turn=1))
    texts = [text_of(b) for b in bodies(route)]
    assert len(texts) == 4
    assert "Agent finished" in texts[0]
    assert "$0.5000" in texts[0]
    assert "Agent stopped" in texts[1]
    assert other in texts[1]
    assert "Agent failed" in texts[2]
    assert "deadline passed" in texts[2]
    assert "budget exceeded" in texts[3]
    assert "budget_exceeded" in texts[3]
    assert "$0.6100" in texts[3]
