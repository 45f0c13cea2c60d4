"""An in-process gateway (the real server code, no container) for the gateway unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentkit.gateway.budgets import token_sha256
from agentkit.gateway.client import GatewayClient
from agentkit.gateway.server import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalGateway:
    """``serve()`` on 127.0.0.1 with its config and state under ``folder``."""

    def __init__(self, folder: Path, **config: Any) -> None:
        self.folder = folder
        self.port = int(config.pop("api_port", 0)) or free_port()
        self.state = folder / "state"
        self.config_path = folder / "config.json"
        self.config = {"api_port": self.port, "egress_allow": [], **config}
        self.config_path.write_text(json.dumps(self.config))
        self.client = GatewayClient(str(self.state / "admin.sock"))
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        self._task = asyncio.create_task(
            serve(
                str(self.config_path),
                str(self.state),
                str(self.folder / "squid" / "squid.conf"),
                host="127.0.0.1",
                stop=self._stop,
                ready=ready,
            )
        )
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=30, return_when="FIRST_COMPLETED"
        )
        if self._task in done:
            self._task.result()  # raises what went wrong
        assert waiter in done, "the gateway did not start in 30 s"

    async def stop(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 30)
        await self.client.aclose()

    async def run(self, run_id: str, *, max_cost_usd: float | None = None) -> str:
        """Register a run; returns its token."""
        token = f"agentkit-run-test-{run_id}"
        await self.client.register(
            run_id,
            token_sha256(token),
            workspace=f"/ws/{run_id}",
            max_cost_usd=max_cost_usd,
            expires=None,
        )
        return token


@contextlib.asynccontextmanager
async def local_gateway(folder: Path, **config: Any) -> AsyncIterator[LocalGateway]:
    gateway = LocalGateway(folder, **config)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
