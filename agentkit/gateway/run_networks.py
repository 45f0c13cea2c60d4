"""One small internal network per agent run, shared only with the gateway.

Agents on one bridge reach each other (Docker's ``enable_icc=false`` would cut them off from the
gateway on that bridge too, and the gateway has no NET_ADMIN to open a way back). So each run
gets its own network: ``Internal`` (no route off the host), no host address on its bridge
(``inhibit_ipv4``), a ``/29`` taken from ``AGENTKIT_AGENT_SUBNET_POOL`` (Docker's default address
pools hold about 30 networks; 200 runs need an explicit range), and the gateway connected to it
under its own name and the alias ``gateway``. The run's container is its only other member; when
the run ends both leave and the network is removed (:meth:`RunNetworks.remove`); networks left by
a controller that died are swept (:meth:`RunNetworks.sweep`).

Creating a network and connecting the running gateway to it costs ~0.2 s of engine work that
the engine does one at a time for one container: in a burst of 20 spawns it was the longest
step (3.1 s at the median). So each controller keeps **spares** (``AGENTKIT_AGENT_NETWORK_SPARES``):
networks made ahead, in the background, with the gateway already on them and its model API
listening there. A spawn takes one (never shared: a spare belongs to the controller that made
it, ``agentkit.pool`` label, and is handed to one run only) and the pool refills behind it once
spawns pause for a second (a refill amid a burst would slow the burst's own starts); with
none left a network is made for the run on the spot. A spare is never reused after its run.
Measured costs and limits: docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT, MANAGED_BY
from agentkit.errors import AgentkitError, ConfigError, ConflictError, NotFoundError
from agentkit.runtimes.docker_engine import docker_errors

if TYPE_CHECKING:
    import aiodocker

__all__ = ["LABEL_POOL", "LABEL_RUN", "RUN_PREFIX", "RunNetworks", "free_subnet", "parse_pool"]

logger = logging.getLogger("agentkit.gateway")

LABEL_RUN = "agentkit.run"
LABEL_NET_ROLE = "agentkit.role"
NET_ROLE = "run-network"
LABEL_CREATED = "agentkit.created"
#: on a spare: the controller (one :class:`RunNetworks`) that made it and alone may hand it out
LABEL_POOL = "agentkit.pool"
#: prefix length of one run's network: network, Docker's reserved first address, the gateway,
#: the agent and the broadcast address fit in 8
RUN_PREFIX = 29
#: an empty run network younger than this is a spawn in progress: not swept
SWEEP_AFTER_S = 120.0
_ATTEMPTS = 8
#: a controller hands out its spares younger than this, replacing older ones ...
SPARE_MAX_AGE_S = 1800.0
#: ... so another controller's spare older than this (and empty) was left by a controller gone
SPARE_ORPHAN_S = 3600.0
#: how often the pool looks for spares to replace when no spawn woke it
REFRESH_S = 300.0
#: the pool refills once spawns paused this long: a burst's own creates and starts go first
REFILL_QUIET_S = 1.0


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
        spares: int = 0,
        listen: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.docker = docker
        self.root = root
        self.gateway = gateway
        self.prefix = prefix
        self.pool_text = pool
        self.socket = socket
        self.spares_wanted = spares
        self._listen = listen  # makes the model API answer on newly joined networks
        self._lock = asyncio.Lock()  # subnet choice (in memory only: creates overlap)
        #: subnets in use by any network, listed once (listing every network at each spawn
        #: grows with the networks present); refreshed when the engine reports an overlap
        self._used: set[str] | None = None
        self._mine: dict[str, str] = {}  # network name -> the subnet this controller gave it
        self.pool_id = secrets.token_hex(6)
        self._spares: list[tuple[str, float]] = []  # (name, created) ready to hand out
        self._taken: dict[str, str] = {}  # run id -> the network it was given
        self._wake = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self.filled = asyncio.Event()  # set whenever the pool holds all the spares wanted
        self._removals: set[asyncio.Task[None]] = set()
        self._last_take = 0.0  # monotonic time of the last spawn that asked for a network
        self._took = asyncio.Event()  # set by each such spawn

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
        """The run's network with the gateway on it (a spare if one is ready); returns its name.
        A network made on the spot still needs the model API to listen on it
        (:meth:`needs_listen`)."""
        now = time.time()
        self._last_take = time.monotonic()
        self._took.set()
        while self._spares:
            name, made = self._spares.pop(0)
            if now - made < SPARE_MAX_AGE_S:
                self._taken[run_id] = name
                self._wake_filler()
                return name
            self._background_remove(name)
        self._wake_filler()
        name = self.name(run_id)
        await self._make(name, {LABEL_RUN: run_id})
        await self.join(name)
        self._taken[run_id] = name
        return name

    def network(self, run_id: str) -> str:
        """The network given to ``run_id`` (its own name if this controller gave it none)."""
        return self._taken.get(run_id) or self.name(run_id)

    def needs_listen(self, run_id: str) -> bool:
        """Whether the run's network was made for it (a spare is listened on already)."""
        return self._taken.get(run_id) == self.name(run_id)

    async def _make(self, name: str, labels: dict[str, str]) -> None:
        """Create one internal run network of a free subnet of the pool."""
        pool = self.pool
        skip: list[str] = []
        for _ in range(_ATTEMPTS):
            async with self._lock:  # the choice is in memory; creates run side by side
                fresh = False
                if self._used is None:
                    fresh = True
                    self._used = {s for n in await self._list(ours=False) for s in _subnets_of(n)}
                subnet = free_subnet(pool, self._used, skip)
                if subnet is None and not fresh:  # the remembered list may be stale: look again
                    self._used = {s for n in await self._list(ours=False) for s in _subnets_of(n)}
                    subnet = free_subnet(pool, self._used, skip)
                if subnet is None:
                    raise ConfigError(
                        f"AGENTKIT_AGENT_SUBNET_POOL={self.pool_text} has no free /{RUN_PREFIX} "
                        "left for another agent network: stop agents or give a larger range"
                    )
                self._used.add(str(subnet))
            body = {
                "Name": name,
                "Driver": "bridge",
                "Internal": True,
                "CheckDuplicate": True,
                "Labels": {
                    LABEL_MANAGED_BY: MANAGED_BY,
                    LABEL_ROOT: self.root,
                    LABEL_NET_ROLE: NET_ROLE,
                    LABEL_CREATED: f"{time.time():.3f}",
                    **labels,
                },
                "IPAM": {"Driver": "default", "Config": [{"Subnet": str(subnet)}]},
                # no address for the host on the bridge: nothing the host serves is reachable
                "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"},
            }
            try:
                with docker_errors(f"create network {name}", self.socket):
                    await self.docker._query_json("networks/create", method="POST", data=body)
                self._mine[name] = str(subnet)
                return
            except ConflictError:  # the name exists (a retried spawn): reuse it
                self._release_subnet(str(subnet))
                return
            except AgentkitError as exc:
                self._release_subnet(str(subnet))
                if "overlap" not in str(exc).lower():
                    raise
                skip.append(str(subnet))  # taken by someone else meanwhile: look again
                self._used = None
        raise ConfigError(f"could not find a free subnet for {name}")

    def _release_subnet(self, subnet: str) -> None:
        if self._used is not None:
            self._used.discard(subnet)

    # --- spares -------------------------------------------------------------------------------

    def start_spares(self) -> None:
        """Keep :attr:`spares_wanted` spares ready from now on (in a background task)."""
        if self.spares_wanted <= 0:
            self.filled.set()
            return
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill(), name="agentkit-run-network-spares")
        self._wake_filler()

    def _wake_filler(self) -> None:
        if len(self._spares) < self.spares_wanted:
            self.filled.clear()
        self._wake.set()

    async def _fill(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            for name, made in [sp for sp in self._spares if now - sp[1] >= SPARE_MAX_AGE_S]:
                self._spares.remove((name, made))
                self._background_remove(name)
            while len(self._spares) < self.spares_wanted:
                await self._quiet()
                name = f"{self.prefix}-s{secrets.token_hex(5)}"
                try:
                    await self._make(name, {LABEL_POOL: self.pool_id})
                    await self.join(name)
                    if self._listen is not None:  # offered only once the model API answers
                        await self._listen()
                except asyncio.CancelledError:  # closing: the half-made spare goes too
                    await asyncio.shield(self._drop(name))
                    raise
                except AgentkitError as exc:
                    logger.warning("could not make a spare agent network: %s", exc)
                    await self._drop(name)
                    break  # try again at the next spawn or refresh
                self._spares.append((name, time.time()))
            if len(self._spares) >= self.spares_wanted:
                self.filled.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._wake.wait()

    async def _quiet(self) -> None:
        """Wait until no spawn asked for a network for :data:`REFILL_QUIET_S` (a refill made
        during a burst competes with the burst's own engine work)."""
        while True:
            self._took.clear()
            quiet_at = self._last_take + REFILL_QUIET_S
            try:
                async with asyncio.timeout(max(quiet_at - time.monotonic(), 0.0)):
                    await self._took.wait()  # another spawn: the quiet starts again
            except TimeoutError:
                return

    def _background_remove(self, name: str) -> None:
        task = asyncio.create_task(self._drop(name), name="agentkit-run-network-remove")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _drop(self, name: str) -> None:
        try:
            await self._leave_and_delete(name, ())
        except AgentkitError as exc:
            logger.warning("could not remove the agent network %s: %s", name, exc)

    async def aclose(self) -> None:
        """Stop refilling and remove the spares no run took (they belong to no one else)."""
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
            self._filler = None
        spares, self._spares = self._spares, []
        for name, _ in spares:
            self._background_remove(name)
        if self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)

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
        name = self._taken.pop(run_id, None) or await self._network_of(run_id)
        return await self._leave_and_delete(name, (run_id,))

    async def _network_of(self, run_id: str) -> str:
        """The run network ``run_id``'s container is on (a run this controller did not start,
        e.g. before a restart); its own name if the container says nothing."""
        try:
            with docker_errors(f"inspect {run_id}", self.socket):
                data = await self.docker._query_json(f"containers/{run_id}/json")
        except AgentkitError:
            return self.name(run_id)
        nets = ((data.get("NetworkSettings") or {}).get("Networks")) or {}
        for net in nets:
            if str(net).startswith(f"{self.prefix}-"):
                return str(net)
        return self.name(run_id)

    async def _leave_and_delete(self, name: str, members: Iterable[str]) -> bool:
        for member in (*members, self.gateway):
            try:
                with docker_errors(f"disconnect {member} from {name}", self.socket):
                    await self._post(
                        f"networks/{name}/disconnect", {"Container": member, "Force": True}
                    )
            except NotFoundError:
                continue  # the member or the network is gone already
            except AgentkitError as exc:
                logger.debug("disconnect %s from %s: %s", member, name, exc)
        return await self._delete(name)

    async def _delete(self, name: str) -> bool:
        try:
            with docker_errors(f"remove network {name}", self.socket):
                resp = await self.docker._do_query(f"networks/{name}", "DELETE")
                resp.release()
            removed = True
        except NotFoundError:
            removed = False
        subnet = self._mine.pop(name, None)
        if subnet is not None:
            self._release_subnet(subnet)
        return removed

    async def sweep(self, live: Iterable[str] = ()) -> int:
        """Remove run networks whose run is gone (only the gateway, or nobody, left on them)."""
        keep = set(live)
        removed = 0
        now = time.time()
        taken = set(self._taken.values())
        for net in await self._list(ours=True):
            labels = net.get("Labels") or {}
            name = str(net.get("Name") or "")
            run_id = str(labels.get(LABEL_RUN) or "")
            pool = str(labels.get(LABEL_POOL) or "")
            try:
                created = float(labels.get(LABEL_CREATED) or 0)
            except ValueError:
                created = 0.0
            if run_id:
                if run_id in keep or now - created < SWEEP_AFTER_S:
                    continue
            elif not pool or pool == self.pool_id or name in taken:
                continue  # our own spare, or one handed to a run of ours
            elif now - created < SPARE_ORPHAN_S:
                continue  # another controller's spare it may still hand out
            try:
                members = _member_names(net, await self._inspect(net))
            except NotFoundError:
                continue
            if members - {self.gateway}:
                continue  # its agent is still there
            try:
                if await self._leave_and_delete(name, ()):
                    removed += 1
            except AgentkitError as exc:
                logger.warning("could not remove the agent network %s: %s", name, exc)
        return removed


def _member_names(listed: dict[str, Any], inspected: dict[str, Any]) -> set[str]:
    containers = inspected.get("Containers") or listed.get("Containers") or {}
    return {str(c.get("Name")) for c in containers.values() if isinstance(c, dict)}
