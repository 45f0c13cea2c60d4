"""The controller's client for the gateway's admin API (HTTP over its unix socket).

Locally the socket is ``<AGENTKIT_ROOT>/gateway/admin.sock`` itself; over SSH the executor
forwards it through the one persistent connection, like the Docker socket. Failures become
:class:`~agentkit.errors.RuntimeUnavailable` with what to check.
"""

from __future__ import annotations

import asyncio
import json as json_module
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from agentkit.errors import RuntimeUnavailable, ToolError

__all__ = ["GatewayClient"]


class GatewayClient:
    """Admin calls to one gateway (open with :meth:`open`, close with :meth:`aclose`)."""

    def __init__(self, socket_path: str, *, where: str = "the agent host") -> None:
        self.socket_path = socket_path
        self.where = where
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        retry_for: float = 0.0,
    ) -> Any:
        """One admin request; a refused connection is retried for ``retry_for`` seconds."""
        deadline = time.monotonic() + retry_for
        delay = 0.02
        while True:
            try:
                async with self._http().request(
                    method, f"http://gateway{path}", json=json, params=params
                ) as resp:
                    raw = await resp.read()
                    try:
                        data = json_module.loads(raw) if raw.strip() else None
                    except ValueError:  # not the admin API's JSON: aiohttp's own error page
                        text = raw[:300].decode("utf-8", "replace").strip()
                        raise ToolError(
                            f"the agentkit gateway answered {method} {path} with HTTP "
                            f"{resp.status} and no JSON ({text!r}); its log says why: "
                            "`docker logs` of the gateway container"
                        ) from None
                    if resp.status == 404:
                        return None
                    if resp.status >= 400:
                        error = data.get("error") if isinstance(data, dict) else data
                        raise ToolError(f"the agentkit gateway refused {method} {path}: {error}")
                    return data
            except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(delay)  # the gateway is starting: its socket appears
                    delay = min(delay * 2, 0.5)
                    continue
                raise RuntimeUnavailable(
                    f"the agentkit gateway does not answer on {self.socket_path} on "
                    f"{self.where} ({type(exc).__name__}: {exc}); `agentkit doctor` checks it, "
                    "or set AGENTKIT_GATEWAY=false to run agents without it"
                ) from exc

    # --- the routes ---------------------------------------------------------------------------

    async def health(self, *, wait: float = 0.0) -> dict[str, Any]:
        return dict(await self.call("GET", "/health", retry_for=wait) or {})

    async def register(
        self,
        run_id: str,
        token_sha256: str,
        *,
        workspace: str | None,
        max_cost_usd: float | None,
        expires: float | None,
    ) -> None:
        await self.call(
            "POST",
            "/runs",
            json={
                "run_id": run_id,
                "token_sha256": token_sha256,
                "workspace": workspace,
                "max_cost_usd": max_cost_usd,
                "expires": expires,
            },
            retry_for=10.0,
        )

    async def end(self, run_id: str) -> dict[str, Any] | None:
        data = await self.call("POST", f"/runs/{run_id}/end", retry_for=10.0)
        return dict(data) if isinstance(data, Mapping) else None

    async def runs(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(run_ids)
        if not ids:
            return {}
        data = await self.call("GET", "/runs", params=[("id", i) for i in ids])
        found = data.get("runs") if isinstance(data, Mapping) else None
        return {str(k): dict(v) for k, v in (found or {}).items()}

    async def egress(self, run_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        data = await self.call("GET", f"/runs/{run_id}/egress", params={"limit": str(limit)})
        return list((data or {}).get("refused") or [])

    async def record_usage(self, **fields: Any) -> float:
        data = await self.call("POST", "/usage", json=fields)
        return float((data or {}).get("cost_usd") or 0.0)

    async def usage(self, *, since: float = 0.0, limit: int = 100_000) -> list[dict[str, Any]]:
        data = await self.call("GET", "/usage", params={"since": repr(since), "limit": str(limit)})
        return list((data or {}).get("rows") or [])

    async def listen(self) -> dict[str, Any]:
        """The model API listens on the gateway's addresses on every run network it joined."""
        return dict(await self.call("POST", "/listen") or {})

    async def open_sockets(self, run_id: str) -> str:
        """The socket transport: the run's ``api.sock`` and ``proxy.sock`` listen; returns
        their folder inside the gateway."""
        data = await self.call("POST", f"/runs/{run_id}/sockets", retry_for=10.0)
        if not isinstance(data, Mapping) or not data.get("folder"):
            raise ToolError(
                "the agentkit gateway does not serve the socket transport (an older gateway "
                "image?): `agentkit image build` rebuilds it, or set "
                "AGENTKIT_AGENT_TRANSPORT=network"
            )
        return str(data["folder"])

    async def close_sockets(self, run_id: str) -> bool:
        """The run's sockets stop and their folder goes."""
        data = await self.call("DELETE", f"/runs/{run_id}/sockets", retry_for=10.0)
        return bool((data or {}).get("closed"))

    async def reload(self) -> dict[str, Any]:
        return dict(await self.call("POST", "/reload", retry_for=10.0) or {})
