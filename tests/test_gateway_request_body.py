"""What the gateway reads in a request body before forwarding it (agentkit.gateway.request_body),
through the real server code in-process: a JSON value bomb is refused before it is parsed into
objects, server-side tools and URL sources are refused unless the operator allows them, and the
worst case reserved follows the content (not JSON whitespace; images and documents at their
worst case). The upstream is a small aiohttp app that records what reaches it and can hold its
answers (so a request stays in flight while another is admitted or refused)."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agentkit.gateway.pricing import PriceTable, TokenCounts
from agentkit.gateway.proxy import MAX_BODY
from agentkit.gateway.request_body import (
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    MAX_JSON_VALUES,
    BodyRefused,
    count_values,
    inspect,
)
from tests import test_gateway_e2e as e2e
from tests.gateway_support import local_gateway

gateway_image = e2e.gateway_image
gateway_cleanup = e2e.gateway_cleanup

BODY: dict[str, Any] = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-5-5",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 5},
}


class Upstream:
    """Records each request body; answers ``answer`` (or ``events`` as a stream) once
    ``release`` is set (set from the start unless ``hold``); ``arrived[i]`` is set when request
    ``i`` came in."""

    def __init__(
        self, *, hold: bool = False, answer: dict[str, Any] | None = None, events: Any = None
    ) -> None:
        self.bodies: list[bytes] = []
        self.arrived = [asyncio.Event() for _ in range(16)]
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.answer = answer or ANSWER
        self.events: list[dict[str, Any]] | None = events
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.arrived[len(self.bodies) - 1].set()
        await self.release.wait()
        if self.events is None:
            return web.json_response(self.answer)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in self.events:
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response


@asynccontextmanager
async def upstream_app(upstream: Upstream) -> AsyncIterator[Upstream]:
    app = web.Application(client_max_size=MAX_BODY + 1024)
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        upstream.release.set()
        await runner.cleanup()


async def post(
    http: aiohttp.ClientSession, url: str, token: str, body: bytes | dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        f"{url}/v1/messages",
        data=data,
        headers={"x-api-key": token, "content-type": "application/json"},
    ) as resp:
        return resp.status, await resp.json()


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


# --- F2: one body must not become an unbounded object tree ------------------------------------


def bomb(unit: bytes) -> bytes:
    """A body of just under MAX_BODY: ``unit`` repeated in the messages list."""
    head = b'{"model":"claude-sonnet-5-5","max_tokens":1,"messages":['
    count = (MAX_BODY - len(head) - 8) // (len(unit) + 1)
    return head + (unit + b",") * (count - 1) + unit + b"]}"


async def test_a_json_value_bomb_is_refused_with_a_400_and_bounded_memory(tmp_path: Path) -> None:
    async with (
        upstream_app(Upstream()) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("bomb")
        before = peak_rss_mb()
        for unit in (b"[]", b"{}", b"0.0", b'"ab"'):
            status, answer = await post(http, gw.url, token, bomb(unit))
            assert status == 400, (unit, answer)
            assert answer["error"]["type"] == "invalid_request_error"
            assert f"over {MAX_JSON_VALUES} JSON values" in answer["error"]["message"]
        # parsed, ~11 million lists alone are ~870 MB; refused unparsed, the bodies are the cost
        assert peak_rss_mb() - before < 300
        assert upstream.bodies == []
        # and the gateway still serves
        status, _ = await post(http, gw.url, token, BODY)
        assert status == 200


def test_values_are_counted_outside_strings_only() -> None:
    # commas, colons and brackets inside strings are text, not values
    text = json.dumps({"messages": [{"content": "a, b: [c] {d}" * 200_000}]}).encode()
    assert count_values(text, limit=100) <= 6
    nested = b'{"a":[1,2,{"b":"\\"x,"}]}'  # 7 marks outside the string, 8 in all
    assert count_values(nested, limit=7) == 8
    assert count_values(nested, limit=3) == 4  # past the limit, counting stops
    with pytest.raises(BodyRefused, match="JSON values"):
        inspect(b"[" + b"0," * MAX_JSON_VALUES + b"0]")
    with pytest.raises(BodyRefused, match="not valid JSON"):
        inspect(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BodyRefused, match="not a JSON object"):
        inspect(b"[1]")


#: bodies whose value count needs the exact scan (over MAX_JSON_VALUES marks in all), shaped to
#: make a backtracking string pattern retry from every quote: quadratic before (20k escaped
#: quotes did not finish in 2 minutes); the per-test timeout is the failure mode
SCAN_ADVERSARIAL = {
    "escaped quotes, never closed": b'{"a":"' + b'\\"' * 4_000_000 + b"," * 1_100_000,
    "backslash runs": b'{"a":"' + b"\\" * 4_000_001 + b"," * 1_100_000,
    "lone quotes": b'"' + b'\\",' * 2_000_000,
    "quotes and marks": b'",' * 4_000_000,
    "adjacent strings": b'{"a":[' + b'"x"' * 10_000_000 + b"," * 1_100_000 + b"]}",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(SCAN_ADVERSARIAL))
def test_the_value_scan_is_linear_on_adversarial_strings(name: str) -> None:
    body = SCAN_ADVERSARIAL[name]
    assert len(body) > MAX_JSON_VALUES
    with pytest.raises(BodyRefused):
        inspect(body)


# --- F7: nothing that makes the model API fetch for the agent, unless the operator allows it ---

REFUSED: dict[str, dict[str, Any]] = {
    "web_fetch": {"tools": [{"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 5}]},
    "web_search": {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    "code_execution": {"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]},
    "mcp_toolset": {"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}]},
    "unknown_type": {"tools": [{"type": "some_future_tool_20300101", "name": "f"}]},
    "mcp_servers": {
        "mcp_servers": [{"type": "url", "url": "https://attacker.example/mcp?d=S", "name": "x"}]
    },
    "image_url": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "url", "url": "https://a.example/?d=S"}},
                ],
            }
        ]
    },
    "document_url": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "url", "url": "https://a.example/x.pdf"},
                            }
                        ],
                    }
                ],
            }
        ]
    },
}
CLIENT_TOOLS = [
    {"name": "Read", "description": "read", "input_schema": {"type": "object"}},
    {"type": "custom", "name": "Mine", "input_schema": {"type": "object"}},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    {"type": "memory_20250818", "name": "memory"},
]


async def test_server_side_tools_and_url_sources_are_refused_by_default(tmp_path: Path) -> None:
    async with (
        upstream_app(Upstream()) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("exfil")
        for name, extra in REFUSED.items():
            status, answer = await post(http, gw.url, token, {**BODY, **extra})
            assert status == 400, (name, answer)
            message = answer["error"]["message"]
            assert "egress allowlist" in message
            assert "AGENTKIT_GATEWAY_SERVER_TOOLS" in message
        assert upstream.bodies == []  # none reached the model API
        # client-side tools (the agent runs them) pass
        status, _ = await post(http, gw.url, token, {**BODY, "tools": CLIENT_TOOLS})
        assert status == 200
        assert json.loads(upstream.bodies[0])["tools"] == CLIENT_TOOLS


async def test_the_operator_can_allow_server_side_tools(tmp_path: Path) -> None:
    async with (
        upstream_app(Upstream()) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, server_tools=True) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("allowed")
        for name, extra in REFUSED.items():
            status, answer = await post(http, gw.url, token, {**BODY, **extra})
            assert status == 200, (name, answer)
        assert len(upstream.bodies) == len(REFUSED)


@pytest.mark.slow
async def test_a_real_claude_code_run_passes_the_body_checks(tmp_path: Path) -> None:
    """Claude Code's own requests (tools, thinking, context management, a tool result) are
    forwarded under the default policy, and each is estimated within bounds."""
    from agentkit.testing import ScriptedAnthropicServer, scripts
    from tests.test_agent_claude_code import claude_bin, cli_env, run_claude

    binary = claude_bin()
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home, tmp_path / "gw"):
        folder.mkdir()
    target = work / "hello.txt"
    script = scripts.write_file(str(target), "through the gateway\n", final_text="Wrote it.")
    async with (
        ScriptedAnthropicServer(script) as server,
        local_gateway(tmp_path / "gw", upstream_url=server.url) as gw,
    ):
        token = await gw.run("claude-code")
        code, events, stderr = await run_claude(
            binary, work, cli_env(gw.url, home, ANTHROPIC_API_KEY=token), "write hello.txt"
        )
        assert code == 0, stderr
        assert target.read_text() == "through the gateway\n"
        assert events[-1]["result"] == "Wrote it."
        assert len(script.main_requests) == 2
        for request in server.message_requests:
            wanted = inspect(json.dumps(request.body).encode())  # raises if it were refused
            assert 0 < wanted.input_tokens < 100_000
        live = (await gw.client.runs(["claude-code"]))["claude-code"]
        assert live["requests"] == len(server.message_requests)


# --- F6: the worst case follows the content; metering prices every kind of usage --------------


async def second_request_status(tmp_path: Path, body: bytes | dict[str, Any], budget: float) -> int:
    """The status of ``body`` sent while a small request of the same run (budget ``budget``)
    is held in flight, so that ``body`` must fit its worst case in what is left."""
    tmp_path.mkdir(exist_ok=True)
    async with (
        upstream_app(Upstream(hold=True)) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("second", max_cost_usd=budget)
        first = asyncio.create_task(post(http, gw.url, token, BODY))
        await upstream.arrived[0].wait()
        second = asyncio.create_task(post(http, gw.url, token, body))
        arrived = asyncio.create_task(upstream.arrived[1].wait())
        await asyncio.wait({second, arrived}, return_when=asyncio.FIRST_COMPLETED)
        arrived.cancel()
        upstream.release.set()
        assert (await first)[0] == 200
        return (await second)[0]


async def test_json_whitespace_is_not_reserved_as_input(tmp_path: Path) -> None:
    # 1.5 MB of spaces between the JSON tokens: was reserved as 500k input tokens ($1.50 of
    # sonnet) and refused next to any other request under a $0.50 budget; the API bills none
    padded = json.dumps(BODY).encode()
    padded = padded[:1] + b" " * 1_500_000 + padded[1:]
    assert await second_request_status(tmp_path, padded, budget=0.5) == 200


def with_blocks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **BODY,
        "messages": [{"role": "user", "content": [*blocks, {"type": "text", "text": "?"}]}],
    }


PDF = base64.b64encode(b"%PDF-1.7\n" + b"0" * 300).decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 100).decode()


async def test_a_document_is_reserved_at_its_page_cap_worst_case(tmp_path: Path) -> None:
    # a few hundred bytes of PDF can bill 100 pages x ~3k tokens; was reserved as ~200 tokens
    doc = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
    }
    body = with_blocks([doc])
    assert inspect(json.dumps(body).encode()).input_tokens >= DOCUMENT_TOKENS
    assert await second_request_status(tmp_path, body, budget=0.5) == 429


async def test_images_are_reserved_at_their_worst_case(tmp_path: Path) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = with_blocks([image] * 40)  # 40 x 5,000 tokens: $0.60 of sonnet, ~6 KB of body
    assert inspect(json.dumps(body).encode()).input_tokens >= 40 * IMAGE_TOKENS
    assert await second_request_status(tmp_path / "a", body, budget=0.5) == 429
    assert await second_request_status(tmp_path / "b", with_blocks([image] * 2), budget=0.5) == 200


async def test_one_hour_cache_writes_and_web_searches_are_metered_at_their_prices(
    tmp_path: Path,
) -> None:
    start = {
        "type": "message_start",
        "message": {
            "model": "claude-sonnet-5-5",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 1,
                "cache_creation_input_tokens": 300_000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 100_000,
                    "ephemeral_1h_input_tokens": 200_000,
                },
            },
        },
    }
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 20, "server_tool_use": {"web_search_requests": 3}},
    }
    events = [start, end, {"type": "message_stop"}]
    async with (
        upstream_app(Upstream(events=events)) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, server_tools=True) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("cached")
        search = {"tools": [{"type": "web_search_20250305", "name": "web_search"}], "stream": True}
        async with http.post(
            f"{gw.url}/v1/messages", json={**BODY, **search}, headers={"x-api-key": token}
        ) as resp:
            assert resp.status == 200
            await resp.read()
        await gw.client.end("cached")
        cost = (await gw.client.runs(["cached"]))["cached"]["cost_usd"]
    # sonnet: $3 input, $15 output, 5m writes $3.75, 1h writes $6 per million; $0.01 a search
    expected = (10 * 3 + 20 * 15 + 100_000 * 3.75 + 200_000 * 6) / 1e6 + 3 * 0.01
    assert cost == pytest.approx(expected)
    assert PriceTable().cost(
        "claude-sonnet-5-5", TokenCounts(cache_creation_input_tokens=300_000)
    ) == pytest.approx(1.125)


BOMBS = r"""
import json, os, socket, sys, threading
host = os.environ["ANTHROPIC_BASE_URL"].split("//", 1)[1].rstrip("/")
name, port = host.rsplit(":", 1)
token = os.environ["ANTHROPIC_API_KEY"]
head = b'{"model":"claude-sonnet-5-5","max_tokens":1,"messages":['
answers = {}
def post(i, unit):
    n = (32 * 1024 * 1024 - 200) // (len(unit) + 1)
    body = head + (unit + b",") * (n - 1) + unit + b"]}"
    s = socket.create_connection((name, int(port)))
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
              + b"x-api-key: " + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    s.sendall(body)
    answers[i] = s.recv(200).split(b"\r\n", 1)[0].decode()
units = [[b"[]", b"{}"], [b"0.0", b'"ab"']][int(sys.argv[1]) % 2]  # 2 per run: its 64 MiB share
threads = [threading.Thread(target=post, args=(i, u)) for i, u in enumerate(units)]
[t.start() for t in threads]
[t.join() for t in threads]
print("ANSWERS", json.dumps(sorted(answers.values())))
"""


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.slow
@pytest.mark.usefixtures("gateway_cleanup")
async def test_eight_concurrent_value_bombs_leave_the_gateway_container_up(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    """In the real container (its memory limit): 8 bodies of 32 MiB at once from 4 agents (2 each,
    a run's share of body bytes), the pool the gateway reads at a time, each a value bomb.
    Before, one of them OOM-killed it."""
    from agentkit.containers.service import AgentService
    from agentkit.executors.local import LocalExecutor
    from agentkit.gateway.host import gateway_names
    from tests.test_gateway_e2e import _exec, _inspect, _settings

    settings = _settings(tmp_path / "root", agent_image, anthropic_api_key="sk-ant-unused")
    gw_name, _, _ = gateway_names(settings.root)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        spawned = [
            await agents.spawn("bombs", f"bombs{i}", 300_000, entrypoint=["sleep", "300"])
            for i in range(4)
        ]
        started = (await _inspect(gw_name))["State"]["StartedAt"]
        outs = await asyncio.gather(
            *(
                _exec(agent.id, ["python3", "-c", BOMBS, str(i)], user="1001")
                for i, agent in enumerate(spawned)
            )
        )
        answers = [a for out in outs for a in json.loads(out.split("ANSWERS", 1)[1])]
        assert answers == ["HTTP/1.1 400 Bad Request"] * 8, outs
        peak = await _exec(  # cgroup v2, else v1: printed as a measurement
            gw_name,
            [
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory.peak 2>/dev/null"
                " || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes",
            ],
        )
        print(f"gateway memory peak: {peak.strip()} bytes")
        state = (await _inspect(gw_name))["State"]
        assert state["StartedAt"] == started  # never restarted
        assert not state["OOMKilled"]


@pytest.mark.slow
async def test_claude_codes_web_search_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    """Claude Code's WebSearch tool sends its own request with the ``web_search`` server tool:
    under the default policy the gateway refuses it (it never reaches the model API), Claude
    Code gets the refusal as the tool's result, and the run carries on."""
    from agentkit.testing import ScriptedAnthropicServer, reply, scripts
    from tests.test_agent_claude_code import claude_bin, cli_env, run_claude

    binary = claude_bin()
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home, tmp_path / "gw"):
        folder.mkdir()
    script = scripts.ClaudeCodeScript(
        [reply.tool_use("WebSearch", {"query": "agentkit gateway"}), reply.text("No search.")],
        side_reply=reply.text("side"),
    )
    async with (
        ScriptedAnthropicServer(script) as server,
        local_gateway(tmp_path / "gw", upstream_url=server.url) as gw,
    ):
        token = await gw.run("search")
        code, events, stderr = await run_claude(
            binary, work, cli_env(gw.url, home, ANTHROPIC_API_KEY=token), "search the web"
        )
    assert code == 0, stderr
    assert events[-1]["result"] == "No search."
    for request in server.message_requests:
        assert "web_search" not in json.dumps(request.body.get("tools", []))
    results = [
        block
        for e in events
        if e["type"] == "user"
        for block in e["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    (result,) = results
    assert result["is_error"] is True
    assert "server-side tool 'web_search_20250305' is refused" in result["content"]
    assert "AGENTKIT_GATEWAY_SERVER_TOOLS=true" in result["content"]
