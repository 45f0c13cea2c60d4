"""The gateway on the agent host: its internal network, its container, its config, its socket.

:class:`GatewayHost` ensures, through the Engine API (locally or over SSH):

* the image (:mod:`.image`, built on first use like the agent image);
* the internal network ``agentkit-agents-<h>`` (``Internal: true``: no route off the host), and
  one small internal network per agent run that only the run and the gateway join
  (:mod:`.run_networks`: agents cannot reach each other);
* the container ``agentkit-gateway-<h>`` on the outward network (``AGENTKIT_CONTAINER_NETWORK``,
  default ``bridge``) and on the internal one, root inside but with every capability dropped
  except SETUID/SETGID (to start squid as ``proxy``), ``no-new-privileges``, no IP forwarding
  between its networks, restarted by the engine unless stopped;
* its config file, uploaded into the container with ``PUT /containers/{id}/archive`` (mode 0400,
  root): the real key never appears in argv, the environment or ``docker inspect``;
* its state folder ``<AGENTKIT_ROOT>/gateway`` (ledger, admin socket), mode 0700.

``<h>`` is derived from ``AGENTKIT_ROOT``: each agentkit root has its own gateway and network.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT, MANAGED_BY
from agentkit.errors import ConfigError, ConflictError, NotFoundError, RuntimeUnavailable
from agentkit.gateway.agents import FORWARD, ImageStart
from agentkit.gateway.client import GatewayClient
from agentkit.gateway.egress import expand_allowlist
from agentkit.gateway.image import ensure_gateway_image
from agentkit.gateway.pricing import parse_overrides
from agentkit.gateway.run_networks import RunNetworks, parse_pool
from agentkit.runtimes.base import parse_memory
from agentkit.runtimes.docker_engine import docker_errors

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings
    from agentkit.executors.base import Executor

__all__ = [
    "API_PORT",
    "LABEL_ROLE",
    "PROXY_PORT",
    "GatewayHost",
    "GatewayHostBase",
    "gateway_names",
    "network_subnets",
]

logger = logging.getLogger("agentkit.gateway")

API_PORT = 8080
PROXY_PORT = 3128
LABEL_ROLE = "agentkit.role"
CONFIG_DIR = "/etc/agentkit-gateway"
STATE_TARGET = "/var/lib/agentkit-gateway"
DEFAULT_UPSTREAM = "https://api.anthropic.com"
#: the gateway container's memory: request bodies in flight (proxy.MAX_BODY_BYTES_IN_FLIGHT,
#: 256 MiB, plus a read's copy of one 32 MiB body), one large body parsed at a time (at most
#: request_body.MAX_JSON_VALUES values: under 100 MiB) and Python, aiohttp and squid (~100 MiB)
GATEWAY_MEMORY = "768m"


def gateway_names(root: str) -> tuple[str, str, str]:
    """(container name, internal network name, bridge interface) of the gateway of ``root``."""
    h = hashlib.sha256(root.encode()).hexdigest()[:10]
    return f"agentkit-gateway-{h}", f"agentkit-agents-{h}", f"agk-{h}"


def network_subnets(network: dict[str, Any]) -> list[str]:
    """The subnets of a network's inspect data (IPAM.Config[].Subnet)."""
    configs = (network.get("IPAM") or {}).get("Config") or []
    return [str(c["Subnet"]) for c in configs if isinstance(c, dict) and c.get("Subnet")]


def config_tar(config: dict[str, Any]) -> bytes:
    """A tar holding ``config.json`` (mode 0400, root) for the archive upload."""
    data = json.dumps(config).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("config.json")
        info.size, info.mode, info.uid, info.gid = len(data), 0o400, 0, 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: the agent image's label saying it has ``agentkit-forward`` and socat
FORWARD_LABEL = "agentkit.gateway-forward"
#: where the socket transport's folder (``api.sock``, ``proxy.sock``) is mounted in an agent
SOCKETS_TARGET = "/run/agentkit-gateway"


@dataclass(frozen=True, slots=True)
class RunAccess:
    """How one run reaches the gateway: its environment (base URL, proxy with the run's login)
    and, on the socket transport, the mount of its sockets and the forwarder before its
    entrypoint."""

    env: dict[str, str]
    mounts: tuple[tuple[str, str], ...] = ()
    entrypoint_prefix: tuple[str, ...] = ()
    transport: str = "network"


def proxy_env(proxy: str, no_proxy: str) -> dict[str, str]:
    return {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


class GatewayHostBase:
    """What every placement of the gateway shares: names, config, state folder, admin client.

    :class:`GatewayHost` (a container, the Docker runtime) and
    :class:`~agentkit.gateway.swarm_host.SwarmGatewayHost` (a service, the Swarm runtime)
    differ in how they ensure the gateway, restart it and give a run its network.
    """

    #: what ``ensure_or_explain`` suggests when the gateway does not come up
    logs_command = "docker logs"
    #: how agents reach it: ``network`` (a network of their own / the overlay) or ``socket``
    transport = "network"

    def __init__(self, executor: Executor, settings: Settings, docker: aiodocker.Docker) -> None:
        self.executor = executor
        self.settings = settings
        self.docker = docker
        self.name, self.network, self.bridge = gateway_names(settings.root)
        self.state_dir = f"{settings.root.rstrip('/')}/gateway"
        self.client: GatewayClient | None = None
        self._lock = asyncio.Lock()
        self._ready = False

    @property
    def api_url(self) -> str:
        return f"http://{self.name}:{API_PORT}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.name}:{PROXY_PORT}"

    def proxy_url_for(self, run_id: str, token: str) -> str:
        """The proxy URL of one run: its id and token as the login squid checks."""
        return f"http://{quote(run_id, safe='')}:{quote(token, safe='')}@{self.name}:{PROXY_PORT}"

    async def image_start(self, image: str) -> ImageStart | None:
        """How ``image`` starts, when this transport wraps its entrypoint; ``None`` when not."""
        return None

    def run_access(self, run_id: str, token: str) -> RunAccess:
        """What the run ``run_id`` (logged in with ``token``) is given to reach the gateway."""
        no_proxy = f"{self.name},gateway,localhost,127.0.0.1"
        proxy = proxy_env(self.proxy_url_for(run_id, token), no_proxy)
        env = {"ANTHROPIC_BASE_URL": self.api_url, **proxy}
        return RunAccess(env)

    def config(self) -> dict[str, Any]:
        """The gateway's config file (holds the real key: only ever uploaded, never logged)."""
        s = self.settings
        from agentkit.workspaces.github import github_web_url

        try:
            allow = expand_allowlist(s.egress_allow, git_url=github_web_url(s))
            parse_overrides(s.pricing)
        except ValueError as exc:
            raise ConfigError(f"{exc} (see docs/gateway.md)") from None
        key = s.anthropic_api_key.get_secret_value() if s.anthropic_api_key else None
        # without a key, a bearer token passed through to agents before goes to the gateway
        token = None
        if not key and "ANTHROPIC_AUTH_TOKEN" in s.container_env_passthrough:
            token = os.environ.get("ANTHROPIC_AUTH_TOKEN") or None
        return {
            "upstream_url": s.anthropic_base_url or DEFAULT_UPSTREAM,
            "api_key": key or None,
            "auth_token": token,
            "fleet_daily_usd": s.daily_budget_usd,
            "pricing": s.pricing,
            "server_tools": s.gateway_server_tools,
            "egress_allow": allow,
            "own_names": [self.name],
            "api_port": API_PORT,
            "proxy_port": PROXY_PORT,
            "ledger_retention_s": s.ledger_retention_days * 86400 or None,
        }

    async def ensure(self) -> GatewayClient:
        """The gateway is up with the current config; returns its admin client."""
        raise NotImplementedError

    async def restart(self) -> None:
        """Restart the gateway (the ledger and tokens survive)."""
        raise NotImplementedError

    def run_network(self, run_id: str) -> str:
        """The network the run ``run_id`` joined (given by :meth:`open_run_network`)."""
        raise NotImplementedError

    async def open_run_network(self, run_id: str, *, sockets: bool = False) -> str:
        """Make the run's network ready, the gateway on it and its model API listening there
        (before the run is created); returns its name. ``sockets``: the run's image can serve
        the socket transport (:meth:`image_start`), used when that transport is on."""
        raise NotImplementedError

    async def close_run_network(self, run_id: str) -> None:
        """The run ended: its network is no longer needed."""
        raise NotImplementedError

    async def attach(self) -> GatewayClient:
        """A client for the gateway's admin socket, without ensuring anything."""
        if self.client is None:
            local = await self.executor.forward_unix_socket(f"{self.state_dir}/admin.sock")
            self.client = GatewayClient(local, where=self.executor.description)
        return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def _make_state_dir(self) -> None:
        made = await self.executor.run(["mkdir", "-p", "-m", "700", "--", self.state_dir])
        if not made.ok:
            raise ConfigError(
                f"cannot create the gateway state folder {self.state_dir}: "
                f"{made.stderr_text().strip()[-300:]}"
            )

    def _outward(self) -> str:
        """The network the gateway reaches the model API on (``AGENTKIT_CONTAINER_NETWORK``)."""
        outward = self.settings.container_network or "bridge"
        if outward.strip().lower() in ("host", "none") or outward.startswith("container:"):
            raise ConfigError(
                f"AGENTKIT_CONTAINER_NETWORK={outward!r}: the gateway needs a bridge or "
                "user-defined network to reach the model API"
            )
        return outward

    def _labels(self, role: str = "gateway") -> dict[str, str]:
        return {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_ROOT: self.settings.root,
            LABEL_ROLE: role,
        }

    async def _post(self, path: str, *, body: Any = None, params: Any = None) -> Any:
        resp = await self.docker._do_query(
            path,
            "POST",
            params=params or {},
            data=json.dumps(body) if body is not None else None,
            headers={"content-type": "application/json"},
        )
        try:
            raw = await resp.read()
        finally:
            resp.release()
        return json.loads(raw) if raw.strip() else None


class GatewayHost(GatewayHostBase):
    """Ensures the gateway container of one agentkit root (the Docker runtime), and how each
    run reaches it (``AGENTKIT_AGENT_TRANSPORT``): two unix sockets of its own mounted into an
    agent with no network (``socket``, :mod:`.run_sockets`), or one internal network per run
    (``network``, :mod:`.run_networks`)."""

    def __init__(self, executor: Executor, settings: Settings, docker: aiodocker.Docker) -> None:
        super().__init__(executor, settings, docker)
        self.transport = settings.agent_transport
        self._image_starts: dict[str, ImageStart] = {}
        self._socket_runs: set[str] = set()
        self.run_networks = RunNetworks(
            docker,
            root=settings.root,
            gateway=self.name,
            prefix=self.network,
            pool=settings.agent_subnet_pool,
            socket=settings.docker_socket,
            spares=settings.agent_network_spares,
            listen=self._listen,
        )

    async def _listen(self) -> None:
        await (await self.attach()).listen()

    def run_network(self, run_id: str) -> str:
        if run_id in self._socket_runs:
            return "none"
        return self.run_networks.network(run_id)

    async def image_start(self, image: str) -> ImageStart | None:
        """How ``image`` starts, and whether it can serve the socket transport: it has
        ``agentkit-forward`` and socat (label ``agentkit.gateway-forward``); ``None`` on the
        network transport."""
        if self.transport != "socket":
            return None
        known = self._image_starts.get(image)
        if known is not None:
            return known
        with docker_errors(f"inspect image {image}", self.settings.docker_socket):
            data = await self.docker._query_json(f"images/{image}/json")
        config = data.get("Config") or {}
        forward = (config.get("Labels") or {}).get(FORWARD_LABEL) == "1"
        if not forward:
            logger.warning(
                "image %s has no %s (label %s): its runs get a network of their own instead "
                "of the socket transport (build it FROM the agentkit agent image to change "
                "that)",
                image,
                FORWARD,
                FORWARD_LABEL,
            )
        cmd = config.get("Cmd")
        start = ImageStart(
            tuple(str(a) for a in config.get("Entrypoint") or ()),
            tuple(str(a) for a in cmd) if cmd else None,
            forward=forward,
        )
        self._image_starts[image] = start
        return start

    def sockets_folder(self, run_id: str) -> str:
        """The socket transport's folder of one run on the agent host."""
        return f"{self.state_dir}/runs/{run_id}"

    def run_access(self, run_id: str, token: str) -> RunAccess:
        if run_id not in self._socket_runs:
            return super().run_access(run_id, token)
        # the agent's own loopback, where agentkit-forward serves the run's two sockets
        login = f"{quote(run_id, safe='')}:{quote(token, safe='')}"
        env = {
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{API_PORT}",
            **proxy_env(f"http://{login}@127.0.0.1:{PROXY_PORT}", "localhost,127.0.0.1"),
            "AGENTKIT_GATEWAY_SOCKETS": SOCKETS_TARGET,
            "AGENTKIT_GATEWAY_API_PORT": str(API_PORT),
            "AGENTKIT_GATEWAY_PROXY_PORT": str(PROXY_PORT),
        }
        return RunAccess(
            env,
            mounts=((self.sockets_folder(run_id), SOCKETS_TARGET),),
            entrypoint_prefix=(FORWARD,),
            transport="socket",
        )

    async def open_run_network(self, run_id: str, *, sockets: bool = False) -> str:
        if sockets and self.transport == "socket":  # no network: the run's two sockets
            self._socket_runs.add(run_id)
            await (await self.attach()).open_sockets(run_id)
            return "none"
        name = await self.run_networks.create(run_id)
        if self.run_networks.needs_listen(run_id):
            await self._listen()  # the model API answers on the new network too
        return name

    async def close_run_network(self, run_id: str) -> None:
        if run_id in self._socket_runs:
            self._socket_runs.discard(run_id)
            await (await self.attach()).close_sockets(run_id)
            return
        # a network run, or one this controller did not open (the gateway's end of the run
        # already closed its sockets if it had any)
        if await self.run_networks.remove(run_id):
            await self._listen()  # addresses of the network gone are dropped

    async def aclose(self) -> None:
        await self.run_networks.aclose()  # spares no run took
        await super().aclose()

    async def ensure(self) -> GatewayClient:
        """The gateway is up with the current config; returns its admin client."""
        async with self._lock:
            if self._ready and self.client is not None:
                return self.client
            config = self.config()
            image = await ensure_gateway_image(self.docker, self.settings)
            own = await self._ensure_network()
            # the model API and squid serve the agents' networks only (squid checks every login
            # besides): the gateway's own internal network and the per-run networks' pool
            config["agent_subnets"] = [*own, str(parse_pool(self.settings.agent_subnet_pool))]
            await self._make_state_dir()
            info = await self._inspect()
            fresh = info is None or info.get("Image") != image.id
            if info is not None and fresh:
                await self._remove()
            if fresh:
                await self._create(image.id)
                await self.run_networks.join_all()  # runs still going when it was recreated
            await self._upload(config_tar(config))
            running = not fresh and bool((info or {}).get("State", {}).get("Running"))
            if not running:
                with docker_errors(f"start {self.name}", self.settings.docker_socket):
                    await self._post(f"containers/{self.name}/start")
            client = await self.attach()
            await client.health(wait=60.0)
            if running:
                await client.reload()
            await self.run_networks.sweep()  # left by a controller that stopped mid-run
            if self.transport == "network":
                self.run_networks.start_spares()
            self._ready = True
            return client

    async def restart(self) -> None:
        with docker_errors(f"restart {self.name}", self.settings.docker_socket):
            await self._post(f"containers/{self.name}/restart", params={"t": "2"})

    # --- engine calls -------------------------------------------------------------------------

    async def _inspect(self) -> dict[str, Any] | None:
        try:
            with docker_errors(f"inspect {self.name}", self.settings.docker_socket):
                data = await self.docker._query_json(f"containers/{self.name}/json")
        except NotFoundError:
            return None
        if (data.get("Config") or {}).get("Labels", {}).get(LABEL_ROLE) != "gateway":
            raise ConfigError(f"a container named {self.name} exists but is not agentkit's gateway")
        return {"Image": data.get("Image"), "State": data.get("State") or {}}

    async def _remove(self) -> None:
        with docker_errors(f"remove {self.name}", self.settings.docker_socket):
            resp = await self.docker._do_query(
                f"containers/{self.name}", "DELETE", params={"force": "1"}
            )
            resp.release()

    async def _ensure_network(self) -> list[str]:
        """Create the internal network if missing; returns its subnets (the agents' addresses)."""
        try:
            with docker_errors(f"inspect network {self.network}", self.settings.docker_socket):
                data = await self.docker._query_json(f"networks/{self.network}")
        except NotFoundError:
            data = None
        if data is not None:
            options = data.get("Options") or {}
            if not data.get("Internal") or options.get(
                "com.docker.network.bridge.inhibit_ipv4"
            ) not in ("true", "1"):
                raise ConfigError(
                    f"network {self.network} exists but is not internal with no host address: "
                    f"remove it (docker network rm {self.network}) so agentkit recreates it"
                )
            return network_subnets(data)
        body = {
            "Name": self.network,
            "Driver": "bridge",
            "Internal": True,
            "CheckDuplicate": True,
            "Labels": self._labels(),
            # No address for the host on this bridge: an internal network still routes to the
            # host's own addresses through it (measured on Docker 20.10), so without this an
            # agent could reach every service the host listens on.
            "Options": {
                "com.docker.network.bridge.inhibit_ipv4": "true",
                "com.docker.network.bridge.name": self.bridge,
            },
        }
        try:
            with docker_errors(f"create network {self.network}", self.settings.docker_socket):
                await self.docker._query_json("networks/create", method="POST", data=body)
        except ConflictError:  # created concurrently by another controller: fine
            pass
        with docker_errors(f"inspect network {self.network}", self.settings.docker_socket):
            return network_subnets(await self.docker._query_json(f"networks/{self.network}"))

    async def _create(self, image_id: str) -> None:
        s = self.settings
        outward = self._outward()
        host: dict[str, Any] = {
            "Init": True,
            "NetworkMode": outward,
            "Mounts": [{"Type": "bind", "Source": self.state_dir, "Target": STATE_TARGET}],
            "CapDrop": ["ALL"],
            "CapAdd": ["SETUID", "SETGID"],
            "SecurityOpt": ["no-new-privileges"],
            "RestartPolicy": {"Name": "unless-stopped"},
            "Memory": parse_memory(GATEWAY_MEMORY),
            "MemorySwap": parse_memory(GATEWAY_MEMORY),
            "PidsLimit": 256,
            # it sits on every run's network: it must never route between them
            "Sysctls": {"net.ipv4.ip_forward": "0"},
            "ExtraHosts": list(s.gateway_extra_hosts),
        }
        body = {
            "Image": image_id,
            "Labels": self._labels(),
            "User": "0:0",
            "Env": [],
            "HostConfig": host,
        }
        with docker_errors(f"create {self.name}", s.docker_socket):
            await self.docker._query_json(
                "containers/create",
                method="POST",
                params={"name": self.name},
                data=json.dumps(body),
            )
            await self._post(
                f"networks/{self.network}/connect",
                body={"Container": self.name, "EndpointConfig": {"Aliases": ["gateway"]}},
            )

    async def _upload(self, archive: bytes) -> None:
        with docker_errors(f"upload the config of {self.name}", self.settings.docker_socket):
            resp = await self.docker._do_query(
                f"containers/{self.name}/archive",
                "PUT",
                params={"path": CONFIG_DIR},
                data=archive,
                headers={"content-type": "application/x-tar"},
            )
            try:
                await resp.read()
            finally:
                resp.release()


async def ensure_or_explain(host: GatewayHostBase) -> GatewayClient:
    """:meth:`GatewayHost.ensure`, with the way out named when the gateway cannot start."""
    try:
        return await host.ensure()
    except RuntimeUnavailable as exc:
        raise RuntimeUnavailable(
            f"{exc} (the gateway {host.name} did not come up: "
            f"`{host.logs_command} {host.name}` shows why)"
        ) from exc
