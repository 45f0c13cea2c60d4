"""The gateway's server code in-process (no container): tokens, forwarding, SSE, metering,
budgets, the ledger across a restart. The upstream is the scripted Anthropic server, or a tiny
aiohttp app where the test must see the credential the gateway sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import yarl
from aiohttp import web

from agentkit.gateway.budgets import MAX_IN_FLIGHT_PER_RUN
from agentkit.gateway.ledger import Ledger
from agentkit.gateway.peers import MAX_CONNECTIONS_PER_PEER
from agentkit.gateway.pricing import PriceTable, TokenCounts
from agentkit.gateway.proxy import MAX_BODY
from agentkit.testing import ScriptedAnthropicServer, reply
from tests.gateway_support import local_gateway

BODY: dict[str, Any] = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
USAGE = {
    "input_tokens": 1234,
    "output_tokens": 56,
    "cache_read_input_tokens": 7000,
    "cache_creation_input_tokens": 890,
}


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    """The events' data, without the message object (its id is made up per answer)."""
    return [
        {k: v for k, v in json.loads(line[6:]).items() if k != "message"}
        for line in raw.decode().splitlines()
        if line.startswith("data: ")
    ]


def ledger_rows(folder: Path) -> list[Any]:
    ledger = Ledger(str(folder / "state" / "ledger.sqlite"))
    try:
        return ledger.usage()
    finally:
        ledger.close()


async def test_streams_through_unchanged_and_meters_every_token_kind(tmp_path: Path) -> None:
    answer = reply.text("Hello from upstream, streamed in pieces.", usage=reply.usage(**USAGE))
    async with (
        ScriptedAnthropicServer([answer.streamed(chunk_size=5)]) as server,
        local_gateway(tmp_path, upstream_url=server.url, api_key="sk-real") as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-a")
        direct = await http.post(
            f"{server.url}/v1/messages?beta=true",
            json={**BODY, "stream": True},
        )
        server.add(answer.streamed(chunk_size=5))
        raw_direct = await direct.read()
        via = await http.post(
            f"{gw.url}/v1/messages?beta=true",
            json={**BODY, "stream": True},
            headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
        )
        raw_via = await via.read()
        assert via.status == 200
        assert via.headers["content-type"].startswith("text/event-stream")
        # the same bytes, except the ids the server makes up per answer
        assert sse_data(raw_via) == sse_data(raw_direct)
        assert server.requests[-1].query == {"beta": "true"}
        summary = (await gw.client.runs(["run-a"]))["run-a"]
    expected = TokenCounts(**USAGE)
    assert {k: summary[k] for k in USAGE} == USAGE
    assert summary["requests"] == 1
    assert summary["cost_usd"] == pytest.approx(PriceTable().cost("claude-sonnet-5-5", expected))
    (row,) = ledger_rows(tmp_path)
    assert row.tokens == expected
    assert row.run_id == "run-a"
    assert row.workspace == "/ws/run-a"
    assert row.model == "claude-sonnet-5-5"


async def test_real_key_goes_upstream_and_never_back(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-api-key"))
        assert "authorization" not in request.headers
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 2},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with local_gateway(
            tmp_path, upstream_url=f"http://127.0.0.1:{port}", api_key="sk-ant-real-key-123"
        ) as gw:
            token = await gw.run("run-k")
            client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=token, max_retries=0)
            message = await client.messages.create(**BODY)
            assert message.content[0].text == "ok"  # type: ignore[union-attr]
            with pytest.raises(anthropic.AuthenticationError) as refused:
                await anthropic.AsyncAnthropic(
                    base_url=gw.url, api_key="sk-guessed", max_retries=0
                ).messages.create(**BODY)
            assert "sk-ant-real-key-123" not in str(refused.value.body)
    finally:
        await runner.cleanup()
    assert len(seen) == 1  # the refused request never went upstream
    assert seen == ["sk-ant-real-key-123"]


async def test_bearer_credential_when_there_is_no_key(tmp_path: Path) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append((request.headers.get("authorization"), request.headers.get("x-api-key")))
        return web.json_response({"type": "message", "usage": {"input_tokens": 1}})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            local_gateway(
                tmp_path, upstream_url=f"http://127.0.0.1:{port}", auth_token="oauth-real-456"
            ) as gw,
            aiohttp.ClientSession() as http,
        ):
            token = await gw.run("run-t")
            resp = await http.post(f"{gw.url}/v1/messages", json=BODY, headers={"x-api-key": token})
            assert resp.status == 200
    finally:
        await runner.cleanup()
    assert seen == [("Bearer oauth-real-456", None)]  # the agent's token never travels upstream


async def test_token_dies_when_its_run_ends(tmp_path: Path) -> None:
    async with (
        ScriptedAnthropicServer(default=reply.text("ok")) as server,
        local_gateway(tmp_path, upstream_url=server.url) as gw,
    ):
        token = await gw.run("run-end")
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=token, max_retries=0)
        await client.messages.create(**BODY)
        ended = await gw.client.end("run-end")
        assert ended is not None
        assert ended["ended_at"] is not None
        assert ended["requests"] == 1
        before = len(server.requests)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await client.messages.create(**BODY)
        assert "ended" in str(refused.value)
        assert len(server.requests) == before


async def test_run_budget_refuses_before_any_upstream_call(tmp_path: Path) -> None:
    # 1M input tokens of sonnet cost $3: the first answer spends the whole $1 budget
    big = reply.text("expensive", usage=reply.usage(input_tokens=1_000_000, output_tokens=10))
    async with (
        ScriptedAnthropicServer(default=big) as server,
        local_gateway(tmp_path, upstream_url=server.url, api_key="k") as gw,
    ):
        token = await gw.run("run-b", max_cost_usd=1.0)
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=token, max_retries=0)
        await client.messages.create(**BODY)
        assert len(server.message_requests) == 1
        for _ in range(3):
            with pytest.raises(anthropic.PermissionDeniedError) as refused:
                await client.messages.create(**BODY)
            assert "budget exceeded" in str(refused.value)
            assert refused.value.response.headers["x-should-retry"] == "false"
        assert len(server.message_requests) == 1  # nothing went upstream after the limit
        summary = (await gw.client.runs(["run-b"]))["run-b"]
        other = await gw.run("run-c", max_cost_usd=1.0)  # another run still works
        await anthropic.AsyncAnthropic(base_url=gw.url, api_key=other).messages.create(**BODY)
    assert summary["budget_exceeded"] is True
    assert "max_cost_usd" in summary["budget_reason"]
    assert summary["requests"] == 1
    assert summary["cost_usd"] == pytest.approx(3.0 + 10 * 15 / 1e6)


async def test_fleet_daily_budget_counts_every_run_and_the_controller(tmp_path: Path) -> None:
    answer = reply.text("x", usage=reply.usage(input_tokens=100_000, output_tokens=0))  # $0.30
    async with (
        ScriptedAnthropicServer(default=answer) as server,
        local_gateway(tmp_path, upstream_url=server.url, fleet_daily_usd=0.5) as gw,
    ):
        one = anthropic.AsyncAnthropic(base_url=gw.url, api_key=await gw.run("r1"), max_retries=0)
        two = anthropic.AsyncAnthropic(base_url=gw.url, api_key=await gw.run("r2"), max_retries=0)
        await one.messages.create(**BODY)
        # the outer agent's own usage counts towards the same fleet budget
        cost = await gw.client.record_usage(
            model="claude-sonnet-5-5", input_tokens=100_000, output_tokens=0
        )
        assert cost == pytest.approx(0.3)
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await two.messages.create(**BODY)
        assert "AGENTKIT_DAILY_BUDGET_USD" in str(refused.value)
        assert len(server.message_requests) == 1


async def test_ledger_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    answer = reply.text("ok", usage=reply.usage(input_tokens=10, output_tokens=5))
    async with ScriptedAnthropicServer(default=answer) as server:
        async with local_gateway(tmp_path, upstream_url=server.url) as gw:
            token = await gw.run("run-r")
            client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=token, max_retries=0)
            for _ in range(3):
                await client.messages.create(**BODY)
            port = gw.port
        # the same state folder and port: a restarted gateway
        async with local_gateway(tmp_path, upstream_url=server.url, api_port=port) as gw2:
            assert gw2.url == f"http://127.0.0.1:{port}"
            summary = (await gw2.client.runs(["run-r"]))["run-r"]
            assert summary["requests"] == 3
            again = anthropic.AsyncAnthropic(base_url=gw2.url, api_key=token, max_retries=0)
            await again.messages.create(**BODY)
            summary = (await gw2.client.runs(["run-r"]))["run-r"]
    assert summary["requests"] == 4
    assert summary["input_tokens"] == 40
    assert len(ledger_rows(tmp_path)) == 4


async def test_client_hanging_up_mid_stream_is_charged_the_full_usage(tmp_path: Path) -> None:
    full = reply.usage(
        input_tokens=77,
        output_tokens=99,
        cache_read_input_tokens=500,
        cache_creation_input_tokens=3,
    )
    slow = reply.text("x" * 400, usage=full).streamed(chunk_size=10, chunk_delay=0.05)
    async with (
        ScriptedAnthropicServer([slow]) as server,
        local_gateway(tmp_path, upstream_url=server.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-h")
        resp = await http.post(
            f"{gw.url}/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": token}
        )
        first = await resp.content.readany()
        assert b"message_start" in first
        resp.close()  # hang up after the first bytes
        summary: dict[str, Any] = {}
        async with asyncio.timeout(30):  # metered once the server's answer has ended
            while not summary.get("requests"):
                summary = (await gw.client.runs(["run-h"]))["run-h"]
                await asyncio.sleep(0.05)  # polling the ledger's state, bounded by the timeout
    assert summary["requests"] == 1
    # the answer went on after the hang-up: the gateway read it to its end and metered what the
    # server reported at the end, not the one output token message_start announced
    (row,) = ledger_rows(tmp_path)
    assert row.tokens == TokenCounts.from_mapping(full)
    assert row.note == "agent hung up: read to the end"
    assert summary["output_tokens"] == 99


class HeldUpstream:
    """An upstream that answers nothing until :attr:`release` is set; counts what arrives."""

    def __init__(self, *, stream: bool = False) -> None:
        self.stream = stream
        self.arrived: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.changed = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrived.append((request.method, request.rel_url.raw_path_qs))
        self.changed.set()
        await request.read()
        await self.release.wait()
        if self.stream:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            start = {
                "type": "message_start",
                "message": {"model": "claude-sonnet-5-5", "usage": {"input_tokens": 77}},
            }
            delta = {"type": "message_delta", "usage": {"output_tokens": 99}}
            for event in (start, delta, {"type": "message_stop"}):
                await response.write(
                    f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                )
            await response.write_eof()
            return response
        return web.json_response(
            {
                "type": "message",
                "model": "claude-sonnet-5-5",
                "usage": {"input_tokens": 10, "output_tokens": 10},
            }
        )

    async def __aenter__(self) -> HeldUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()


async def _settle(upstream: HeldUpstream, tasks: list[asyncio.Task[int]], total: int) -> list[int]:
    """Wait until every request either reached the held upstream or was answered."""
    async with asyncio.timeout(30):
        while len(upstream.arrived) + sum(t.done() for t in tasks) < total:
            upstream.changed.clear()
            waiters = [t for t in tasks if not t.done()]
            await asyncio.wait(
                [*waiters, asyncio.ensure_future(upstream.changed.wait())],
                return_when="FIRST_COMPLETED",
            )
    return [t.result() for t in tasks if t.done()]


async def test_concurrent_requests_cannot_spend_past_the_fleet_budget(tmp_path: Path) -> None:
    # each request may cost up to 10_000 output tokens of sonnet = $0.15 (+ a little input):
    # $0.50 of fleet budget holds three of them, whatever arrives at the same time
    body = {**BODY, "max_tokens": 10_000}
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, fleet_daily_usd=0.5) as gw,
        aiohttp.ClientSession() as http,
    ):
        tokens = [await gw.run(f"c{i}") for i in range(8)]

        async def call(token: str) -> int:
            resp = await http.post(f"{gw.url}/v1/messages", json=body, headers={"x-api-key": token})
            await resp.read()
            return resp.status

        tasks = [asyncio.create_task(call(t)) for t in tokens]
        answered = await _settle(upstream, tasks, len(tasks))
        assert len(upstream.arrived) == 3
        assert sorted(answered) == [429] * 5
        upstream.release.set()
        statuses = await asyncio.gather(*tasks)
    assert sorted(statuses) == [200] * 3 + [429] * 5


async def test_one_run_has_a_bounded_number_of_requests_in_flight(tmp_path: Path) -> None:
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-many")

        async def call() -> int:
            resp = await http.post(f"{gw.url}/v1/messages", json=BODY, headers={"x-api-key": token})
            await resp.read()
            return resp.status

        tasks = [asyncio.create_task(call()) for _ in range(10)]
        answered = await _settle(upstream, tasks, len(tasks))
        assert len(upstream.arrived) == MAX_IN_FLIGHT_PER_RUN
        assert answered == [429] * (10 - MAX_IN_FLIGHT_PER_RUN)
        upstream.release.set()
        await asyncio.gather(*tasks)
        # the slots are free again once the answers are in
        assert await call() == 200


async def test_only_the_model_api_routes_reach_the_upstream(tmp_path: Path) -> None:
    refused = [
        ("POST", "/v1/messages/batches"),
        ("DELETE", "/v1/files/file_1"),
        ("GET", "/v1/files"),
        ("POST", "/v1/organizations/api_keys"),
        ("GET", "/v1/messages"),
        ("PUT", "/v1/messages"),
        ("POST", "/v1/messages?beta=true&cursor=x"),
        ("POST", "/v1/messages?beta=true&beta=true"),
        ("POST", "/v1//messages"),
        ("POST", "/v1/messages/"),
        ("POST", "/v1/x/../messages/batches"),
        ("POST", "/v1/messages?beta=a%20b"),
    ]
    allowed = [
        ("POST", "/v1/messages?beta=true"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens?beta=true"),
        ("GET", "/v1/models?limit=20"),
    ]
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, api_key="sk-real") as gw,
        aiohttp.ClientSession() as http,
    ):
        upstream.release.set()
        token = await gw.run("run-routes")
        for method, target in refused:
            url = yarl.URL(f"{gw.url}{target}", encoded=True)
            resp = await http.request(method, url, json=BODY, headers={"x-api-key": token})
            assert resp.status == 404, (method, target)
            assert (await resp.json())["error"]["type"] == "not_found_error"
        assert upstream.arrived == []
        for method, target in allowed:
            url = yarl.URL(f"{gw.url}{target}", encoded=True)
            resp = await http.request(method, url, json=BODY, headers={"x-api-key": token})
            assert resp.status == 200, (method, target)
    assert upstream.arrived == allowed


async def test_client_gone_before_the_answer_headers_is_still_metered(tmp_path: Path) -> None:
    async with (
        HeldUpstream(stream=True) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-gone")
        call = asyncio.create_task(
            http.post(
                f"{gw.url}/v1/messages",
                json={**BODY, "stream": True},
                headers={"x-api-key": token},
            )
        )
        async with asyncio.timeout(30):
            while not upstream.arrived:
                upstream.changed.clear()
                await upstream.changed.wait()
        call.cancel()  # the agent hangs up while the upstream is still thinking
        with pytest.raises(asyncio.CancelledError):
            await call
        upstream.release.set()
        summary: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while not summary.get("requests"):
                summary = (await gw.client.runs(["run-gone"]))["run-gone"]
                await asyncio.sleep(0.05)  # polling the ledger's state, bounded by the timeout
    assert summary["requests"] == 1
    assert summary["cost_usd"] > 0
    (row,) = ledger_rows(tmp_path)
    # not one byte could be relayed, but the answer was still read to its end for its usage
    assert row.note == "agent hung up: read to the end"
    assert row.tokens == TokenCounts(input_tokens=77, output_tokens=99)
    assert row.cost_usd == pytest.approx(PriceTable().cost("claude-sonnet-5-5", row.tokens))


async def test_a_body_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
    ):
        token = await gw.run("run-big")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        # announces 40 MiB and sends none of it: the answer must not wait for the body
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {token}\r\nContent-Length: {MAX_BODY + 8 * 1024 * 1024}\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(20):
            status = await reader.readline()
        writer.close()
    assert status.split()[1] == b"413"
    assert MAX_BODY <= 32 * 1024 * 1024
    assert upstream.arrived == []


async def test_one_address_cannot_hold_more_than_its_share_of_connections(
    tmp_path: Path,
) -> None:
    async with local_gateway(tmp_path) as gw:
        held = [
            await asyncio.open_connection("127.0.0.1", gw.port)
            for _ in range(MAX_CONNECTIONS_PER_PEER)
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        async with asyncio.timeout(20):
            assert await reader.read(1) == b""  # closed by the gateway at once
        writer.close()
        # the connections within the cap still work
        first_reader, first_writer = held[0]
        first_writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        async with asyncio.timeout(20):
            assert b" 200 " in await first_reader.readline()
        for _, w in held:
            w.close()
        # closing frees the slots
        async with asyncio.timeout(20):
            while True:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
                line = await reader.readline()
                writer.close()
                if b" 200 " in line:
                    break
                await asyncio.sleep(0.05)  # the gateway has not yet seen the closes


class Loris:
    """Sends ``data`` a byte at a time (a slow loris) until stopped; counts what it sent."""

    def __init__(self, writer: asyncio.StreamWriter, data: bytes, pace: float) -> None:
        self.sent = 0
        self.task = asyncio.create_task(self._run(writer, data, pace))

    async def _run(self, writer: asyncio.StreamWriter, data: bytes, pace: float) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                self.sent += 1
                await asyncio.sleep(pace)  # the attacker's pace, not a synchronisation

    async def stop(self) -> int:
        """How many bytes went before the gateway closed the connection (call on the close)."""
        sent = self.sent
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return sent


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    out = b""
    try:
        while chunk := await reader.read(65536):
            out += chunk
    except (ConnectionError, OSError):
        pass
    return out


async def test_a_slow_loris_is_cut_off_at_the_head_timeout_and_others_are_served(
    tmp_path: Path,
) -> None:
    head = b"GET /api/hello HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    pace = 0.05  # the whole head would take 3.5 s; the gateway allows 1 s
    async with local_gateway(tmp_path, head_timeout=1.0) as gw, aiohttp.ClientSession() as http:
        # a fresh connection trickling its head
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        loris = Loris(writer, head, pace)
        async with http.get(f"{gw.url}/api/hello") as other:  # served meanwhile
            assert other.status == 200
        async with asyncio.timeout(20):
            answer = await _closed(reader)
        sent = await loris.stop()
        writer.close()
        assert answer == b""  # closed, not answered
        assert sent < len(head)  # before the head was complete
        # a kept-alive connection: the clock starts again after each answer
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /api/hello HTTP/1.1\r\nHost: gw\r\n\r\n")
        async with asyncio.timeout(20):
            assert b" 200 " in await reader.readline()
        loris = Loris(writer, head, pace)
        async with asyncio.timeout(20):
            rest = await _closed(reader)
        sent = await loris.stop()
        writer.close()
        assert b"HTTP/1.1" not in rest.split(b"\r\n\r\n", 1)[-1]  # no second answer
        assert sent < len(head)
        async with http.get(f"{gw.url}/api/hello") as again:
            assert again.status == 200


async def test_a_trickled_body_is_cut_off_at_the_body_timeout(tmp_path: Path) -> None:
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, body_timeout=1.0) as gw,
    ):
        token = await gw.run("run-slow-body")
        body = json.dumps(BODY).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        loris = Loris(writer, body, 0.05)  # the whole body would take 4.9 s; 1 s is allowed
        async with asyncio.timeout(20):
            status = await reader.readline()
            sent = loris.sent  # when the answer came
            # the rest is read and dropped for a bounded lingering time, then the connection ends
            await _closed(reader)
        await loris.stop()
        writer.close()
    assert status.split(b" ", 2)[1] == b"408"
    assert sent < len(body)
    assert upstream.arrived == []


class EndlessUpstream:
    """Streams ``message_start``; once :attr:`go` is set a few text deltas (so the gateway
    notices a hang-up on its next write), then either nothing more (``flood=False``: it stalls
    until the test ends) or deltas without end (``flood=True``); never the final usage."""

    def __init__(self, *, flood: bool) -> None:
        self.flood = flood
        self.go = asyncio.Event()
        self.done = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.sent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {
            "type": "message_start",
            "message": {"model": "claude-sonnet-5-5", "usage": {"input_tokens": 5}},
        }
        await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 4000}}
        event = f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
        await self.go.wait()
        with contextlib.suppress(ConnectionError):
            for _ in range(20):
                await response.write(event)
            while self.flood and not self.done.is_set():
                await response.write(event)
                self.sent += len(event)
            await self.done.wait()
        return response

    async def __aenter__(self) -> EndlessUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.go.set()
        self.done.set()
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.mark.parametrize("flood", [False, True], ids=["stalls", "never-ends"])
async def test_a_hung_up_answer_that_never_finishes_is_charged_the_worst_case(
    tmp_path: Path, flood: bool
) -> None:
    bounds = {"drain_timeout": 1.0} if not flood else {"drain_max_bytes": 256 * 1024}
    async with (
        EndlessUpstream(flood=flood) as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, **bounds) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-endless")
        resp = await http.post(
            f"{gw.url}/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": token}
        )
        assert b"message_start" in await resp.content.readany()
        resp.close()  # the agent hangs up; the answer never brings its final usage
        upstream.go.set()
        summary: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while not summary.get("requests"):
                summary = (await gw.client.runs(["run-endless"]))["run-endless"]
                await asyncio.sleep(0.05)  # polling the ledger's state, bounded by the timeout
        (row,) = ledger_rows(tmp_path)
    assert row.note == "agent hung up: worst case charged"
    reserved = PriceTable().cost(
        "claude-sonnet-5-5", TokenCounts(input_tokens=1, output_tokens=BODY["max_tokens"])
    )
    assert row.cost_usd >= reserved  # the reservation: the body's bytes as input, max_tokens out
    assert row.tokens.input_tokens == 5  # what did arrive is kept for the record
    if flood:  # gave up after its byte bound, not after the whole (endless) answer
        assert upstream.sent < 64 * 1024 * 1024


async def test_a_non_streamed_answer_in_many_chunks_arrives_whole_and_is_metered(
    tmp_path: Path,
) -> None:
    # 300 kB of text: the upstream's answer reaches the gateway in many pieces, its usage last
    usage = reply.usage(input_tokens=150_000, output_tokens=60_000)
    big = reply.text("x" * 300_000, usage=usage)
    async with (
        ScriptedAnthropicServer([big, big]) as server,
        local_gateway(tmp_path, upstream_url=server.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-big", max_cost_usd=0.5)
        direct = await (await http.post(f"{server.url}/v1/messages", json=BODY)).json()
        resp = await http.post(
            f"{gw.url}/v1/messages",
            json={**BODY, "max_tokens": 64000},
            headers={"x-api-key": token},
        )
        via = await resp.json()  # a truncated body would not parse
        assert resp.status == 200
        assert via["content"] == direct["content"]
        assert via["usage"] == direct["usage"]
        # the answer cost $1.35 of a $0.50 budget: the next request is refused
        again = await http.post(f"{gw.url}/v1/messages", json=BODY, headers={"x-api-key": token})
        assert again.status == 403
    (row, _refused) = ledger_rows(tmp_path)
    assert row.tokens == TokenCounts.from_mapping(usage)
    assert row.cost_usd == PriceTable().cost("claude-sonnet-5-5", TokenCounts.from_mapping(usage))


async def test_a_non_streamed_answer_that_breaks_off_is_charged_the_worst_case(
    tmp_path: Path,
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            headers={"content-type": "application/json", "content-length": "5000"}
        )
        await response.prepare(request)
        await response.write(b'{"type":"message","usage":{"input_tokens":100000,')
        assert request.transport is not None
        request.transport.close()  # the answer breaks off before its 5000 bytes
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    body = {**BODY, "max_tokens": 64000}
    try:
        async with (
            local_gateway(tmp_path, upstream_url=f"http://127.0.0.1:{port}") as gw,
            aiohttp.ClientSession() as http,
        ):
            token = await gw.run("run-cut", max_cost_usd=1.0)
            resp = await http.post(f"{gw.url}/v1/messages", json=body, headers={"x-api-key": token})
            await resp.read()
            summary = (await gw.client.runs(["run-cut"]))["run-cut"]
    finally:
        await runner.cleanup()
    assert resp.status == 502  # not a 200 with half an answer
    (row,) = ledger_rows(tmp_path)
    worst = PriceTable().cost(
        "claude-sonnet-5-5",
        TokenCounts(input_tokens=len(json.dumps(body)) // 3, output_tokens=64000),
    )
    assert row.cost_usd >= worst
    assert row.note is not None
    assert row.note.endswith("worst case charged")
    assert summary["cost_usd"] == pytest.approx(row.cost_usd)


async def _chunked_post(
    port: int, token: str, *, expect: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose head says ``Transfer-Encoding: chunked``; its body is up to the caller.
    With ``expect`` it asks ``Expect: 100-continue`` and returns once the gateway answered
    that (its head has been read and handed to the proxy)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"x-api-key: {token}\r\nTransfer-Encoding: chunked\r\n".encode()
        + (b"Expect: 100-continue\r\n" if expect else b"")
        + b"\r\n"
    )
    await writer.drain()
    if expect:
        async with asyncio.timeout(30):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    return reader, writer


async def test_one_run_holding_slow_bodies_does_not_refuse_another_run(tmp_path: Path) -> None:
    async with (
        HeldUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        upstream.release.set()
        hostile = await gw.run("run-hostile")
        other = await gw.run("run-other")
        # heads without a body byte (each counted as a whole MAX_BODY before the fix: eight of
        # them filled the pool of every agent for the body timeout)
        held = [await _chunked_post(gw.port, hostile, expect=True) for _ in range(8)]
        # and bodies that do arrive, never finished: the run's own share runs out, not the pool
        piece = b"[" * (30 * 1024 * 1024)
        big = [await _chunked_post(gw.port, hostile) for _ in range(3)]
        for _, writer in big:
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        answers = [asyncio.ensure_future(reader.readline()) for reader, _ in big]
        async with asyncio.timeout(60):
            done, _ = await asyncio.wait(answers, return_when="FIRST_COMPLETED")
        statuses = [t.result().split(b" ", 2)[1] for t in done]
        assert set(statuses) == {b"429"}  # past the run's share of 64 MiB
        resp = await http.post(f"{gw.url}/v1/messages", json=BODY, headers={"x-api-key": other})
        assert resp.status == 200
        for task in answers:
            task.cancel()
        for _, writer in [*held, *big]:
            writer.close()


class FloodUpstream:
    """Streams ``message_start``, ``deltas`` text deltas of 4 kB, then the final usage."""

    def __init__(self, deltas: int) -> None:
        self.deltas = deltas
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {
            "type": "message_start",
            "message": {"model": "claude-sonnet-5-5", "usage": {"input_tokens": 10}},
        }
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "y" * 4000}}
        event = f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
        end = {"type": "message_delta", "usage": {"output_tokens": 90}}
        with contextlib.suppress(ConnectionError):
            await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
            for _ in range(self.deltas):
                await response.write(event)
            await response.write(f"event: message_delta\ndata: {json.dumps(end)}\n\n".encode())
            await response.write(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
            await response.write_eof()
        return response

    async def __aenter__(self) -> FloodUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_an_agent_that_stops_reading_its_stream_is_cut_off_and_metered(
    tmp_path: Path,
) -> None:
    async with (
        FloodUpstream(deltas=2000) as upstream,  # 8 MB: far more than any socket buffer
        local_gateway(tmp_path, upstream_url=upstream.url, write_timeout=1.0) as gw,
    ):
        token = await gw.run("run-stalled")
        body = json.dumps({**BODY, "stream": True}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", gw.port))
        await loop.sock_sendall(
            sock,
            b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body,
        )
        # ... and never reads: the gateway's writes stall, it cuts the agent off after 1 s and
        # reads the rest of the answer in the background for its real usage
        summary: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while not summary.get("requests"):
                summary = (await gw.client.runs(["run-stalled"]))["run-stalled"]
                await asyncio.sleep(0.05)  # polling the ledger's state, bounded by the timeout
        # the connection was dropped: reading now ends, it does not wait for more
        with sock:
            sock.setblocking(True)
            sock.settimeout(30)
            with contextlib.suppress(ConnectionError):
                while sock.recv(65536):
                    pass
    (row,) = ledger_rows(tmp_path)
    assert row.note == "agent hung up: read to the end"
    assert row.tokens == TokenCounts(input_tokens=10, output_tokens=90)


class GatedUpstream:
    """Streams ``message_start`` and a delta, then waits for :attr:`go` before the rest."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {
            "type": "message_start",
            "message": {"model": "claude-sonnet-5-5", "usage": {"input_tokens": 100_000}},
        }
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "y"}}
        end = {"type": "message_delta", "usage": {"output_tokens": 20_000}}
        with contextlib.suppress(ConnectionError):
            await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
            await response.write(
                f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
            )
            await self.go.wait()
            await response.write(
                f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
            )
            await response.write(f"event: message_delta\ndata: {json.dumps(end)}\n\n".encode())
            await response.write(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
            await response.write_eof()
        return response

    async def __aenter__(self) -> GatedUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.go.set()
        assert self.runner is not None
        await self.runner.cleanup()


async def test_a_run_end_summary_includes_the_answer_still_being_read(tmp_path: Path) -> None:
    async with (
        GatedUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-ending")
        resp = await http.post(
            f"{gw.url}/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": token}
        )
        assert b"message_start" in await resp.content.readany()
        resp.close()  # the agent is gone (its container killed at the deadline, say)
        ending = asyncio.ensure_future(gw.client.end("run-ending"))
        async with asyncio.timeout(30):  # the end has begun once the token is dead
            while True:
                probe = await http.post(
                    f"{gw.url}/v1/messages", json=BODY, headers={"x-api-key": token}
                )
                if probe.status == 401:
                    break
        upstream.go.set()  # only now does the rest of the answer, with its usage, arrive
        summary = await ending
    assert summary is not None
    assert summary["requests"] == 1
    assert summary["output_tokens"] == 20_000
    assert "provisional" not in summary


async def test_an_answer_relayed_past_the_answer_timeout_is_cut_off_and_charged(
    tmp_path: Path,
) -> None:
    async with (
        GatedUpstream() as upstream,  # never sends the rest: the answer would last forever
        local_gateway(
            tmp_path, upstream_url=upstream.url, answer_timeout=1.0, drain_timeout=1.0
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-long")
        resp = await http.post(
            f"{gw.url}/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": token}
        )
        async with asyncio.timeout(30):  # the agent keeps reading; the gateway ends it
            with contextlib.suppress(aiohttp.ClientError):
                async for _ in resp.content.iter_any():
                    pass
            summary: dict[str, Any] = {}
            while not summary.get("requests"):
                summary = (await gw.client.runs(["run-long"]))["run-long"]
                await asyncio.sleep(0.05)  # polling the ledger's state, bounded by the timeout
    (row,) = ledger_rows(tmp_path)
    assert row.note == "agent hung up: worst case charged"
    reserved = PriceTable().cost(
        "claude-sonnet-5-5", TokenCounts(input_tokens=1, output_tokens=BODY["max_tokens"])
    )
    assert row.cost_usd >= reserved
    assert row.tokens.input_tokens == 100_000  # what did arrive is kept for the record


async def test_a_run_end_summary_is_provisional_while_an_answer_is_still_relayed(
    tmp_path: Path,
) -> None:
    async with (
        GatedUpstream() as upstream,
        local_gateway(tmp_path, upstream_url=upstream.url, drain_timeout=1.0) as gw,
        aiohttp.ClientSession() as http,
    ):
        token = await gw.run("run-busy")
        resp = await http.post(
            f"{gw.url}/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": token}
        )
        assert b"message_start" in await resp.content.readany()
        summary = await gw.client.end("run-busy")  # waits at most the drain timeout
        upstream.go.set()
        rest = await resp.read()  # the agent still gets the rest of its answer
    assert summary is not None
    assert summary["provisional"] is True
    assert summary["requests"] == 0
    assert b"message_stop" in rest


_ESTABLISHED = 1  # tcpi_state of a live connection (Linux)


async def test_an_agent_that_never_reads_a_non_streamed_answer_is_cut_off(tmp_path: Path) -> None:
    big = reply.text("x" * 8_000_000, usage=reply.usage(input_tokens=10, output_tokens=90))
    async with (
        ScriptedAnthropicServer([big]) as server,
        local_gateway(tmp_path, upstream_url=server.url, write_timeout=1.0) as gw,
    ):
        token = await gw.run("run-unread")
        body = json.dumps(BODY).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", gw.port))
        await loop.sock_sendall(
            sock,
            b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body,
        )
        # never reads: the gateway drops the connection (the kernel's TCP state leaves
        # ESTABLISHED, data still queued unread)
        with sock:
            async with asyncio.timeout(30):
                while sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _ESTABLISHED:
                    await asyncio.sleep(0.05)  # polling the socket's state, bounded by the timeout
        summary = (await gw.client.runs(["run-unread"]))["run-unread"]
    assert summary["requests"] == 1  # metered from the answer's usage before it was sent
    assert summary["output_tokens"] == 90
