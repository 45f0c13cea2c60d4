"""Agent unit tests without a socket: respx routes (bridged to the SDK's httpx2) and the
scripted server's in-process transport."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
import respx

from agentkit import Settings, ToolBasedAgent, Toolset, tool
from agentkit.errors import ConfigError, ModelError
from agentkit.testing import ScriptedAnthropicServer, reply

BASE = "http://anthropic.test"


@tool
async def ping() -> str:
    """Answers pong."""
    return "pong"


def respx_client(router: respx.Router, **options: Any) -> anthropic.AsyncAnthropic:
    """An SDK client whose requests are answered by a respx router.

    anthropic 2.x sends through ``httpx2``, which respx does not patch; this bridges
    ``httpx2`` requests to respx (``httpx``) routes and back, still without any socket.
    """

    async def handle(request: httpx2.Request) -> httpx2.Response:
        bridged = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.multi_items()),
            content=await request.aread(),
        )
        try:
            response = await router.async_handler(bridged)
        except httpx.ConnectError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        return httpx2.Response(
            response.status_code,
            headers=list(response.headers.multi_items()),
            content=response.content,
        )

    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-unit-test-key",
        base_url=BASE,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)),
        **options,
    )


def sse(answer: reply.Reply) -> httpx.Response:
    events = answer.sse_events("claude-test")
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


async def test_respx_routes_a_tool_turn() -> None:
    router = respx.Router(assert_all_called=True)
    route = router.post(f"{BASE}/v1/messages").mock(
        side_effect=[sse(reply.tool_use("ping")), sse(reply.text("pong it is"))]
    )
    agent = ToolBasedAgent(Toolset([ping]), client=respx_client(router), model="claude-test")
    result = await agent.run("ping please")
    assert result.text == "pong it is"
    assert route.call_count == 2
    second = json.loads(route.calls[1].request.content)
    assert second["messages"][2]["content"][0]["content"] == "pong"
    assert second["stream"] is True
    assert route.calls[0].request.headers["anthropic-version"]
    router.assert_all_called()


async def test_authentication_error_is_not_retried_and_says_what_to_do() -> None:
    router = respx.Router()
    route = router.post(f"{BASE}/v1/messages").mock(
        return_value=httpx.Response(
            401,
            json={
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            },
        )
    )
    agent = ToolBasedAgent(Toolset([ping]), client=respx_client(router), max_retries=3)
    with pytest.raises(ModelError, match="check ANTHROPIC_API_KEY") as info:
        await agent.run("x")
    assert "authentication_error: invalid x-api-key" in str(info.value)
    assert isinstance(info.value.__cause__, anthropic.AuthenticationError)
    assert route.call_count == 1


async def test_connection_failure_becomes_model_error() -> None:
    router = respx.Router()
    router.post(f"{BASE}/v1/messages").mock(side_effect=httpx.ConnectError("refused"))
    agent = ToolBasedAgent(Toolset([ping]), client=respx_client(router))
    with pytest.raises(ModelError, match="cannot reach the Anthropic API") as info:
        await agent.run("x")
    assert "ANTHROPIC_BASE_URL" in str(info.value)
    assert isinstance(info.value.__cause__, anthropic.APIConnectionError)


async def test_credentials_in_the_base_url_stay_out_of_the_model_error() -> None:
    client = anthropic.AsyncAnthropic(
        base_url="http://user:sekrit-pass@127.0.0.1:9", api_key="sk-test", max_retries=0
    )
    agent = ToolBasedAgent(Toolset([ping]), client=client)
    messages: list[str] = []

    async def consume() -> None:
        async for event in agent.stream("x"):
            messages.append(getattr(event, "message", ""))

    with pytest.raises(ModelError, match="cannot reach the Anthropic API") as info:
        await consume()
    assert "127.0.0.1:9" in str(info.value)
    assert "sekrit-pass" not in str(info.value)
    assert messages
    assert all("sekrit-pass" not in m for m in messages)


async def test_retry_count_comes_from_the_agent() -> None:
    router = respx.Router()
    overloaded = httpx.Response(
        529,
        headers={"retry-after-ms": "1"},
        json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    route = router.post(f"{BASE}/v1/messages").mock(return_value=overloaded)
    agent = ToolBasedAgent(Toolset([ping]), client=respx_client(router), max_retries=3)
    with pytest.raises(ModelError, match="after 3 retries"):
        await agent.run("x")
    assert route.call_count == 4


async def test_in_process_transport_of_the_scripted_server() -> None:
    server = ScriptedAnthropicServer([reply.tool_use("ping"), reply.text("done")])
    agent = ToolBasedAgent(Toolset([ping]), client=server.client(max_retries=0))
    result = await agent.run("x")  # the server was never started: no socket
    assert result.text == "done"
    assert server.port == 0
    assert [r.path for r in server.requests] == ["/v1/messages", "/v1/messages"]
    assert "[REDACTED]" in server.requests[0].headers.values()  # the api key
    server.check()


def test_from_settings_requires_a_key() -> None:
    settings = Settings(_env_file=None, anthropic_api_key=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        ToolBasedAgent.from_settings(Toolset([ping]), settings)


async def test_from_settings_uses_key_url_model_and_limits() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        anthropic_api_key="sk-ant-from-settings-123",
        anthropic_base_url="http://127.0.0.1:9/",
        model="claude-haiku-4-5",
        max_tokens=321,
        max_turns=7,
        max_retries=2,
    )
    toolset = Toolset([ping])
    agent = ToolBasedAgent.from_settings(toolset, settings, system="be brief")
    assert (agent.model, agent.max_tokens, agent.max_turns, agent.system) == (
        "claude-haiku-4-5",
        321,
        7,
        "be brief",
    )
    client = agent.client
    assert client.api_key == "sk-ant-from-settings-123"
    assert str(client.base_url).startswith("http://127.0.0.1:9")
    assert client.max_retries == 2
    # the key is registered for redaction of tool results
    assert toolset.context.redactor.redact("key sk-ant-from-settings-123") == "key [REDACTED]"


async def test_missing_key_without_a_client_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no credentials file either
    agent = ToolBasedAgent(Toolset([ping]))
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        await agent.run("x")


def test_default_client_from_environment_works_across_run_sync_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ScriptedAnthropicServer([reply.text("one"), reply.text("two")])
    with server.start_in_thread() as running:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-key-123456")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", running.url)
        agent = ToolBasedAgent(Toolset([ping]), max_retries=0)
        # each run_sync has its own event loop; the agent makes a client per loop
        assert agent.run_sync("a").text == "one"
        assert agent.run_sync("b").text == "two"
    assert [r.last_user_text() for r in server.message_requests] == ["a", "b"]
