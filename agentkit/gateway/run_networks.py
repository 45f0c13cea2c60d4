"""One small internal network per agent run, shared only with the gateway.

Agents on one bridge reach each other (Docker's ``enable_icc=false`` would cut them off from the
gateway on that bridge too, and the gateway has no NET_ADMIN to open a way back). So each run
gets its own network: ``Internal`` (no route off the host), no host address on its bridge
(``inhibit_ipv4``), a ``/29`` taken from ``AGENTKIT_AGENT_SUBNET_POOL`` (Docker's default address
pools hold about 30 networks; 200 runs need an explicit range), and the gateway connected to it
under its own name and the alias ``gateway``. The run's container is its only other member; when
the run ends both leave and the network is removed (:meth:`RunNetworks.remove`); networks left by
a controller that died are swept (:meth:`RunNetworks.sweep`). Measured costs and limits:
docs/security.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT, MANAGED_BY
from agentkit.errors import AgentkitError, ConfigError, ConflictError, NotFoundError
from agentkit.runtimes.docker_engine import docker_errors

if TYPE_CHECKING:
    import aiodocker

__all__ = ["LABEL_RUN", "RUN_PREFIX", "RunNetworks", "free_subnet", "parse_pool"]

logger = logging.getLogger("agentkit.gateway")

LABEL_RUN = "agentkit.run"
LABEL_NET_ROLE = "agentkit.role"
NET_ROLE = "run-network"
LABEL_CREATED = "agentkit.created"
#: prefix length of one run's network: network, Docker's reserved first address, the gateway,
#: the agent and the broadcast address fit in 8
RUN_PREFIX = 29
#: an empty run network younger than this is a spawn in progress: not swept
SWEEP_AFTER_S = 120.0
_ATTEMPTS = 8


def parse_pool(pool: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(pool.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"AGENTKIT_AGENT_SUBNET_POOL={pool!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > RUN_PREFIX:
        raise ConfigError(
            f"AGENTKIT_AGENT_SUBNET_POOL={pool!r}: an IPv4 range of /{RUN_PREFIX} or larger"
        )
    return net


def free_subnet(
    pool: ipaddress.IPv4Network, used: Iterable[str], skip: Iterable[str] = ()
) -> ipaddress.IPv4Network | None:
    """The first ``/29`` of ``pool`` overlapping none of ``used`` (subnets) nor ``skip``."""
    taken: list[ipaddress.IPv4Network] = []
    for text in [*used, *skip]:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.overlaps(pool):
            taken.append(net)
    taken.sort()
    for candidate in pool.subnets(new_prefix=RUN_PREFIX):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    return None


def _subnets_of(network: dict[str, Any]) -> list[str]:
    configs = (network.get("IPAM") or {}).get("Config") or []
    return [str(c["Subnet"]) for c in configs if isinstance(c, dict) and c.get("Subnet")]


class RunNetworks:
    """Creates, joins and removes the per-run networks of one gateway."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        root: str,
        gateway: str,
        prefix: str,
        pool: str,
        socket: str,
    ) -> None:
        self.docker = docker
        self.root = root
        self.gateway = gateway
        self.prefix = prefix
        self.pool_text = pool
        self.socket = socket
        self._lock = asyncio.Lock()  # one allocation at a time in this controller
        #: subnets in use by any network, listed once (listing every network at each spawn
        #: grows with the networks present); refreshed when the engine reports an overlap
        self._used: set[str] | None = None
        self._mine: dict[str, str] = {}  # network name -> the subnet this controller gave it

    def name(self, run_id: str) -> str:
        return f"{self.prefix}-{run_id}"

    @property
    def pool(self) -> ipaddress.IPv4Network:
        return parse_pool(self.pool_text)

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        resp = await self.docker._do_query(
            path,
            "POST",
            data=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        try:
            await resp.read()
        finally:
            resp.release()

    async def _list(self, *, ours: bool) -> list[dict[str, Any]]:
        params = {}
        if ours:
            labels = [f"{LABEL_ROOT}={self.root}", f"{LABEL_NET_ROLE}={NET_ROLE}"]
            params = {"filters": json.dumps({"label": labels})}
        with docker_errors("list networks", self.socket):
            found = await self.docker._query_json("networks", params=params)
        return [n for n in found if isinstance(n, dict)]

    async def create(self, run_id: str) -> str:
        """The run's network, created with the gateway on it; returns its name."""
        pool = self.pool
        name = self.name(run_id)
        skip: list[str] = []
        async with self._lock:
            fresh = False
            for _ in range(_ATTEMPTS):
                if self._used is None:
                    fresh = True
                    self._used = {s for n in await self._list(ours=False) for s in _subnets_of(n)}
                subnet = free_subnet(pool, self._used, skip)
                if subnet is None and not fresh:  # the remembered list may be stale: look again
                    self._used, fresh = None, True
                    continue
                if subnet is None:
                    raise ConfigError(
                        f"AGENTKIT_AGENT_SUBNET_POOL={self.pool_text} has no free /{RUN_PREFIX} "
                        "left for another agent network: stop agents or give a larger range"
                    )
                body = {
                    "Name": name,
                    "Driver": "bridge",
                    "Internal": True,
                    "CheckDuplicate": True,
                    "Labels": {
                        LABEL_MANAGED_BY: MANAGED_BY,
                        LABEL_ROOT: self.root,
                        LABEL_NET_ROLE: NET_ROLE,
                        LABEL_RUN: run_id,
                        LABEL_CREATED: f"{time.time():.3f}",
                    },
                    "IPAM": {"Driver": "default", "Config": [{"Subnet": str(subnet)}]},
                    # no address for the host on the bridge: nothing the host serves is reachable
                    "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"},
                }
                try:
                    with docker_errors(f"create network {name}", self.socket):
                        await self.docker._query_json("networks/create", method="POST", data=body)
                    self._used.add(str(subnet))
                    self._mine[name] = str(subnet)
                    break
                except ConflictError:  # the name exists (a retried spawn): reuse it
                    break
                except AgentkitError as exc:
                    if "overlap" not in str(exc).lower():
                        raise
                    skip.append(str(subnet))  # taken by someone else meanwhile: look again
                    self._used = None
            else:
                raise ConfigError(f"could not find a free subnet for {name}")
        await self.join(name)
        return name

    async def join(self, name: str) -> None:
        """Connect the gateway to ``name`` (already connected: fine)."""
        body = {"Container": self.gateway, "EndpointConfig": {"Aliases": ["gateway"]}}
        try:
            with docker_errors(f"connect {self.gateway} to {name}", self.socket):
                await self._post(f"networks/{name}/connect", body)
        except AgentkitError as exc:
            if "already exists" not in str(exc):
                raise

    async def join_all(self) -> int:
        """Connect the gateway to every run network of this root (after it was recreated)."""
        joined = 0
        for net in await self._list(ours=True):
            if self.gateway in _member_names(net, await self._inspect(net)):
                continue
            try:
                await self.join(str(net.get("Name")))
                joined += 1
            except AgentkitError as exc:
                logger.warning("could not reconnect the gateway to %s: %s", net.get("Name"), exc)
        return joined

    async def _inspect(self, net: dict[str, Any]) -> dict[str, Any]:
        with docker_errors(f"inspect network {net.get('Name')}", self.socket):
            data = await self.docker._query_json(f"networks/{net.get('Id') or net.get('Name')}")
        return dict(data)

    async def remove(self, run_id: str) -> bool:
        """The run ended: it and the gateway leave its network, which is removed."""
        name = self.name(run_id)
        for member in (run_id, self.gateway):
            try:
                with docker_errors(f"disconnect {member} from {name}", self.socket):
                    await self._post(
                        f"networks/{name}/disconnect", {"Container": member, "Force": True}
                    )
            except NotFoundError:
                continue  # the member or the network is gone already
            except AgentkitError as exc:
                logger.debug("disconnect %s from %s: %s", member, name, exc)
        try:
            with docker_errors(f"remove network {name}", self.socket):
                resp = await self.docker._do_query(f"networks/{name}", "DELETE")
                resp.release()
            removed = True
        except NotFoundError:
            removed = False
        subnet = self._mine.pop(name, None)
        if subnet is not None and self._used is not None:
            self._used.discard(subnet)
        return removed

    async def sweep(self, live: Iterable[str] = ()) -> int:
        """Remove run networks whose run is gone (only the gateway, or nobody, left on them)."""
        keep = set(live)
        removed = 0
        now = time.time()
        for net in await self._list(ours=True):
            labels = net.get("Labels") or {}
            run_id = str(labels.get(LABEL_RUN) or "")
            if not run_id or run_id in keep:
                continue
            try:
                created = float(labels.get(LABEL_CREATED) or 0)
            except ValueError:
                created = 0.0
            if now - created < SWEEP_AFTER_S:
                continue
            try:
                members = _member_names(net, await self._inspect(net))
            except NotFoundError:
                continue
            if members - {self.gateway}:
                continue  # its agent is still there
            try:
                if await self.remove(run_id):
                    removed += 1
            except AgentkitError as exc:
                logger.warning("could not remove the network of ended run %s: %s", run_id, exc)
        return removed


def _member_names(listed: dict[str, Any], inspected: dict[str, Any]) -> set[str]:
    containers = inspected.get("Containers") or listed.get("Containers") or {}
    return {str(c.get("Name")) for c in containers.values() if isinstance(c, dict)}
