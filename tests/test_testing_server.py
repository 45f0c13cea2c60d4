"""The scripted Anthropic server (agentkit.testing): wire format, recording, routing, threads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from agentkit.testing import RecordedRequest, ScriptedAnthropicServer, reply, scripts

BODY: dict[str, Any] = {
    "model": "claude-test",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_sse_sequence_is_the_api_s_exact_order() -> None:
    script = [reply.text("Hello there!") + reply.tool_use("lookup", {"q": "x"}, id="toolu_1")]
    async with ScriptedAnthropicServer(script) as server, httpx.AsyncClient() as http:
        resp = await http.post(f"{server.url}/v1/messages?beta=true", json={**BODY, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        assert data["type"] == name
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["model"] == "claude-test"
    assert start["role"] == "assistant"
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Hello there!"}
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "lookup",
        "input": {},
    }
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"q": "x"}'}
    delta = events[8][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 5


async def test_text_and_tool_input_are_chunked() -> None:
    long_text = "abcdefghij" * 10
    script = [(reply.text(long_text) + reply.tool_use("t", {"k": "v" * 50})).streamed(7)]
    async with ScriptedAnthropicServer(script) as server, httpx.AsyncClient() as http:
        resp = await http.post(f"{server.url}/v1/messages", json={**BODY, "stream": True})
    deltas = [d["delta"] for n, d in sse_events(resp.text) if n == "content_block_delta"]
    texts = [d["text"] for d in deltas if d["type"] == "text_delta"]
    parts = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert len(texts) == 15
    assert "".join(texts) == long_text
    assert len(parts) > 1
    assert json.loads("".join(parts)) == {"k": "v" * 50}


async def test_plain_json_with_the_sdk_and_usage_fields() -> None:
    usage = reply.usage(
        input_tokens=3, output_tokens=4, cache_creation_input_tokens=5, cache_read_input_tokens=6
    )
    async with ScriptedAnthropicServer([reply.text("plain", usage=usage)]) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
        message = await client.messages.create(**BODY)
    assert message.content[0].type == "text"
    assert message.content[0].text == "plain"
    assert message.stop_reason == "end_turn"
    assert (
        message.usage.input_tokens,
        message.usage.output_tokens,
        message.usage.cache_creation_input_tokens,
        message.usage.cache_read_input_tokens,
    ) == (3, 4, 5, 6)
    assert server.message_requests[0].stream is False


async def test_sdk_stream_accumulates_the_scripted_message() -> None:
    script = [reply.text("one two") + reply.tool_use("calc", {"a": [1, 2], "b": {"c": None}})]
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
        async with client.messages.stream(**BODY) as stream:
            deltas = [e.text async for e in stream if e.type == "text"]
            final = await stream.get_final_message()
    assert "".join(deltas) == "one two"
    assert final.stop_reason == "tool_use"
    tool_block = final.content[1]
    assert tool_block.type == "tool_use"
    assert tool_block.input == {"a": [1, 2], "b": {"c": None}}
    assert tool_block.id.startswith("toolu_")


async def test_head_get_root_count_tokens_and_404() -> None:
    async with ScriptedAnthropicServer() as server, httpx.AsyncClient() as http:
        assert (await http.head(f"{server.url}/")).status_code == 200
        assert (await http.get(f"{server.url}/")).status_code == 200
        count = await http.post(f"{server.url}/v1/messages/count_tokens", json=BODY)
        missing = await http.get(f"{server.url}/v1/models")
    assert count.status_code == 200
    assert count.json()["input_tokens"] > 0
    assert missing.status_code == 404
    body = missing.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "/v1/models" in body["error"]["message"]
    assert [r.path for r in server.requests] == [
        "/",
        "/",
        "/v1/messages/count_tokens",
        "/v1/models",
    ]


async def test_records_requests_and_redacts_keys() -> None:
    async with ScriptedAnthropicServer([reply.text("a")]) as server, httpx.AsyncClient() as http:
        await http.post(
            f"{server.url}/v1/messages?beta=true",
            json=BODY,
            headers={"x-api-key": "sk-ant-very-secret", "authorization": "Bearer sk-x"},
        )
    (recorded,) = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/messages"
    assert recorded.query == {"beta": "true"}
    assert recorded.headers["x-api-key"] == "[REDACTED]"
    assert recorded.headers["authorization"] == "[REDACTED]"
    assert "sk-ant-very-secret" not in json.dumps(recorded.headers)
    assert recorded.body == BODY
    assert recorded.last_user_text() == "hi"


async def test_handler_sync_and_async_with_script_fallback() -> None:
    seen: list[str] = []

    def route(request: RecordedRequest) -> reply.Reply | None:
        seen.append(request.last_user_text())
        return reply.text("routed") if request.last_user_text() == "route me" else None

    async def async_route(request: RecordedRequest) -> reply.Reply:
        await asyncio.sleep(0)
        return reply.text(f"echo {request.last_user_text()}")

    async with ScriptedAnthropicServer([reply.text("scripted")], handler=route) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        first = await client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "route me"}]
        )
        second = await client.messages.create(**BODY)
    assert [first.content[0].text, second.content[0].text] == ["routed", "scripted"]  # type: ignore[union-attr]
    assert seen == ["route me", "hi"]
    server.check()

    async with ScriptedAnthropicServer(async_route) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        answer = await client.messages.create(**BODY)
    assert answer.content[0].text == "echo hi"  # type: ignore[union-attr]


async def test_exhausted_script_is_a_clear_non_retried_error_and_default_applies() -> None:
    async with ScriptedAnthropicServer([]) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=3)
        with pytest.raises(anthropic.BadRequestError, match="no reply left"):
            await client.messages.create(**BODY)
    assert len(server.message_requests) == 1  # a 400: the SDK did not retry
    with pytest.raises(AssertionError, match="no reply left"):
        server.check()

    async with ScriptedAnthropicServer([], default=reply.text("fallback")) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        for _ in range(2):
            message = await client.messages.create(**BODY)
            assert message.content[0].text == "fallback"  # type: ignore[union-attr]


async def test_error_replies_use_the_anthropic_format_and_retry_headers() -> None:
    server = ScriptedAnthropicServer([reply.error(429, "slow down")])
    async with server, httpx.AsyncClient() as http:
        resp = await http.post(f"{server.url}/v1/messages", json=BODY)
    assert resp.status_code == 429
    assert resp.json()["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert resp.headers["retry-after-ms"] == "1"
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["request-id"].startswith("req_")

    script = [reply.error(529), reply.error(500), reply.text("finally")]
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=2)
        message = await client.messages.create(**BODY)
    assert message.content[0].text == "finally"  # type: ignore[union-attr]
    assert [r.headers["x-stainless-retry-count"] for r in server.message_requests] == [
        "0",
        "1",
        "2",
    ]

    async with ScriptedAnthropicServer([reply.error(529)]) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(**BODY)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_delay_and_chunk_delay() -> None:
    script = [reply.delay(0.2, reply.text("late")), reply.text("x" * 30).streamed(10, 0.02)]
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        started = time.perf_counter()
        await client.messages.create(**BODY)
        assert time.perf_counter() - started >= 0.2
        arrivals = []
        async with client.messages.stream(**BODY) as stream:
            async for event in stream:
                if event.type == "text":
                    arrivals.append(time.perf_counter())
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.03  # deltas arrived live, not at once


def test_start_in_thread_for_sync_callers() -> None:
    server = ScriptedAnthropicServer([reply.text("from a thread")])
    with server.start_in_thread() as running:
        assert running.port > 0
        client = anthropic.Anthropic(base_url=running.url, api_key="t", max_retries=0)
        message = client.messages.create(**BODY)
    assert message.content[0].text == "from a thread"  # type: ignore[union-attr]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/", timeout=2)


async def test_bind_all_interfaces_exposes_url_and_port() -> None:
    async with ScriptedAnthropicServer([reply.text("x")], host="0.0.0.0") as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.url_for("172.17.0.1") == f"http://172.17.0.1:{server.port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url)).status_code == 200


async def test_claude_code_script_routes_side_requests() -> None:
    script = scripts.write_file("/tmp/x.txt", "data", final_text="Wrote it.")
    tools = [{"name": "Write", "description": "w", "input_schema": {"type": "object"}}]
    async with ScriptedAnthropicServer(script) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
        side = await client.messages.create(**BODY)  # no tools: a side request (title, quota)
        first = await client.messages.create(**BODY, tools=tools)  # type: ignore[arg-type]
        side2 = await client.messages.create(**BODY)
        second = await client.messages.create(**BODY, tools=tools)  # type: ignore[arg-type]
    assert side.content[0].text == side2.content[0].text == "ok"  # type: ignore[union-attr]
    assert first.content[0].type == "tool_use"
    assert first.content[0].name == "Write"
    assert first.content[0].input == {"file_path": "/tmp/x.txt", "content": "data"}
    assert second.content[0].text == "Wrote it."  # type: ignore[union-attr]
    assert script.remaining == 0
    assert (len(script.main_requests), len(script.side_requests)) == (2, 2)


def test_module_entry_serves_a_json_script(tmp_path: Path) -> None:
    script_file = tmp_path / "script.json"
    script_file.write_text(
        json.dumps(
            {
                "replies": [
                    {"tool_use": {"name": "Write", "input": {"file_path": "/a", "content": "b"}}},
                    {"text": "done", "usage": {"input_tokens": 7}},
                ]
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentkit.testing", str(script_file), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=url, api_key="t", max_retries=0)
        first = client.messages.create(**BODY)
        second = client.messages.create(**BODY)
    finally:
        proc.terminate()
        proc.wait(10)
    assert first.stop_reason == "tool_use"
    assert first.content[0].name == "Write"
    assert second.content[0].text == "done"
    assert second.usage.input_tokens == 7


async def test_stream_error_event_midway() -> None:
    script = [reply.stream_error("overloaded_error", partial_text="abc"), reply.stream_error()]
    async with ScriptedAnthropicServer(script) as server, httpx.AsyncClient() as http:
        streamed = await http.post(f"{server.url}/v1/messages", json={**BODY, "stream": True})
        plain = await http.post(f"{server.url}/v1/messages", json=BODY)
    names = [name for name, _ in sse_events(streamed.text)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "error"]
    assert sse_events(streamed.text)[-1][1]["error"]["type"] == "overloaded_error"
    assert plain.status_code == 529
    assert plain.json()["error"]["type"] == "overloaded_error"
