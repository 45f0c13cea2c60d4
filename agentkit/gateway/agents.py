"""What an agent run gets from the gateway: a token, an environment, a network - and its end.

:class:`AgentGateway` is the one object the agent service talks to:

* :meth:`AgentGateway.plan_run` makes a new run's token and :class:`RunPlan`: its registration
  (the token's sha256, its workspace, budget and deadline), which the launcher runs side by
  side with creating the container, and :class:`GatewayAdditions`: the environment that
  replaces the real key and base URL (``ANTHROPIC_API_KEY`` = a random per-run token,
  ``ANTHROPIC_BASE_URL`` = the gateway, ``HTTP(S)_PROXY`` = its squid, logged in as
  ``<run id>:<token>``: squid checks the login with the gateway and records refused connections
  under that run) and the network it joins;
* :meth:`AgentGateway.open_network` gives the run its own internal network with the gateway on
  it (a spare made ahead when one is ready), before :meth:`AgentGateway.plan_run`;
* :meth:`AgentGateway.ended` kills the token, removes the run's network and returns the run's
  metered summary;
* :meth:`AgentGateway.live` / :meth:`AgentGateway.egress` feed status, list and output.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit.errors import AgentkitError
from agentkit.gateway.budgets import token_sha256

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.base import Executor
    from agentkit.gateway.client import GatewayClient
    from agentkit.gateway.host import GatewayHostBase
    from agentkit.runtimes.base import Runtime

__all__ = [
    "CREDENTIAL_VARS",
    "AgentGateway",
    "GatewayAdditions",
    "ImageStart",
    "RunPlan",
    "gateway_for",
]

logger = logging.getLogger("agentkit.gateway")

#: variables that would carry a real credential into an agent: never set when the gateway is on
CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
#: token lifetime after the run's deadline (the controller normally ends it sooner)
TOKEN_GRACE_S = 120.0


#: the image's own entrypoint (``docker/agent-entrypoint.sh``)
AGENT_ENTRYPOINT = "/usr/local/bin/agent-entrypoint"
#: the socket transport inside the agent (``docker/agentkit-forward.sh``): serves the run's
#: sockets on the container's loopback, then runs the entrypoint
FORWARD = "/usr/local/bin/agentkit-forward"


@dataclass(frozen=True, slots=True)
class ImageStart:
    """How an image starts: its ``Entrypoint`` and ``Cmd``."""

    entrypoint: tuple[str, ...]
    command: tuple[str, ...] | None
    #: it has ``agentkit-forward`` and socat: its runs can use the socket transport
    forward: bool = True


@dataclass(frozen=True, slots=True)
class GatewayAdditions:
    """What the gateway changes in one agent's container spec."""

    env: Mapping[str, str]
    network: str
    remove: tuple[str, ...] = (*CREDENTIAL_VARS, "ANTHROPIC_BASE_URL")
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: host folder -> container folder, read-only (the socket transport's sockets)
    mounts: tuple[tuple[str, str], ...] = ()
    #: run before the entrypoint, which it then runs (the socket transport's forwarder)
    entrypoint_prefix: tuple[str, ...] = ()
    #: the run image's own entrypoint and command (what the prefix runs when the spawn gives
    #: none: an entrypoint set in the create request drops the image's command)
    image_start: ImageStart | None = None

    def entrypoint(self, given: Sequence[str] | None) -> tuple[str, ...] | None:
        """The container's entrypoint: ``given`` (``None``: the image's), behind the prefix."""
        if not self.entrypoint_prefix:
            return tuple(given) if given is not None else None
        image = self.image_start or ImageStart((AGENT_ENTRYPOINT,), None)
        return (*self.entrypoint_prefix, *(given if given is not None else image.entrypoint))

    def command(
        self, given: Sequence[str] | None, entrypoint: Sequence[str] | None
    ) -> tuple[str, ...] | None:
        """The container's command: ``given``, else (behind the prefix, with the image's own
        entrypoint) the image's command."""
        if given is not None:
            return tuple(given)
        if self.entrypoint_prefix and entrypoint is None and self.image_start is not None:
            return self.image_start.command
        return None

    def apply(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` without any real credential, plus the gateway's variables."""
        out = {k: v for k, v in env.items() if k not in self.remove}
        out.update(self.env)
        return out


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A run about to start behind the gateway: its spec's additions and its registration
    (the token's sha256, workspace, budget, expiry), which must succeed before it starts."""

    additions: GatewayAdditions
    register: Callable[[], Awaitable[None]]


class AgentGateway:
    """The gateway as the agent service uses it (one per service), wherever ``host`` puts it:
    a container (:class:`~agentkit.gateway.host.GatewayHost`, the Docker runtime) or a swarm
    service (:class:`~agentkit.gateway.swarm_host.SwarmGatewayHost`)."""

    def __init__(self, host: GatewayHostBase, settings: Settings) -> None:
        self.settings = settings
        self.host = host

    async def client(self) -> GatewayClient:
        return await self.host.ensure()

    def plan_run(
        self,
        run_id: str,
        *,
        workspace: str,
        deadline: float,
        max_cost_usd: float | None,
        network: str,
        image_start: ImageStart | None = None,
    ) -> RunPlan:
        """A new run's token and what its spec gets, without I/O: the caller registers it
        (:meth:`RunPlan.register`) side by side with creating the run, before starting it.
        ``network`` is the one :meth:`open_network` gave the run."""
        token = "agentkit-run-" + secrets.token_urlsafe(32)
        access = self.host.run_access(run_id, token)
        env = {"ANTHROPIC_API_KEY": token, **access.env}
        meta = {
            "gateway": self.host.name,
            "gateway_transport": access.transport,
            "max_cost_usd": max_cost_usd,
        }

        async def register() -> None:
            client = await self.client()
            await client.register(
                run_id,
                token_sha256(token),
                workspace=workspace,
                max_cost_usd=max_cost_usd,
                expires=deadline + TOKEN_GRACE_S,
            )

        additions = GatewayAdditions(
            env=env,
            network=network,
            meta=meta,
            mounts=access.mounts,
            entrypoint_prefix=access.entrypoint_prefix,
            image_start=image_start,
        )
        return RunPlan(additions, register)

    async def image_start(self, image: str) -> ImageStart | None:
        """How ``image`` starts and whether it can serve the socket transport, when that
        transport is on; ``None`` otherwise."""
        return await self.host.image_start(image)

    async def open_network(self, run_id: str, image_start: ImageStart | None = None) -> str:
        """The run's way to the gateway: its two sockets when the socket transport is on and
        ``image_start`` (:meth:`image_start`) says its image can serve them, else its network
        with the gateway on it and its model API listening there (removed again if that
        fails); call before the run's container is created."""
        await self.client()
        sockets = image_start is not None and image_start.forward
        try:
            network = await self.host.open_run_network(run_id, sockets=sockets)
        except BaseException:
            with contextlib.suppress(AgentkitError):
                await self.host.close_run_network(run_id)
            raise
        return network

    async def ended(self, run_id: str) -> dict[str, Any] | None:
        """Kill the run's token and remove its network (or sockets); its metered summary
        (``None`` if the gateway never knew it)."""
        try:
            return await (await self.host.attach()).end(run_id)
        finally:
            try:
                await self.host.close_run_network(run_id)
            except AgentkitError as exc:  # swept later
                logger.warning("could not remove the network of %s: %s", run_id, exc)

    async def live(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Metered summaries of runs (the gateway is not started for this)."""
        return await (await self.host.attach()).runs(run_ids)

    async def egress(self, run_id: str) -> list[dict[str, Any]]:
        """Refused outbound connections of a run."""
        return await (await self.host.attach()).egress(run_id)

    async def aclose(self) -> None:
        await self.host.aclose()


def gateway_for(executor: Executor, settings: Settings, runtime: Runtime) -> AgentGateway | None:
    """The gateway for ``runtime``: a container on Docker, a service on Swarm, else ``None``."""
    from agentkit.runtimes.docker import DockerRuntime
    from agentkit.runtimes.swarm import SwarmRuntime

    if isinstance(runtime, SwarmRuntime):
        from agentkit.gateway.swarm_host import SwarmGatewayHost

        host: GatewayHostBase = SwarmGatewayHost(
            executor, settings, runtime.docker, node_id=runtime.node_id
        )
    elif isinstance(runtime, DockerRuntime):
        from agentkit.gateway.host import GatewayHost

        host = GatewayHost(executor, settings, runtime.docker)
    else:
        return None
    return AgentGateway(host, settings)
