"""The gateway on Docker Swarm: a service on an internal overlay network, its config a secret.

:class:`SwarmGatewayHost` ensures, through the swarm manager's Engine API:

* the image, built on the manager like the agent image (the gateway runs there, so no registry
  is involved);
* the overlay network ``agentkit-agents-<h>`` with ``Internal: true``: its members (the agent
  services, on any node, and the gateway) reach each other and nothing else - no default route,
  no address of any host on it (the overlay's bridge lives in a namespace of its own);
* the secret ``agentkit-gateway-<h>-<hash>`` holding ``config.json`` (the real key). Secrets are
  immutable: a new config is a new secret named by a hash of its content; the service is
  updated to mount it and the old one is removed. Swarm keeps it encrypted in its raft log and
  mounts it at ``/etc/agentkit-gateway/config.json`` (root, mode 0400) on a tmpfs of the task:
  never in argv, the environment or ``docker service inspect`` (which names it only);
* the service ``agentkit-gateway-<h>``: one replica, restarted by swarm whenever its task ends,
  pinned to the manager node agentkit talks to (where the executor keeps ``AGENTKIT_ROOT``:
  ``<AGENTKIT_ROOT>/gateway`` with the ledger and the admin socket is bind-mounted as on the
  Docker runtime), on the internal overlay (alias ``gateway``; DNS round robin, no virtual IP)
  and on the outward network (``AGENTKIT_CONTAINER_NETWORK``, default ``bridge``), hardened
  like the container: root with every capability dropped but SETUID/SETGID,
  ``no-new-privileges`` (``setpriv``, as for agent services: the services API has no field
  for it), memory and pids limits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

from agentkit.errors import ConfigError, ConflictError, NotFoundError, RuntimeUnavailable, ToolError
from agentkit.gateway.client import GatewayClient
from agentkit.gateway.host import (
    CONFIG_DIR,
    LABEL_ROLE,
    STATE_TARGET,
    GatewayHostBase,
    network_subnets,
)
from agentkit.gateway.image import ensure_gateway_image
from agentkit.runtimes.base import parse_memory
from agentkit.runtimes.docker_engine import docker_errors
from agentkit.runtimes.swarm_follow import newest_task
from agentkit.runtimes.swarm_spec import NO_NEW_PRIVS, placement

__all__ = [
    "CONFIG_LABEL",
    "CONFIG_ROLE",
    "IMAGE_LABEL",
    "SPEC_LABEL",
    "SwarmGatewayHost",
    "swarm_hosts",
]

#: label of the gateway's config secrets (one current per root, older ones removed)
CONFIG_ROLE = "gateway-config"
#: service labels: the image id and the secret the running spec was made for, and a hash of
#: the whole spec (a change of any input - image, config, extra hosts, networks, node - updates it)
IMAGE_LABEL = "agentkit.gateway-image"
CONFIG_LABEL = "agentkit.gateway-config"
SPEC_LABEL = "agentkit.gateway-spec"
ENTRYPOINT = ["python3", "-m", "agentkit_gateway"]
START_TIMEOUT = 120.0  # seconds for the gateway's task to be running after a create/update


def swarm_hosts(extra_hosts: list[str]) -> list[str]:
    """``name:ip`` entries (``AGENTKIT_GATEWAY_EXTRA_HOSTS``) as a service's ``Hosts`` lines."""
    out = []
    for entry in extra_hosts:
        name, sep, ip = entry.partition(":")
        if not sep or not name or not ip:
            raise ConfigError(f"AGENTKIT_GATEWAY_EXTRA_HOSTS entry {entry!r} is not name:ip")
        out.append(f"{ip} {name}")
    return out


def config_secret_name(service: str, data: bytes) -> str:
    """The secret holding ``data`` (the config): named by a hash of its content."""
    return f"{service}-{hashlib.sha256(data).hexdigest()[:16]}"


class SwarmGatewayHost(GatewayHostBase):
    """Ensures the gateway service of one agentkit root (the Swarm runtime)."""

    logs_command = "docker service logs"

    def __init__(self, *args: Any, node_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node_id = node_id

    def _errors(self, what: str) -> Any:
        return docker_errors(what, self.settings.docker_socket)

    def config(self) -> dict[str, Any]:
        config = super().config()
        # the names the agents' overlay resolves to the gateway: never reached through squid
        config["own_names"] = [self.name, f"tasks.{self.name}", "gateway"]
        return config

    async def ensure(self) -> GatewayClient:
        async with self._lock:
            if self._ready and self.client is not None:
                return self.client
            config = self.config()
            image = await ensure_gateway_image(self.docker, self.settings)
            config["agent_subnets"] = await self._ensure_network()
            await self._make_state_dir()
            data = json.dumps(config, sort_keys=True).encode()
            secret_name = config_secret_name(self.name, data)
            secret_id = await self._ensure_secret(secret_name, data)
            spec = self._spec(image.id, secret_id, secret_name)
            service = await self._inspect()
            if service is None:
                service = await self._create(spec)
            labels = ((service or {}).get("Spec") or {}).get("Labels") or {}
            if service is not None and labels.get(SPEC_LABEL) != spec["Labels"][SPEC_LABEL]:
                await self._update(service, spec)
            await self._running(secret_name)
            await self._remove_old_secrets(keep=secret_name)
            client = await self.attach()
            await client.health(wait=60.0)
            self._ready = True
            return client

    def run_network(self, run_id: str) -> str:
        """Every run joins the one internal overlay (a service joins a network only through an
        update that restarts its task, so per-run networks as on Docker would restart the
        gateway at every spawn): agents on Swarm can reach each other, not anything else."""
        return self.network

    async def open_run_network(self, run_id: str, *, sockets: bool = False) -> str:
        return self.network  # made by ensure, the gateway already on it

    async def close_run_network(self, run_id: str) -> None:
        return None  # shared: it stays for the next runs

    async def restart(self) -> None:
        """A new task for the service (``ForceUpdate``); returns once it runs."""
        service = await self._inspect()
        if service is None:
            raise NotFoundError(f"the gateway service {self.name} does not exist")
        spec = dict(service["Spec"])
        template = dict(spec["TaskTemplate"])
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        spec["TaskTemplate"] = template
        before = frozenset(str(t.get("ID")) for t in await self._tasks())
        await self._update(service, spec)
        await self._running(str((spec.get("Labels") or {}).get(CONFIG_LABEL)), not_in=before)

    # --- engine calls -------------------------------------------------------------------------

    def _spec(self, image_id: str, secret_id: str, secret_name: str) -> dict[str, Any]:
        s = self.settings
        labels = {**self._labels(), IMAGE_LABEL: image_id, CONFIG_LABEL: secret_name}
        container: dict[str, Any] = {
            # the id, not the tag: the task runs exactly the image ensured for this code even
            # if the tag moves meanwhile (the manager's node holds it: nothing is pulled)
            "Image": image_id,
            "Labels": self._labels(),
            "Command": [*NO_NEW_PRIVS, *ENTRYPOINT],
            "Args": [],
            "Env": [],
            "User": "0:0",
            "Init": True,
            "CapabilityDrop": ["ALL"],
            "CapabilityAdd": ["CAP_SETUID", "CAP_SETGID"],
            "Mounts": [{"Type": "bind", "Source": self.state_dir, "Target": STATE_TARGET}],
            "Hosts": swarm_hosts(list(s.gateway_extra_hosts)),
            "Secrets": [
                {
                    "SecretID": secret_id,
                    "SecretName": secret_name,
                    "File": {
                        "Name": f"{CONFIG_DIR}/config.json",
                        "UID": "0",
                        "GID": "0",
                        "Mode": 0o400,
                    },
                }
            ],
            "StopGracePeriod": 5_000_000_000,
        }
        template: dict[str, Any] = {
            "ContainerSpec": container,
            "Resources": {"Limits": {"MemoryBytes": parse_memory("512m"), "Pids": 256}},
            # any end of its task (a crash, an OOM kill, a clean exit) starts a new one
            "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000, "MaxAttempts": 0},
            "Placement": {"Constraints": [placement(self.node_id)]},
            "Networks": [
                {"Target": self.network, "Aliases": ["gateway"]},
                {"Target": self._outward()},
            ],
        }
        body = {
            "Name": self.name,
            "Labels": labels,
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": 1}},
            # the name resolves to the task's own address, not a virtual IP: the VIP's IPVS
            # balancing is one more kernel dependency (absent on some hosts: measured, the VIP
            # refused connections where the task's address answered) and forgets idle streams
            "EndpointSpec": {"Mode": "dnsrr"},
            # never two gateways on one ledger and admin socket: the old task stops first
            "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "pause"},
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        labels[SPEC_LABEL] = digest
        return body

    async def _inspect(self) -> dict[str, Any] | None:
        try:
            with self._errors(f"inspect service {self.name}"):
                data: dict[str, Any] = await self.docker._query_json(f"services/{self.name}")
        except NotFoundError:
            return None
        if ((data.get("Spec") or {}).get("Labels") or {}).get(LABEL_ROLE) != "gateway":
            raise ConfigError(f"a service named {self.name} exists but is not agentkit's gateway")
        return data

    async def _create(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Create the service; ``None``, or the service another controller just created."""
        try:
            with self._errors(f"create service {self.name}"):
                await self.docker._query_json("services/create", method="POST", data=spec)
        except ConflictError:
            return await self._inspect()
        return None

    async def _update(self, service: dict[str, Any], spec: dict[str, Any]) -> None:
        version = (service.get("Version") or {}).get("Index")
        with self._errors(f"update service {self.name}"):
            await self._post(
                f"services/{service['ID']}/update", body=spec, params={"version": str(version)}
            )

    async def _tasks(self) -> list[dict[str, Any]]:
        with self._errors(f"list the tasks of {self.name}"):
            rows: list[dict[str, Any]] = await self.docker._query_json(
                "tasks", params={"filters": json.dumps({"service": [self.name]})}
            )
        return rows

    async def _running(self, secret_name: str, *, not_in: frozenset[str] = frozenset()) -> None:
        """Wait until the one task running is one made with ``secret_name`` (and not one of
        ``not_in``): the gateway answering afterwards has the current config."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rows = await self._tasks()
            running = [t for t in rows if (t.get("Status") or {}).get("State") == "running"]
            current = [
                t
                for t in running
                if str(t.get("ID")) not in not_in
                and any(
                    s.get("SecretName") == secret_name
                    for s in (((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Secrets"))
                    or []
                )
            ]
            if current and len(running) == 1:
                return
            ended = [
                t
                for t in rows
                if (t.get("Status") or {}).get("State") in ("failed", "rejected")
                and str(t.get("ID")) not in not_in
                and t.get("DesiredState") != "shutdown"  # not a task swarm stopped itself
            ]
            if ended and not running:  # the new task did not start: no use waiting
                status = ended[0].get("Status") or {}
                raise RuntimeUnavailable(
                    f"the gateway service {self.name} could not start its task "
                    f"({status.get('State')}: {status.get('Err') or status.get('Message')})"
                )
            if time.monotonic() > deadline:
                task = newest_task(rows, str(rows[0].get("ServiceID"))) if rows else None
                status = (task or {}).get("Status") or {}
                raise RuntimeUnavailable(
                    f"the gateway service {self.name} has no running task after "
                    f"{START_TIMEOUT:.0f} s (its newest task: {status.get('State')}"
                    f"{': ' + str(status.get('Err')) if status.get('Err') else ''})"
                )
            await asyncio.sleep(0.2)

    async def _ensure_secret(self, name: str, data: bytes) -> str:
        """The id of the secret ``name`` holding ``data``, created if missing."""
        body = {
            "Name": name,
            "Labels": self._labels(CONFIG_ROLE),
            "Data": base64.b64encode(data).decode(),
        }
        try:
            with self._errors(f"create secret {name}"):
                made = await self.docker._query_json("secrets/create", method="POST", data=body)
            return str(made["ID"])
        except ConflictError:  # the same config (its name is its hash): reuse it
            with self._errors(f"inspect secret {name}"):
                found = await self.docker._query_json(f"secrets/{name}")
            return str(found["ID"])

    async def _remove_old_secrets(self, *, keep: str) -> None:
        """Remove this root's older config secrets (one still in use by a stopping task is
        left for the next ensure)."""
        labels = self._labels(CONFIG_ROLE)
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        with self._errors("list the gateway's secrets"):
            rows = await self.docker._query_json("secrets", params={"filters": filters})
        for row in rows:
            if (row.get("Spec") or {}).get("Name") == keep:
                continue
            try:
                with self._errors(f"remove secret {row.get('ID')}"):
                    resp = await self.docker._do_query(f"secrets/{row['ID']}", "DELETE")
                    resp.release()
            except (NotFoundError, ConflictError, ConfigError, ToolError):
                pass  # gone, or still in use: removed by a later ensure

    async def _ensure_network(self) -> list[str]:
        """Create the internal overlay if missing; returns its subnets (the agents' addresses)."""
        try:
            with self._errors(f"inspect network {self.network}"):
                data = await self.docker._query_json(f"networks/{self.network}")
        except NotFoundError:
            data = None
        if data is not None:
            if data.get("Driver") != "overlay" or not data.get("Internal"):
                raise ConfigError(
                    f"network {self.network} exists but is not an internal overlay network "
                    f"(it was made for AGENTKIT_RUNTIME=docker?): remove it "
                    f"(docker network rm {self.network}) so agentkit recreates it"
                )
            return await self._subnets()
        body = {
            "Name": self.network,
            "Driver": "overlay",
            "Internal": True,
            # agents and the gateway join as services; attachable so that an operator (or a
            # test) can probe it from a throwaway container - only with Engine API access, which
            # is root on the host anyway
            "Attachable": True,
            "CheckDuplicate": True,
            "Labels": self._labels(),
        }
        try:
            with self._errors(f"create network {self.network}"):
                await self.docker._query_json("networks/create", method="POST", data=body)
        except ConflictError:  # created concurrently by another controller: fine
            pass
        return await self._subnets()

    async def _subnets(self, limit: float = 60.0) -> list[str]:
        """The overlay's subnets, once the manager's allocator has given it one (a new
        overlay's inspect shows none for a moment: the gateway's model API, bound to its address
        on that subnet, could not start without it)."""
        deadline = time.monotonic() + limit
        while True:
            with self._errors(f"inspect network {self.network}"):
                found = network_subnets(await self.docker._query_json(f"networks/{self.network}"))
            if found:
                return found
            if time.monotonic() > deadline:
                raise RuntimeUnavailable(
                    f"the swarm gave the network {self.network} no subnet in {limit:.0f} s "
                    f"(`docker network inspect {self.network}` shows its IPAM config)"
                )
            await asyncio.sleep(0.1)
