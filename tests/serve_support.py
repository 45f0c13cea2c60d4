"""A real ``agentkit serve`` (uvicorn on 127.0.0.1, an ephemeral port) for the serve tests.

``running_server(settings)`` serves :func:`agentkit.serve.create_app` in the test's event loop
(so tests can look at the app's state), with the real lifespan (its own ``connect()``).
``agent_server(...)`` adds the scripted model server the agents' Claude Code talks to.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse

from agentkit.config import Settings
from agentkit.serve import create_app
from agentkit.serve.state import ServeState
from agentkit.testing import ScriptedAnthropicServer, reply
from agentkit.testing.scripts import ClaudeCodeScript
from tests.containers_support import bridge_gateway

TOKEN = "test-token-" + secrets.token_urlsafe(24)


@dataclass
class Served:
    url: str
    token: str | None
    app: FastAPI
    server: uvicorn.Server

    @property
    def state(self) -> ServeState:
        state: ServeState = self.app.state.agentkit
        return state

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("timeout", httpx.Timeout(60.0))
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, **kw)


async def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until ``predicate()`` is true (a state, checked each loop turn), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def live_tasks() -> list[asyncio.Task[Any]]:
    """This loop's tasks, except a scripted model server's (aiohttp serves model requests in
    this process too - an agent's, or a run's - and they come and go on their own)."""
    return [
        t
        for t in asyncio.all_tasks()
        if not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    ]


@asynccontextmanager
async def running_server(
    settings: Settings, *, token: str | None = TOKEN, insecure: bool = False, app: Any = None
) -> AsyncIterator[Served]:
    app = app or create_app(settings, token=token, insecure=insecure)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so (else 40 ms
    # delayed-ACK stalls on every response)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="test uvicorn")
    try:
        await wait_for(lambda: server.started or task.done(), 60, "uvicorn to start")
        if task.done():
            task.result()  # raises the startup error
        yield Served(f"http://127.0.0.1:{port}", token, app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    limit: int | None = None,
    until: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    json_body: Any = None,
    timeout: float = 120.0,
    into: list[ServerSentEvent] | None = None,
) -> list[ServerSentEvent]:
    """SSE messages of ``url`` until ``limit`` were read, an ``until`` event came, or the end
    (appended to ``into`` as they come, when given, for a live view)."""
    out: list[ServerSentEvent] = into if into is not None else []

    async def read() -> None:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if json_body is not None:
            kwargs["json"] = json_body
        async with aconnect_sse(client, method, url, **kwargs) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                out.append(sse)
                if (limit is not None and len(out) >= limit) or sse.event == until:
                    return

    await asyncio.wait_for(read(), timeout)
    return out


def data(sse: ServerSentEvent) -> Any:
    return json.loads(sse.data)


def chatty_script(steps: int, delay: float) -> ClaudeCodeScript:
    """``steps`` turns running ``echo step N`` (each answered after ``delay`` s), then a text."""
    turns = [
        reply.tool_use("Bash", {"command": f"echo step {n}", "description": f"step {n}"}).delayed(
            delay
        )
        for n in range(steps)
    ]
    return ClaudeCodeScript([*turns, reply.text("All steps done.")])


@asynccontextmanager
async def agent_server(
    tmp_path: Path, image: str, script: Any, **server_kw: Any
) -> AsyncIterator[tuple[Served, ScriptedAnthropicServer]]:
    gateway = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0", **server_kw) as model:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            host=None,
            root=str(tmp_path / "root"),
            image=image,
            anthropic_api_key="sk-ant-serve-" + secrets.token_hex(12),
            anthropic_base_url=model.url_for(gateway),
            container_memory="2g",
            api_token=TOKEN,
        )
        async with running_server(settings) as srv:
            yield srv, model


async def spawn(srv: Served, workspace: str) -> str:
    async with srv.client() as client:
        answer = await client.post(
            "/v1/tools/spawn_claude_agent",
            json={"task": "run the steps", "workspace_path": workspace, "timeout": 180000},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["is_error"] is False, answer.json()["content"]
    return str(answer.json()["data"]["id"])
