"""The gateway's admin API: HTTP on a unix socket only the controller reaches.

The socket lives in the gateway's state folder on the agent host (``<AGENTKIT_ROOT>/gateway``,
mode 0700, never mounted into agents); the controller reaches it like the Docker socket - the
path itself locally, a forwarded socket over SSH. Routes (JSON in and out):

==========================  =====================================================================
``GET /health``             alive; squid state; active runs
``POST /runs``              register a run: ``run_id``, ``token_sha256``, ``workspace``,
                            ``max_cost_usd``, ``expires`` (the token itself never travels)
``POST /runs/{id}/end``     the run ended: its token dies (and its sockets with their
                            connections); answers the run's summary
``GET /runs?id=..``         summaries (cost, tokens, requests, budget state) of runs
``GET /runs/{id}/egress``   refused outbound connections of a run
``POST /usage``             record the outer agent's own usage (priced here if no cost given)
``GET /usage?since=..``     ledger rows since a unix time
``POST /reload``            re-read the config file (upstream, budgets, prices, allowlist)
``POST /listen``            the model API listens on the addresses of newly joined run networks
``POST /runs/{id}/sockets`` the socket transport: the run's ``api.sock`` and ``proxy.sock``
                            listen in ``runs/<id>/`` of the state folder (:mod:`.run_sockets`)
``DELETE /runs/{id}/sockets``  they stop and go (the empty folder a day later)
==========================  =====================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .budgets import RunEntry
from .ledger import Ledger, RunTotals, UsageRow, summary
from .pricing import TokenCounts
from .proxy import Gateway
from .run_sockets import RunSockets, check_run_id

__all__ = ["admin_app"]

_MAX_IDS = 1000
#: seconds ``POST /runs/{id}/end`` waits for the run's answers still in flight to be metered
#: (the controller's admin calls time out after 30 s)
END_WAIT = 20.0


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _opt_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _opt_str(data: dict[str, Any], key: str, limit: int = 500) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key} must be a string of at most {limit} characters")
    return value


async def _json(request: web.Request) -> dict[str, Any]:
    data = await request.json()
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def admin_app(
    gateway: Gateway,
    reload: Callable[[], Awaitable[dict[str, Any]]],
    squid_state: Callable[[], str] | None = None,
    listen: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    sockets: RunSockets | None = None,
) -> web.Application:
    """The admin routes over ``gateway``; ``reload`` re-reads the config file."""
    routes = web.RouteTableDef()

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "runs": sum(1 for e in gateway.runs.by_id.values() if not e.ended),
                "squid": squid_state() if squid_state is not None else None,
                "upstream": gateway.upstream.url,
            }
        )

    @routes.post("/runs")
    async def register(request: web.Request) -> web.Response:
        try:
            data = await _json(request)
            run_id = _opt_str(data, "run_id", 100)
            digest = _opt_str(data, "token_sha256", 64)
            workspace = _opt_str(data, "workspace", 4096)
            max_cost = _opt_float(data, "max_cost_usd")
            expires = _opt_float(data, "expires")
        except ValueError as exc:
            return _bad(str(exc))
        if not run_id or not digest or len(digest) != 64:
            return _bad("run_id and token_sha256 (64 hex digits) are required")
        await gateway.ledger.run(
            lambda db: db.register_run(
                run_id, digest, workspace=workspace, max_cost_usd=max_cost, expires=expires
            )
        )
        gateway.runs.add(digest, RunEntry(run_id, workspace, max_cost, expires))
        return web.json_response({"run_id": run_id, "registered": True})

    @routes.post("/runs/{run_id}/end")
    async def end(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        gateway.runs.end(run_id)
        if sockets is not None:  # its sockets (if any) stop and its connections are cut
            with contextlib.suppress(ValueError):
                await sockets.close(check_run_id(run_id))
        # its answers still in flight (those drained after a hang-up among them) are metered
        # first; past the wait the summary says it is provisional
        settled = True
        try:
            async with asyncio.timeout(min(gateway.drain_timeout, END_WAIT)):
                await gateway.settle(run_id)
        except TimeoutError:
            settled = False
        await gateway.drain()
        now = time.time()

        def close(db: Ledger) -> dict[str, Any] | None:
            db.end_run(run_id, now)
            return _summaries(db, [run_id]).get(run_id)

        found = await gateway.ledger.run(close)
        if found is None:
            return web.json_response({"error": f"no run {run_id}"}, status=404)
        if not settled:
            found["provisional"] = True
        return web.json_response(found)

    @routes.get("/runs")
    async def runs(request: web.Request) -> web.Response:
        ids = request.query.getall("id", [])[:_MAX_IDS]
        await gateway.drain()
        found = await gateway.ledger.run(lambda db: _summaries(db, ids))
        return web.json_response({"runs": found})

    @routes.get("/runs/{run_id}/egress")
    async def egress(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        try:
            limit = min(int(request.query.get("limit", "200")), 10_000)
        except ValueError:
            return _bad("limit must be an integer")
        await gateway.drain()
        rows = await gateway.ledger.run(lambda db: db.egress(run_id, limit=limit))
        return web.json_response({"run_id": run_id, "refused": rows})

    @routes.post("/usage")
    async def add_usage(request: web.Request) -> web.Response:
        try:
            data = await _json(request)
            model = _opt_str(data, "model", 200)
            cost = _opt_float(data, "cost_usd")
            row_source = _opt_str(data, "source", 40) or "controller"
            workspace = _opt_str(data, "workspace", 4096)
            run_id = _opt_str(data, "run_id", 100)
            note = _opt_str(data, "note", 500)
        except ValueError as exc:
            return _bad(str(exc))
        tokens = TokenCounts.from_mapping(data)
        if cost is None:
            cost = gateway.prices.cost(model or "", tokens)
        row = UsageRow(
            at=time.time(),
            source=row_source,
            run_id=run_id,
            workspace=workspace,
            model=model,
            status=None,
            tokens=tokens,
            cost_usd=cost,
            note=note,
        )
        await gateway.ledger.run(lambda db: db.record_usage(row))
        gateway.runs.add_cost(None, cost, row.at)
        return web.json_response({"cost_usd": cost})

    @routes.get("/usage")
    async def usage(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
            limit = min(int(request.query.get("limit", "100000")), 1_000_000)
        except ValueError:
            return _bad("since must be a unix time and limit an integer")
        await gateway.drain()
        rows = await gateway.ledger.run(lambda db: db.usage(since=since, limit=limit))
        return web.json_response({"rows": [r.to_dict() for r in rows]})

    @routes.post("/reload")
    async def do_reload(request: web.Request) -> web.Response:
        return web.json_response(await reload())

    @routes.post("/listen")
    async def do_listen(request: web.Request) -> web.Response:
        if listen is None:
            return web.json_response({"error": "not supported"}, status=404)
        return web.json_response(await listen())

    def run_sockets(request: web.Request) -> tuple[RunSockets, str] | web.Response:
        """The gateway's run sockets and the route's run id, or the answer saying why not."""
        if sockets is None:
            return web.json_response({"error": "not supported"}, status=404)
        try:
            return sockets, check_run_id(request.match_info["run_id"])
        except ValueError as exc:
            return _bad(str(exc))

    @routes.post("/runs/{run_id}/sockets")
    async def open_sockets(request: web.Request) -> web.Response:
        found = run_sockets(request)
        if isinstance(found, web.Response):
            return found
        served, run_id = found
        try:
            where = await served.open(run_id)
        except OSError as exc:
            return web.json_response(
                {"error": f"cannot listen for {run_id}: {type(exc).__name__}: {exc}"}, status=500
            )
        return web.json_response({"run_id": run_id, "folder": where})

    @routes.delete("/runs/{run_id}/sockets")
    async def close_sockets(request: web.Request) -> web.Response:
        found = run_sockets(request)
        if isinstance(found, web.Response):
            return found
        served, run_id = found
        return web.json_response({"run_id": run_id, "closed": await served.close(run_id)})

    app = web.Application(client_max_size=1 << 20)
    app.add_routes(routes)
    return app


def _summaries(db: Ledger, ids: list[str]) -> dict[str, dict[str, Any]]:
    runs = db.runs(ids=ids)
    totals = db.run_totals([r.run_id for r in runs])
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        spent = totals.get(run.run_id, RunTotals())
        out[run.run_id] = dict(summary(run, spent.tokens, spent.requests))
    return out
