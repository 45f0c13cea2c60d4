"""The gateway process: config file, ledger, model proxy, admin socket and squid, together.

Layout inside the gateway container (see ``Dockerfile.gateway``):

* ``/etc/agentkit-gateway/config.json`` (mode 0400, root): written by the controller through
  the Engine API's archive upload before the container starts, never passed in argv or the
  environment. Holds the upstream URL and key, the fleet budget, price overrides and the
  expanded egress allowlist. ``POST /reload`` on the admin socket re-reads it.
* ``/var/lib/agentkit-gateway/`` (bind mount of ``<AGENTKIT_ROOT>/gateway`` on the agent host):
  ``ledger.sqlite``, ``admin.sock`` and ``runs/<run id>/`` (the socket transport's ``api.sock``
  and ``proxy.sock`` of each run: :mod:`.run_sockets`).

``python3 -m agentkit_gateway`` (the package as copied into the image) runs :func:`main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .addresses import address_in, addresses_in
from .admin import admin_app
from .budgets import RunEntry, day_start
from .egress import parse_access_line, squid_config
from .egress_record import EgressRecorder, EgressRow
from .ledger import AsyncLedger, Ledger
from .peers import BODY_TIMEOUT, HEAD_TIMEOUT, PeerLimit
from .pricing import PriceTable, parse_overrides
from .proxy import (
    ANSWER_TIMEOUT,
    DRAIN_MAX_BYTES,
    DRAIN_TIMEOUT,
    WRITE_TIMEOUT,
    Gateway,
    Upstream,
)
from .run_sockets import FOLDER_GRACE, RunSockets
from .squid import Squid

__all__ = ["GatewayConfig", "main", "serve"]

logger = logging.getLogger("agentkit.gateway")

CONFIG_PATH = "/etc/agentkit-gateway/config.json"
STATE_DIR = "/var/lib/agentkit-gateway"
SQUID_CONF = "/run/agentkit-squid/squid.conf"
#: seconds between two prunings of the ledger (and sweeps of ended runs' socket folders)
PRUNE_EVERY = 3600.0


@dataclass(slots=True)
class GatewayConfig:
    upstream_url: str = "https://api.anthropic.com"
    api_key: str | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)
    fleet_daily_usd: float | None = None
    pricing: str | None = None
    egress_allow: list[str] = field(default_factory=list)
    own_names: list[str] = field(default_factory=list)
    agent_subnets: list[str] = field(default_factory=list)
    api_port: int = 8080
    proxy_port: int = 3128
    #: per-request ledger rows older than this (seconds) are folded into daily aggregates
    ledger_retention_s: float | None = None
    #: seconds a connection may take to send a request's head (from its opening, or from the
    #: end of the previous answer on a kept-alive connection)
    head_timeout: float = HEAD_TIMEOUT
    #: seconds a request's body may take to arrive
    body_timeout: float = BODY_TIMEOUT
    #: bounds on reading the rest of an answer whose agent hung up (seconds, bytes)
    drain_timeout: float = DRAIN_TIMEOUT
    drain_max_bytes: int = DRAIN_MAX_BYTES
    #: forward server-side tools, the MCP connector and URL sources (the model API then
    #: reaches addresses past the egress allowlist); off: refused with a 400
    server_tools: bool = False
    #: seconds one write of an answer may wait for its agent to take the data, and seconds one
    #: answer may be relayed in all; past either the agent is cut off (the rest is drained)
    write_timeout: float = WRITE_TIMEOUT
    answer_timeout: float = ANSWER_TIMEOUT

    @classmethod
    def read(cls, path: str) -> GatewayConfig:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


async def serve(
    config_path: str = CONFIG_PATH,
    state_dir: str = STATE_DIR,
    squid_conf: str = SQUID_CONF,
    *,
    host: str | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the gateway until ``stop`` is set (or SIGTERM/SIGINT in :func:`main`).

    The model API listens on ``host``, by default on each of the gateway's own addresses on the
    agents' networks (``agent_subnets``; ``POST /listen`` on the admin socket binds the ones a
    newly joined run network brought): never on the outward network the container also sits
    on."""
    config = await asyncio.to_thread(GatewayConfig.read, config_path)
    if host is None:
        address_in(config.agent_subnets)  # raises when there is none: never every interface
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    ledger = AsyncLedger(os.path.join(state_dir, "ledger.sqlite"))
    await ledger.open()
    gateway = Gateway(
        ledger,
        Upstream(config.upstream_url, config.api_key, config.auth_token),
        PriceTable(parse_overrides(config.pricing)),
    )
    gateway.runs.fleet_daily_usd = config.fleet_daily_usd
    gateway.bodies.allow_server_tools = config.server_tools
    gateway.body_timeout = config.body_timeout
    gateway.drain_timeout = config.drain_timeout
    gateway.drain_max_bytes = config.drain_max_bytes
    gateway.write_timeout = config.write_timeout
    gateway.answer_timeout = config.answer_timeout
    await gateway.open()
    await _load_runs(gateway)
    pruning = asyncio.create_task(_prune_forever(ledger, lambda: config.ledger_retention_s))
    # bounded and batched: an agent flooding squid with refused requests costs next to nothing
    refusals = EgressRecorder(ledger, gateway.background)

    def on_squid_line(line: str) -> None:
        access = parse_access_line(line)
        if access is None or not access.refused:
            return
        run_id = access.run_id  # the run squid checked the login of, never guessed by address
        refusals.offer(
            EgressRow(access.at, run_id, access.client, access.method, access.target, access.result)
        )

    squid = Squid(squid_conf, on_squid_line, login=gateway.runs.login)

    def squid_text(cfg: GatewayConfig) -> str:
        return squid_config(
            cfg.egress_allow,
            port=cfg.proxy_port,
            log_port=squid.log_port,
            own_names=cfg.own_names,
            # the socket transport's proxy connections come from the gateway's own loopback,
            # from one address per run (run_sockets.SOURCE_BASE)
            clients=[*cfg.agent_subnets, "127.0.0.0/8"],
            auth_helper=squid.auth_helper,
        )

    async def reload() -> dict[str, Any]:
        nonlocal config
        new = await asyncio.to_thread(GatewayConfig.read, config_path)
        gateway.upstream = Upstream(new.upstream_url, new.api_key, new.auth_token)
        gateway.prices = PriceTable(parse_overrides(new.pricing))
        gateway.runs.fleet_daily_usd = new.fleet_daily_usd
        gateway.bodies.allow_server_tools = new.server_tools
        if squid_text(new) != squid_text(config) or squid.state() != "running":
            await squid.restart(squid_text(new))
        config = new
        return {"reloaded": True, "squid": squid.state()}

    listeners: dict[str, asyncio.Server] = {}
    listening = asyncio.Lock()  # a burst of spawns asks at once: one bind per address

    async def listen() -> dict[str, Any]:
        """Listen on each agents'-network address this gateway has now; drop vanished ones.

        An address that cannot be bound (its network left between the look and the bind) is
        reported, not fatal: the others still listen."""
        async with listening:
            wanted = [host] if host is not None else addresses_in(config.agent_subnets)
            loop = asyncio.get_running_loop()
            failed: dict[str, str] = {}
            for address in wanted:
                if address in listeners:
                    continue
                try:
                    listeners[address] = await loop.create_server(
                        limits, address, config.api_port, reuse_address=True
                    )
                except OSError as exc:
                    failed[address] = f"{type(exc).__name__}: {exc}"
                    logger.warning("cannot listen on %s:%s: %s", address, config.api_port, exc)
            for address in set(listeners) - set(wanted):
                listeners.pop(address).close()
            return {"api": sorted(listeners), "failed": failed}

    limits = PeerLimit(head_timeout=config.head_timeout)
    sockets = RunSockets(
        os.path.join(state_dir, "runs"), limits.keyed, config.proxy_port, cut_api=limits.cut
    )
    admin = admin_app(gateway, reload, squid.state, listen, sockets)
    api_runner = web.AppRunner(
        gateway.app(middlewares=[limits.middleware]), access_log=None, handle_signals=False
    )
    admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False)
    await api_runner.setup()
    await admin_runner.setup()
    sock_path = os.path.join(state_dir, "admin.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    # not web.TCPSite: the server's protocol factory is wrapped in a per-address connection cap
    # and a deadline for each request's head
    assert api_runner.server is not None
    limits.factory = api_runner.server
    started = await listen()
    if started["failed"]:
        raise RuntimeError(f"the model API cannot listen: {started['failed']}")
    await _reopen_sockets(gateway, sockets)
    sweeping = asyncio.create_task(_sweep_sockets_forever(gateway, sockets))
    await squid.start(squid_text(config))
    # the admin socket last: once it answers, the proxy and squid are up
    await web.UnixSite(admin_runner, sock_path).start()
    os.chmod(sock_path, 0o600)
    logger.info(
        "gateway up: api %s:%s, proxy :%s, upstream %s",
        ",".join(sorted(listeners)),
        config.api_port,
        config.proxy_port,
        config.upstream_url,
    )
    if ready is not None:
        ready.set()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        for task in (pruning, sweeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await squid.close()
        await admin_runner.cleanup()
        sockets.close_all()
        for server in listeners.values():
            server.close()
        await api_runner.cleanup()
        await gateway.close()
        await ledger.close()


async def _prune_forever(ledger: AsyncLedger, retention: Callable[[], float | None]) -> None:
    """Fold old ledger rows into daily aggregates now and every :data:`PRUNE_EVERY` seconds
    (the retention is read each time: a reload changes it)."""
    while True:
        keep = retention()
        if keep:
            try:
                before = time.time() - keep
                gone = await ledger.run(functools.partial(Ledger.prune, before=before))
            except Exception:  # a busy or broken ledger: try again next time
                logger.exception("pruning the ledger failed")
            else:
                if gone:
                    logger.info("ledger: %d request rows folded into daily aggregates", gone)
        await asyncio.sleep(PRUNE_EVERY)


async def _load_runs(gateway: Gateway) -> None:
    """Tokens, spending and today's fleet total from the ledger (after a restart)."""
    now = time.time()
    start = day_start(now)
    rows, day = await gateway.ledger.run(
        lambda db: (db.runs(active_only=True), db.spent_since(start))
    )
    for row in rows:
        entry = RunEntry(
            row.run_id,
            row.workspace,
            row.max_cost_usd,
            row.expires,
            spent_usd=row.spent_usd,
            budget_reason=row.budget_reason,
        )
        gateway.runs.add(row.token_sha256, entry)
    gateway.runs.set_day(start, day)


async def _sweep_sockets(gateway: Gateway, sockets: RunSockets) -> None:
    """The folders of runs that ended a while ago go (their sockets at once)."""
    live = {e.run_id for e in gateway.runs.by_id.values() if not e.ended}
    for run_id in await sockets.sweep(live, older_than=FOLDER_GRACE):
        logger.info("removed the sockets folder of ended run %s", run_id)


async def _sweep_sockets_forever(gateway: Gateway, sockets: RunSockets) -> None:
    while True:
        await asyncio.sleep(PRUNE_EVERY)
        try:
            await _sweep_sockets(gateway, sockets)
        except OSError:
            logger.exception("sweeping the run sockets' folders failed")


async def _reopen_sockets(gateway: Gateway, sockets: RunSockets) -> None:
    """After a restart: the sockets of runs still going listen again (their agents' mounts hold
    the folders); the folders of runs that ended meanwhile go."""
    live = {e.run_id for e in gateway.runs.by_id.values() if not e.ended}
    await _sweep_sockets(gateway, sockets)
    for run_id in sorted(live):
        if await asyncio.to_thread(os.path.isdir, sockets.path(run_id)):  # socket transport
            try:
                await sockets.open(run_id)
            except (OSError, ValueError) as exc:
                logger.warning("cannot reopen the sockets of %s: %s", run_id, exc)


def raise_open_files() -> int:
    """The soft open-file limit raised to the hard one (no capability needed): the model API
    and the run sockets' splices hold descriptors for every agent's connections (the engine's
    default soft limit is often 1024). Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return int(soft)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.info("open files: %d", raise_open_files())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop=stop)

    asyncio.run(run())
