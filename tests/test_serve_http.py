"""``agentkit serve`` through HTTP on a real uvicorn server: auth, every route's refusal, schema
errors, body limits, errors without secrets, workspaces, runs, OpenAPI, the CLI's start rules.

Routes whose point is a live agent (events, stop, costs) are in test_serve_agents.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from agentkit.config import Settings
from agentkit.errors import ConfigError
from agentkit.serve import create_app
from agentkit.serve.server import check_bind, is_loopback
from agentkit.testing import ScriptedAnthropicServer, reply
from tests.serve_support import (
    TOKEN,
    Served,
    data,
    live_tasks,
    read_events,
    running_server,
    wait_for,
)
from tests.support import TOOL_NAMES

API_KEY = "sk-ant-serve-" + "k" * 24


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    kw.setdefault("anthropic_api_key", API_KEY)
    return Settings(  # type: ignore[call-arg]
        _env_file=None, host=None, root=str(tmp_path / "root"), api_token=TOKEN, **kw
    )


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_server(_settings(tmp_path, serve_max_body_bytes=4096)) as srv:
        yield srv


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route in the OpenAPI document."""
    out = []
    for path, item in app.openapi()["paths"].items():
        concrete = path.replace("{agent_id}", "claude-agent-1764240000000-a1b2c3")
        for method in item:
            out.append((method.upper(), concrete))
    return out


async def test_every_route_but_healthz_refuses_without_or_with_a_wrong_token(
    served: Served,
) -> None:
    operations = _operations(served.app)
    assert len(operations) >= 12 + 9  # the twelve tools and the resource routes
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as anonymous:
        health = await anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json()["ok"] is True
        for method, path in operations:
            if path == "/healthz":
                continue
            for headers in (
                {},
                {"Authorization": "Bearer wrong-" + TOKEN[6:]},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Cookie": f"token={TOKEN}"},
            ):
                answer = await anonymous.request(method, path, headers=headers, json={})
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in answer.text
        # paths that do not exist are refused the same way (nothing to learn without a token)
        assert (await anonymous.get("/v1/nothing-here")).status_code == 401
        assert (await anonymous.get("/openapi.json")).status_code == 401
        # the static shell loads (it holds no data); no cookie is ever set
        page = await anonymous.get("/")
        assert page.status_code == 200
        assert "set-cookie" not in page.headers
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    async with served.client() as client:
        assert (await client.get("/v1/agents")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_openapi_has_one_typed_operation_per_tool(served: Served) -> None:
    async with served.client() as client:
        doc = (await client.get("/openapi.json")).json()
    for name in TOOL_NAMES:
        operation = doc["paths"][f"/v1/tools/{name}"]["post"]
        assert operation["operationId"] == f"call_{name}"
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        expected = served.state.conn.toolset[name].input_schema
        # the document leaves out null defaults; everything else is the exact schema sent
        assert set(schema["properties"]) == set(expected["properties"])
        assert schema.get("required", []) == expected.get("required", [])
        assert schema["additionalProperties"] is False
    for path in ("/v1/agents", "/v1/agents/{agent_id}", "/v1/agents/{agent_id}/stop"):
        assert path in doc["paths"]
    for path in ("/v1/agents/{agent_id}/events", "/v1/events", "/v1/runs"):
        assert path in doc["paths"]
    assert {"/v1/workspaces", "/v1/costs", "/v1/tools"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # a valid OpenAPI 3.1 document (what client generators read), with our 422 shape only
    from openapi_spec_validator import validate

    validate(doc)
    assert "HTTPValidationError" not in json.dumps(doc)


async def test_schema_errors_are_422_listing_every_violation(served: Served) -> None:
    async with served.client() as client:
        answer = await client.post(
            "/v1/tools/create_workspace",
            json={"workspace_name": 5, "repo_visibility": "secret", "x": 1},
        )
        assert answer.status_code == 422
        body = answer.json()
        assert body["type"] == "ValidationError"
        errors = "\n".join(body["errors"])
        assert "$.workspace_name: 5 is not of type 'string'" in errors
        assert "'x' was unexpected" in errors
        assert "$.repo_visibility" in errors
        assert len(body["errors"]) == 3
        not_json = await client.post("/v1/tools/list_workspaces", content=b"{nope")
        assert not_json.status_code == 422
        assert "not valid JSON" in not_json.json()["errors"][0]
        array = await client.post("/v1/tools/list_workspaces", json=[1])
        assert array.status_code == 422
        unknown = await client.post("/v1/tools/format_disk", json={})
        assert unknown.status_code == 404
        assert "list_workspaces" in unknown.json()["detail"]
        run = await client.post("/v1/runs", json={"prompt": "", "max_turns": 0, "extra": 1})
        assert run.status_code == 422
        assert any("prompt" in e for e in run.json()["errors"])
        assert any("max_turns" in e for e in run.json()["errors"])


async def test_tool_calls_return_the_tool_result_and_workspaces_are_listed(
    served: Served,
) -> None:
    async with served.client() as client:
        made = await client.post("/v1/tools/create_workspace", json={"workspace_name": "web-1"})
        assert made.status_code == 200, made.text
        result = made.json()
        assert result["is_error"] is False
        assert "web-1" in result["content"]
        again = await client.post("/v1/tools/create_workspace", json={"workspace_name": "web-1"})
        assert again.status_code == 200
        assert again.json()["is_error"] is True  # a tool failure is a ToolResult, not a 500
        listed = await client.get("/v1/workspaces")
        assert listed.status_code == 200
        names = [w["name"] for w in listed.json()]
        assert names == ["web-1"]
        assert listed.json()[0]["path"] == f"{served.state.settings.workspaces_root}/web-1"
        tools = await client.get("/v1/tools")
        assert {t["name"] for t in tools.json()} == TOOL_NAMES


async def test_bodies_over_the_limit_are_refused_before_being_read(served: Served) -> None:
    limit = served.state.settings.serve_max_body_bytes
    async with served.client() as client:
        big = await client.post(
            "/v1/tools/create_workspace",
            content=b"x" * (limit + 1),
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert "AGENTKIT_SERVE_MAX_BODY_BYTES" in big.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(limit // 512 + 2):
                yield b" " * 512

        streamed = await client.post("/v1/runs", content=chunks())
        assert streamed.status_code == 413
    # a declared length far beyond the limit is refused at once, without the body being sent
    reader, writer = await asyncio.open_connection("127.0.0.1", int(served.url.rsplit(":", 1)[1]))
    writer.write(
        b"POST /v1/tools/list_workspaces HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 413 " in status_line
    writer.close()


async def test_errors_carry_no_secret_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    app = create_app(settings, token=TOKEN)

    @app.get("/v1/explode")
    async def explode() -> None:  # a host app's own route that fails unexpectedly
        raise RuntimeError(f"boom with {API_KEY} inside")

    async with running_server(settings, app=app) as srv, srv.client() as client:
        for path in (
            f"/v1/agents/{API_KEY}",
            f"/v1/agents/{TOKEN}",
            f"/v1/agents/{API_KEY}/events",
        ):
            answer = await client.get(path)
            assert answer.status_code == 403
            assert API_KEY not in answer.text
            assert TOKEN not in answer.text
            assert "[REDACTED]" in answer.json()["detail"]
        clone = await client.post(
            "/v1/tools/clone_repo", json={"repo_url": f"https://x:{API_KEY}@127.0.0.1:9/r.git"}
        )
        assert API_KEY not in clone.text
        with caplog.at_level(logging.ERROR, logger="agentkit.serve"):
            boom = await client.get("/v1/explode")
        assert boom.status_code == 500
        assert boom.json() == {
            "detail": "internal error: the server log has the details",
            "type": "InternalError",
        }
        logged = caplog.text
        assert "RuntimeError" in logged
        assert "[REDACTED]" in logged
        assert API_KEY not in logged


async def test_runs_stream_the_agent_events(tmp_path: Path) -> None:
    script = [
        reply.text("Let me look.") + reply.tool_use("list_workspaces", {}),
        reply.text("There are no workspaces yet."),
    ]
    async with ScriptedAnthropicServer(script) as model:
        settings = _settings(tmp_path, anthropic_base_url=model.url)
        async with running_server(settings) as srv, srv.client() as client:
            events = await read_events(
                client, "/v1/runs", method="POST", json_body={"prompt": "what workspaces exist?"}
            )
            assert srv.state.streams.open == 0
        model.check()
    kinds = [e.event for e in events]
    assert kinds[0] == "run_started"
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("run_finished")
    assert [e.id for e in events] == [str(n) for n in range(len(events))]
    finished = data(events[-1])
    assert finished["text"] == "There are no workspaces yet."
    assert finished["turns"] == 2
    result = next(data(e) for e in events if e.event == "tool_result")
    assert result["name"] == "list_workspaces"
    assert result["is_error"] is False


async def test_runs_without_an_api_key_are_503(tmp_path: Path) -> None:
    settings = _settings(tmp_path, anthropic_api_key=None)
    async with running_server(settings) as srv, srv.client() as client:
        answer = await client.post("/v1/runs", json={"prompt": "hi"})
    assert answer.status_code == 503
    assert "ANTHROPIC_API_KEY" in answer.json()["detail"]


async def test_insecure_mode_serves_without_a_token(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, host=None, root=str(tmp_path / "root"))  # type: ignore[call-arg]
    async with (
        running_server(settings, token=None, insecure=True) as srv,
        httpx.AsyncClient(base_url=srv.url) as anonymous,
    ):
        assert (await anonymous.get("/v1/workspaces")).status_code == 200
        # but only for local clients: not a rebound host name, not another site's page
        rebound = await anonymous.get("/v1/workspaces", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 403
        cross_site = await anonymous.post(
            "/v1/tools/create_workspace",
            content=b'{"workspace_name": "csrf"}',
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        assert cross_site.status_code == 403
        assert not (tmp_path / "root" / "workspaces" / "csrf").exists()
        local_page = await anonymous.get(
            "/v1/workspaces", headers={"Origin": srv.url, "Host": srv.url.split("//")[1]}
        )
        assert local_page.status_code == 200


def test_the_app_refuses_to_exist_without_a_token(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, host=None, root=str(tmp_path / "root"))  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="AGENTKIT_API_TOKEN"):
        create_app(settings)
    with pytest.raises(ConfigError, match="too short"):
        create_app(settings, token="short")


def test_bind_rules() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1")
    check_bind("127.0.0.1", has_token=False, insecure=True)
    check_bind("0.0.0.0", has_token=True, insecure=False)
    with pytest.raises(ConfigError, match="loopback"):
        check_bind("0.0.0.0", has_token=False, insecure=True)
    with pytest.raises(ConfigError, match="AGENTKIT_API_TOKEN"):
        check_bind("127.0.0.1", has_token=False, insecure=False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve"], "AGENTKIT_API_TOKEN is not set"),
        (["serve", "--insecure-localhost", "--host", "0.0.0.0"], "only binds loopback"),
    ],
)
def test_serve_command_refuses_to_start(tmp_path: Path, args: list[str], needle: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTKIT_", "ANTHROPIC_"))}
    env["AGENTKIT_ROOT"] = str(tmp_path / "root")
    proc = subprocess.run(
        [sys.executable, "-m", "agentkit.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_run_whose_client_leaves_is_cancelled_and_leaves_nothing(tmp_path: Path) -> None:
    script = [reply.text("thinking very slowly").delayed(120)]
    async with ScriptedAnthropicServer(script) as model:
        settings = _settings(tmp_path, anthropic_base_url=model.url)
        async with running_server(settings) as srv, srv.client() as client:
            await client.get("/v1/workspaces")  # the connection pool is warm
            base_tasks = len(live_tasks())
            got: list[Any] = []
            reader = asyncio.create_task(
                read_events(client, "/v1/runs", method="POST", json_body={"prompt": "hi"}, into=got)
            )
            await wait_for(lambda: bool(got) and len(model.requests) >= 1, 30, "the run")
            assert got[0].event == "run_started"
            assert srv.state.streams.open == 1
            reader.cancel()  # the client goes away while the model is still answering
            await asyncio.gather(reader, return_exceptions=True)
            await wait_for(lambda: srv.state.streams.open == 0, 30, "the stream to close")
            await wait_for(lambda: len(live_tasks()) <= base_tasks, 30, "tasks to end")


def _history(runs: Path, count: int) -> list[tuple[str, str]]:
    """``count`` finished runs as a controller leaves them (record + index line), oldest first."""
    runs.mkdir(parents=True, exist_ok=True)
    base_ms = 1_764_000_000_000
    states = ["succeeded", "failed", "stopped"]
    out = []
    with (runs / "index.jsonl").open("w") as index:
        for i in range(count):
            run_id = f"claude-agent-{base_ms + i * 1000}-{i:06d}"
            record = {
                "id": run_id,
                "state": states[i % 3],
                "created": (base_ms + i * 1000) / 1000,
                "finished_at": (base_ms + i * 1000) / 1000 + 5,
                "workspace": f"/w/ws{i % 2}",
                "task": f"task {i}",
                "exit_code": 0 if i % 3 == 0 else 1,
            }
            line = json.dumps(record) + "\n"
            index.write(line)
            (runs / run_id).mkdir()
            (runs / run_id / "result.json").write_text(line)
            out.append((run_id, states[i % 3]))
    return out


async def test_the_agents_route_and_the_fleet_snapshot_come_in_pages(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    runs = _history(Path(settings.runs_root), 250)
    newest = [run_id for run_id, _ in reversed(runs)]
    async with running_server(settings) as srv, srv.client() as client:
        first = await client.get("/v1/agents")
        assert first.status_code == 200
        assert [a["id"] for a in first.json()] == newest[:100]  # the default page
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 70, **({"cursor": cursor} if cursor else {})}
            page = await client.get("/v1/agents", params=params)
            assert page.status_code == 200, page.text
            seen += [a["id"] for a in page.json()]
            cursor = page.headers.get("X-Next-Cursor")
            if cursor is None:
                break
        assert seen == newest  # every run once, newest first, across four pages
        failed = await client.get("/v1/agents", params={"state": "failed", "limit": 500})
        assert [a["id"] for a in failed.json()] == [i for i, s in reversed(runs) if s == "failed"]
        assert "X-Next-Cursor" not in failed.headers
        assert (await client.get("/v1/agents", params={"limit": 0})).status_code == 422
        assert (await client.get("/v1/agents", params={"cursor": "x; rm -rf"})).status_code == 400
        (snapshot,) = await read_events(client, "/v1/events", limit=1)
        assert snapshot.event == "snapshot"
        assert [a["id"] for a in data(snapshot)["agents"]] == newest[:200]
