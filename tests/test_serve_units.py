"""Pieces of ``agentkit serve`` without a server: SSE framing, keep-alive, closing, positions,
the public-path and bearer rules, error statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

from agentkit.errors import (
    AgentkitError,
    ConfigError,
    ConflictError,
    ImageBuildError,
    NotFoundError,
    PermissionDeniedError,
    RuntimeUnavailable,
    ToolError,
)
from agentkit.serve.errors import status_for
from agentkit.serve.middleware import bearer_token, is_public
from agentkit.serve.sse import Message, _framed, format_position, frame, parse_position


def test_positions_round_trip_and_bad_ids_start_over() -> None:
    assert parse_position(format_position((12, 3))) == (12, 3)
    assert parse_position(" 0.0 ") == (0, 0)
    for bad in (None, "", "3", "a.b", "1.2.3", "-1.0", "9" * 13 + ".0", "1." + "9" * 7):
        assert parse_position(bad) is None, bad


def test_frames_are_one_json_line_with_id_and_event() -> None:
    raw = frame(Message("agent.event", {"text": "two\nlines", "x": "ü"}, "4.1")).decode()
    assert raw.endswith("\n\n")
    lines = raw.strip("\n").split("\n")
    assert lines[:2] == ["id: 4.1", "event: agent.event"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"text": "two\nlines", "x": "ü"}
    assert "id:" not in frame(Message("end", {}, None)).decode()


async def test_silence_gets_keep_alives_and_closing_closes_the_source() -> None:
    closed = asyncio.Event()
    release = asyncio.Event()

    async def source() -> AsyncGenerator[Message, None]:
        try:
            yield Message("a", 1, "0.0")
            await release.wait()
            yield Message("b", 2, "1.0")
        finally:
            closed.set()

    stream = _framed(source(), heartbeat=0.05)
    assert (await anext(stream)).startswith(b": stream open")
    assert b"event: a" in await anext(stream)
    assert await anext(stream) == b": keep-alive\n\n"  # nothing for a while
    await stream.aclose()  # the client went away
    await asyncio.wait_for(closed.wait(), 5)


async def test_a_failing_source_ends_the_stream_without_its_message() -> None:
    async def source() -> AsyncGenerator[Message, None]:
        yield Message("a", 1)
        raise RuntimeError("secret detail sk-ant-xyz")

    chunks = [chunk async for chunk in _framed(source(), heartbeat=5)]
    assert b"event: error" in chunks[-1]
    assert b"secret" not in b"".join(chunks)


def test_only_the_shell_and_health_are_public() -> None:
    for path in ("/", "/healthz", "/static/dashboard.js", "/favicon.ico"):
        assert is_public("GET", path)
    assert not is_public("POST", "/healthz")
    assert not is_public("GET", "/static/../v1/agents")
    for path in ("/v1/agents", "/openapi.json", "/docs", "/static", "/healthz/x"):
        assert not is_public("GET", path), path


def test_bearer_header_parsing() -> None:
    def scope(value: bytes) -> dict[str, object]:
        return {"headers": [(b"authorization", value)]}

    assert bearer_token(scope(b"Bearer abc")) == "abc"
    assert bearer_token(scope(b"bearer   abc  ")) == "abc"
    assert bearer_token(scope(b"Basic abc")) is None
    assert bearer_token(scope(b"Bearer")) is None
    assert bearer_token({"headers": []}) is None


def test_error_statuses() -> None:
    assert status_for(NotFoundError("x")) == 404
    assert status_for(PermissionDeniedError("x")) == 403
    assert status_for(ConflictError("x")) == 409
    assert status_for(ToolError("x")) == 400
    assert status_for(ConfigError("x")) == 503
    assert status_for(RuntimeUnavailable("x")) == 503
    assert status_for(ImageBuildError("x")) == 500
    assert status_for(AgentkitError("x")) == 500
