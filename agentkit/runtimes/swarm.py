"""`SwarmRuntime`: the runtime contract on Docker Swarm - one replicated-job service per run.

Each run is a service in ``ReplicatedJob`` mode (exactly one task, never restarted), hardened
like the Docker runtime's containers (:mod:`~agentkit.runtimes.swarm_spec` says how, field by
field) and pinned to one node: ``spec.node``, else the node of the engine agentkit talks to
(where the executor keeps the workspaces). The engine must be a swarm manager
(:meth:`SwarmRuntime.open` says how to make it one).

* **exits** and **logs**: :mod:`~agentkit.runtimes.swarm_follow` (the manager's events; the
  task container's own logs on this node, the service logs API elsewhere).
* **stop**: the task container is stopped on the node it runs on, through the manager's engine
  when that is the node; a run on another node (or not started yet) is stopped by removing
  its service (its end is then remembered here as ``signalled``).
* **images**: built on the manager with ``ensure_image``; with ``AGENTKIT_SWARM_REGISTRY``
  pushed to that registry and pulled by the nodes (:mod:`~agentkit.runtimes.swarm_images`),
  otherwise it must exist on the node: a node without it rejects the task, and the run ends
  ``rejected`` with the engine's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentkit.errors import ConfigError, NotFoundError, ToolError
from agentkit.runtimes.base import (
    ExitEvent,
    ExitReason,
    RunInfo,
    RunSpec,
    RunState,
    Runtime,
)
from agentkit.runtimes.docker import (
    DockerRuntime,
    label_filters,
    parse_time,
)
from agentkit.runtimes.docker_engine import docker_errors
from agentkit.runtimes.engine_http import EngineHTTP
from agentkit.runtimes.swarm_follow import (
    BACKSTOP,
    LOG_IDLE,
    SERVICE_LABEL,
    SwarmFollowing,
    newest_task,
)
from agentkit.runtimes.swarm_images import push_image
from agentkit.runtimes.swarm_spec import argv_for, service_body, task_exit, task_state

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings

__all__ = ["BACKSTOP", "LOG_IDLE", "SwarmRuntime", "manager_problem"]

logger = logging.getLogger("agentkit.runtimes")

NODES_TTL = 2.0  # seconds a list of down nodes is reused by inspect/list


def manager_problem(info: Mapping[str, Any]) -> str | None:
    """Why ``GET /info`` says this engine cannot run swarm services (``None``: it can)."""
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState")
    if state != "active":
        return (
            f"the Docker Engine is not part of a swarm (swarm state {state or 'inactive'!r}); "
            "make it a manager with `docker swarm init --advertise-addr <this host's address>` "
            "(or join it to a swarm as a manager), or set AGENTKIT_RUNTIME=docker"
        )
    if not swarm.get("ControlAvailable"):
        return (
            "the Docker Engine is a swarm worker, not a manager: point AGENTKIT_HOST at a "
            "manager node, or promote this one (`docker node promote <node>` on a manager)"
        )
    return None


class SwarmRuntime(SwarmFollowing, Runtime):
    """:class:`Runtime` over a swarm manager's Engine API (one aiodocker client)."""

    name = "swarm"

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        node_id: str,
        socket: str = "the Docker socket",
        settings: Settings | None = None,
        http: EngineHTTP | None = None,
    ) -> None:
        self.docker = docker
        self.node_id = node_id
        self._socket = socket
        #: the hot queries (services, tasks, nodes, containers) over pooled keep-alive
        #: connections, shared with :attr:`engine`, when given
        self.http = http
        self.engine = DockerRuntime(docker, socket=socket, settings=settings, engine=http)
        self.registry = settings.swarm_registry if settings is not None else None
        self._pushed: dict[str, str] = {}  # image -> the reference nodes pull (this image id)
        self._pending: dict[str, dict[str, Any]] = {}
        self._removed: dict[str, RunInfo] = {}  # runs stopped by removing their service
        self._waiting: dict[str, set[asyncio.Event]] = {}  # wait() calls, woken by stop()
        # ends seen in die events: swarm updates the task's state a moment later
        self._died: dict[str, ExitEvent] = {}
        self._down_cache: tuple[float, set[str]] | None = None

    @classmethod
    async def open(
        cls,
        docker: aiodocker.Docker,
        *,
        socket: str = "the Docker socket",
        settings: Settings | None = None,
        http: EngineHTTP | None = None,
    ) -> SwarmRuntime:
        """Check the engine is a swarm manager (``ConfigError`` saying how to fix it)."""
        with docker_errors("ask the Docker Engine about its swarm", socket):
            info = await docker._query_json("info")
        problem = manager_problem(info)
        if problem:
            raise ConfigError(f"AGENTKIT_RUNTIME=swarm: {problem}")
        node_id = str(info["Swarm"]["NodeID"])
        return cls(docker, node_id=node_id, socket=socket, settings=settings, http=http)

    def _errors(self, what: str) -> Any:
        return docker_errors(what, self._socket)

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._errors(f"GET {path}"):
            if self.http is not None:
                query = {key: str(value) for key, value in (params or {}).items()}
                return await self.http.get_json(path, query)
            return await self.docker._query_json(path, params=dict(params or {}))

    # --- create / start -------------------------------------------------------------------------

    async def create(self, spec: RunSpec) -> str:
        """Resolve the service body now (the image's entrypoint is read on the manager); the
        service itself is created by :meth:`start`, since a service starts at once."""
        entrypoint: list[str] | None = None
        cmd: list[str] | None = None
        if spec.entrypoint is None or spec.command is None:
            try:
                image = await self._get(f"images/{spec.image}/json")
            except NotFoundError:
                raise ToolError(
                    f"image {spec.image} does not exist on the swarm manager; build it there "
                    "(`agentkit image build`) and make it available on the agent's node"
                ) from None
            config = image.get("Config") or {}
            entrypoint, cmd = config.get("Entrypoint"), config.get("Cmd")
        argv = argv_for(spec, entrypoint, cmd)
        if not argv:
            raise ToolError(f"image {spec.image} has no entrypoint or command, and none was given")
        node = spec.node or self.node_id
        await self.check_node(node)
        if self.registry:
            spec = dataclasses.replace(spec, image=await self._distribute(spec.image))
        self._pending[spec.name] = service_body(spec, node=node, argv=argv)
        return spec.name

    async def check_node(self, node: str) -> None:
        """Refuse a run pinned to a node that is unknown, down or drained: its workspaces live
        there, so it could never start (the task would wait forever for a node)."""
        try:
            data = await self._get(f"nodes/{node}")
        except NotFoundError:
            raise ToolError(
                f"swarm node {node!r} does not exist: check AGENTKIT_SWARM_NODE "
                "(`docker node ls` on a manager lists the nodes)"
            ) from None
        state = (data.get("Status") or {}).get("State")
        availability = (data.get("Spec") or {}).get("Availability")
        if state != "ready" or availability != "active":
            raise ToolError(
                f"swarm node {node!r}, where this workspace lives, is {state}/{availability}: "
                "agents on its workspaces cannot start until it is back (`docker node ls`)"
            )

    async def start(self, name: str) -> None:
        body = self._pending.pop(name, None)
        if body is None:
            raise NotFoundError(f"no created run {name} to start")
        with self._errors(f"create service {name}"):
            await self.docker._query_json("services/create", method="POST", data=body)

    # --- inspect / list -------------------------------------------------------------------------

    async def _tasks(self, services: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The newest task of each service, by service name (one request)."""
        ids = {str(s.get("ID")): str((s.get("Spec") or {}).get("Name")) for s in services}
        if not ids:
            return {}
        rows = await self._get("tasks", {"filters": json.dumps({"service": list(ids)})})
        out = {}
        for sid, name in ids.items():
            task = newest_task(rows, sid)
            if task is not None:
                out[name] = task
        return out

    async def _down_nodes(self) -> set[str]:
        """Nodes the manager sees down. Kept for ``NODES_TTL`` s (the slowest of the requests
        an inspect makes; the manager itself needs ~10 s of missed heartbeats to mark a node
        down, so this adds little to noticing a lost node) and dropped on every node event."""
        now = time.monotonic()
        if self._down_cache is not None and now - self._down_cache[0] < NODES_TTL:
            return self._down_cache[1]
        nodes = await self._get("nodes")
        down = {
            str(n.get("ID"))
            for n in nodes
            if (n.get("Status") or {}).get("State") in ("down", "disconnected", "unknown")
        }
        self._down_cache = (now, down)
        return down

    async def _oom(self, task: Mapping[str, Any]) -> bool:
        """Whether the task's container was OOM-killed (known only on the manager's node)."""
        container = (task.get("Status") or {}).get("ContainerStatus") or {}
        cid = container.get("ContainerID")
        if not cid or container.get("ExitCode") != 137 or task.get("NodeID") != self.node_id:
            return False
        try:
            return (await self.engine.inspect(str(cid))).oom_killed
        except NotFoundError:
            return False

    async def _info(
        self, service: Mapping[str, Any], task: Mapping[str, Any] | None, down: set[str]
    ) -> RunInfo:
        spec = service.get("Spec") or {}
        name = str(spec.get("Name", ""))
        state = task_state(task, bool(task and task.get("NodeID") in down))
        exit_event = None
        if task is not None and state in (RunState.EXITED, RunState.LOST):
            exit_event = task_exit(name, task, state, await self._oom(task))
        elif name in self._died:  # the container died; the task's state has not caught up
            state, exit_event = RunState.EXITED, self._died[name]
        status = (task or {}).get("Status") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        return RunInfo(
            id=str(service.get("ID", "")),
            name=name,
            labels=dict(spec.get("Labels") or {}),
            state=state,
            exit=exit_event,
            created_at=parse_time(service.get("CreatedAt")),
            started_at=parse_time(status.get("Timestamp")) if state == RunState.RUNNING else None,
            image=container.get("Image"),
            node=(task or {}).get("NodeID"),
            raw={"ServiceID": service.get("ID"), "Task": {"Status": status}},
        )

    # --- sessions: through the task's container, on this engine's node only --------------------

    async def _session_container(self, name: str) -> str:
        """The container of the run's task when it runs on this engine's node: a service's task
        can only be attached or copied from through the engine of its own node."""
        since = time.time()
        cid = await self._local_container(name, wait=True)  # until the task is placed
        if cid is None:  # placed here but its container not started yet: wait for its start
            cid = await self._started_here(name, since)
        if cid is None:
            raise ToolError(
                f"{name} does not run on the swarm node this controller talks to: its input "
                "and files are reachable only through that node's engine (see docs/sessions.md)"
            )
        return cid

    async def _started_here(self, name: str, since: float, limit: float = 30.0) -> str | None:
        """The running container of ``name`` on this engine, waiting up to ``limit`` seconds
        for its start event (events from ``since`` on are replayed, so none is missed)."""
        labels = {SERVICE_LABEL: name}
        filters = {"type": ["container"], "event": ["start"], "label": label_filters(labels)}

        async def running() -> str | None:
            here = await self.engine.list(labels)
            return next((c.id for c in here if c.state == RunState.RUNNING), None)

        cid = await running()
        if cid is not None:
            return cid
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                async with contextlib.aclosing(self.engine.events(filters, since=since)) as it:
                    async for _ in it:
                        break
        return await running()

    async def write_stdin(self, name: str, data: bytes) -> None:
        await self.engine.write_stdin(await self._session_container(name), data)

    async def copy_out(self, name: str, path: str, *, max_bytes: int) -> bytes | None:
        return await self.engine.copy_out(
            await self._session_container(name), path, max_bytes=max_bytes
        )

    async def inspect(self, name: str) -> RunInfo:
        """One round of requests: the service, its tasks and the nodes, side by side."""
        try:
            service, rows, down = await asyncio.gather(
                self._get(f"services/{name}"),
                self._get("tasks", {"filters": json.dumps({"service": [name]})}),
                self._down_nodes(),
            )
        except NotFoundError:
            if name in self._removed:
                return self._removed[name]
            raise
        return await self._info(service, newest_task(rows, str(service.get("ID"))), down)

    async def list(self, labels: Mapping[str, str | None]) -> list[RunInfo]:
        services = await self._get(
            "services", {"filters": json.dumps({"label": label_filters(labels)})}
        )
        names = [str((s.get("Spec") or {}).get("Name")) for s in services]
        tasks, down = await asyncio.gather(self._tasks(services), self._down_nodes())
        return [
            await self._info(s, tasks.get(n), down) for s, n in zip(services, names, strict=True)
        ]

    # --- stop / remove --------------------------------------------------------------------------

    async def stop(self, name: str, grace: float = 1.0) -> None:
        try:
            service = await self._get(f"services/{name}")
        except NotFoundError:
            if name in self._removed:
                return
            raise
        tasks, down = await asyncio.gather(self._tasks([service]), self._down_nodes())
        task = tasks.get(name) or {}
        info = await self._info(service, tasks.get(name), down)
        if not info.running:
            return
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if cid and task.get("NodeID") == self.node_id:
            await self.engine.stop(str(cid), grace)
            return
        # not on this engine's node (or not started yet): removing the service stops it
        code = 143
        self._removed[name] = RunInfo(
            id=info.id,
            name=name,
            labels=info.labels,
            state=RunState.EXITED,
            exit=ExitEvent(
                name,
                code,
                False,
                ExitReason.SIGNALLED,
                time.time(),
                "stopped by removing its service",
            ),
            created_at=info.created_at,
            started_at=info.started_at,
            image=info.image,
            node=info.node,
        )
        with self._errors(f"remove service {name}"):
            await self.engine.call(f"services/{name}", "DELETE")
        for woke in self._waiting.get(name, set()):
            woke.set()  # no container event tells them: this run ended here

    async def remove(self, name: str, *, force: bool = False) -> None:
        self._pending.pop(name, None)
        self._removed.pop(name, None)
        self._died.pop(name, None)
        try:
            with self._errors(f"remove service {name}"):
                await self.engine.call(f"services/{name}", "DELETE")
        except NotFoundError:
            return

    def node_runtime(self) -> Runtime:
        """Git sandboxes run on the engine agentkit talks to: the workspaces' node."""
        return self.engine

    # --- images ---------------------------------------------------------------------------------

    async def image_exists(self, image: str) -> bool:
        return await self.engine.image_exists(image)

    async def ensure_image(self, image: str) -> None:
        """The image on the manager (the configured one is built there if missing), and with
        ``AGENTKIT_SWARM_REGISTRY`` pushed where every node can pull it."""
        await self.engine.ensure_image(image)
        if self.registry:
            await self._distribute(image)

    async def _distribute(self, image: str) -> str:
        """The reference nodes pull ``image`` by, pushed once per image id."""
        assert self.registry is not None
        with self._errors(f"inspect image {image}"):
            local = await self.docker._query_json(f"images/{image}/json")
        key = f"{image}@{local.get('Id')}"
        if key not in self._pushed:
            self._pushed[key] = await push_image(
                self.docker, image, self.registry, socket=self._socket
            )
        return self._pushed[key]

    async def aclose(self) -> None:
        await self.engine.aclose()  # the pooled connections, then the client
