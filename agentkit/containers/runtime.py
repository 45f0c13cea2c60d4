"""The container runtime seam: :class:`ContainerRuntime`; :class:`DockerRuntime` on the Engine API.

Services speak only this interface (specs in, :class:`ContainerInfo` out), so a runtime on a
cluster engine (Docker Swarm services, Kubernetes Jobs) can sit beside the Docker one later
without changing tools or services. :class:`DockerRuntime` uses the Engine API over one aiodocker
client (see :mod:`agentkit.containers.docker`); it never starts a ``docker`` CLI process, and
every backend error leaves it as an :mod:`agentkit.errors` type.
"""

from __future__ import annotations

import abc
import asyncio
import json
import re
import struct
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp

from agentkit.containers.docker import docker_errors
from agentkit.errors import ConfigError

__all__ = [
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "DockerRuntime",
    "LogChunk",
    "Mount",
    "RuntimeEvent",
    "parse_memory",
]

STDOUT, STDERR = 1, 2


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to create one agent container (runtime-neutral)."""

    name: str
    image: str
    labels: Mapping[str, str]
    env: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workdir: str | None = None
    user: str = "1001:1001"
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    pids_limit: int | None = None
    network: str | None = None
    init: bool = True
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    drop_all_capabilities: bool = True


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as the runtime reports it (from inspect, or the cheaper list)."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: str  # created | running | paused | restarting | removing | exited | dead
    exit_code: int | None = None
    oom_killed: bool = False
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    image: str | None = None
    error: str | None = None
    #: the engine's answer as is, except the container's environment (secrets)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting", "paused", "created")


@dataclass(frozen=True, slots=True)
class LogChunk:
    stream: int  # 1 stdout, 2 stderr
    data: bytes


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    action: str  # start | die | oom | stop | kill | destroy | ...
    name: str
    id: str
    attributes: Mapping[str, str]
    time_nano: int | None = None


class ContainerRuntime(abc.ABC):
    """Lifecycle of containers on one engine. All methods raise :mod:`agentkit.errors` types."""

    name: str = "abstract"

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns the engine's id."""

    @abc.abstractmethod
    async def start(self, name: str) -> None: ...

    @abc.abstractmethod
    async def inspect(self, name: str) -> ContainerInfo:
        """Raises ``NotFoundError`` when there is no such container."""

    @abc.abstractmethod
    async def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        """All containers (running or not) carrying ``labels`` (value ``None``: key only)."""

    @abc.abstractmethod
    async def stop(self, name: str, grace: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Already stopped is fine."""

    @abc.abstractmethod
    async def wait(self, name: str) -> int:
        """Block until the container is not running; its exit status."""

    @abc.abstractmethod
    async def remove(self, name: str, *, force: bool = False) -> None:
        """Remove the container (and its anonymous volumes). Already gone is fine."""

    @abc.abstractmethod
    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncGenerator[LogChunk, None]:
        """The container's output, stdout and stderr apart; ``follow`` until it exits."""

    @abc.abstractmethod
    def events(
        self, labels: Mapping[str, str | None], *, actions: tuple[str, ...] = ()
    ) -> AsyncGenerator[RuntimeEvent, None]:
        """Container events (start, die, oom, destroy, ...) for containers with ``labels``;
        only ``actions`` when given."""

    @abc.abstractmethod
    async def image_exists(self, image: str) -> bool: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# --- helpers ----------------------------------------------------------------------------------

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_memory(value: str | int) -> int:
    """``"4g"`` / ``"512m"`` / ``"64MiB"`` / ``1048576`` -> bytes (binary units, like docker)."""
    if isinstance(value, int):
        return value
    match = _MEMORY.match(value)
    if not match:
        raise ConfigError(
            f"invalid memory size {value!r}: use e.g. 4g, 512m (AGENTKIT_CONTAINER_MEMORY)"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(number * scale)


def _parse_time(value: Any) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps -> unix seconds (``0001-...`` means unset)."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    offset = "+00:00"
    match = re.match(r"^(.*?)([+-]\d\d:\d\d)$", text)
    if match and "T" in match.group(1):
        text, offset = match.group(1), match.group(2)
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(text + offset).timestamp()
    except ValueError:
        return None


_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def _without_env(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Inspect output without ``Config.Env``: it holds the agent's secrets (ANTHROPIC_API_KEY),
    which must never be kept where they could be logged or returned."""
    config = data.get("Config")
    if not isinstance(config, Mapping) or "Env" not in config:
        return data
    return {**data, "Config": {k: v for k, v in config.items() if k != "Env"}}


def _label_filters(labels: Mapping[str, str | None]) -> list[str]:
    return [key if value is None else f"{key}={value}" for key, value in labels.items()]


class DockerRuntime(ContainerRuntime):
    """:class:`ContainerRuntime` over the Docker Engine API (one aiodocker client)."""

    name = "docker"

    def __init__(self, docker: aiodocker.Docker, *, socket: str = "the Docker socket") -> None:
        self.docker = docker
        self._socket = socket

    def _errors(self, what: str) -> Any:
        return docker_errors(what, self._socket)

    @staticmethod
    def create_body(spec: ContainerSpec) -> dict[str, Any]:
        """The Engine API ``POST /containers/create`` body for ``spec`` (pure; tested)."""
        host: dict[str, Any] = {
            "Init": spec.init,
            "Mounts": [
                {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
                for m in spec.mounts
            ],
            "SecurityOpt": ["no-new-privileges"] if spec.no_new_privileges else [],
            "CapDrop": ["ALL"] if spec.drop_all_capabilities else [],
            "CapAdd": list(spec.cap_add),
            "NetworkMode": spec.network or "bridge",
            "RestartPolicy": {"Name": "no"},
            "AutoRemove": False,
            "Privileged": False,
            "ReadonlyRootfs": False,
        }
        if spec.memory_bytes:
            host["Memory"] = spec.memory_bytes
            host["MemorySwap"] = spec.memory_bytes  # no swap on top of the limit
        if spec.nano_cpus:
            host["NanoCpus"] = spec.nano_cpus
        if spec.pids_limit:
            host["PidsLimit"] = spec.pids_limit
        body: dict[str, Any] = {
            "Image": spec.image,
            "Labels": dict(spec.labels),
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "User": spec.user,
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "HostConfig": host,
        }
        if spec.command is not None:
            body["Cmd"] = list(spec.command)
        if spec.entrypoint is not None:
            body["Entrypoint"] = list(spec.entrypoint)
        if spec.workdir:
            body["WorkingDir"] = spec.workdir
        return body

    async def create(self, spec: ContainerSpec) -> str:
        with self._errors(f"create container {spec.name}"):
            data = await self.docker._query_json(
                "containers/create",
                method="POST",
                params={"name": spec.name},
                data=self.create_body(spec),
            )
        return str(data["Id"])

    async def _call(
        self,
        path: str,
        method: str,
        params: Mapping[str, Any] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        """A request whose body does not matter; the response is always released."""
        resp = await self.docker._do_query(
            path,
            method,
            params=dict(params or {}),
            timeout=client_timeout or aiohttp.ClientTimeout(total=60),
        )
        try:
            await resp.read()
        finally:
            resp.release()

    async def start(self, name: str) -> None:
        with self._errors(f"start {name}"):
            await self._call(f"containers/{name}/start", "POST")

    @staticmethod
    def _info(data: Mapping[str, Any]) -> ContainerInfo:
        state = data.get("State") or {}
        config = data.get("Config") or {}
        created = data.get("Created")
        return ContainerInfo(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")).lstrip("/"),
            labels=dict(config.get("Labels") or {}),
            state=str(state.get("Status", "unknown")),
            exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
            oom_killed=bool(state.get("OOMKilled")),
            created_at=_parse_time(created),
            started_at=_parse_time(state.get("StartedAt")),
            finished_at=_parse_time(state.get("FinishedAt")),
            image=config.get("Image"),
            error=state.get("Error") or None,
            raw=_without_env(data),
        )

    async def inspect(self, name: str) -> ContainerInfo:
        with self._errors(f"inspect {name}"):
            data = await self.docker._query_json(f"containers/{name}/json")
        return self._info(data)

    async def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        params = {"all": "1", "filters": json.dumps({"label": _label_filters(labels)})}
        with self._errors("list containers"):
            rows = await self.docker._query_json("containers/json", params=params)
        out: list[ContainerInfo] = []
        for row in rows:
            names = row.get("Names") or [""]
            status = str(row.get("Status", ""))
            match = _EXITED.match(status)
            created = row.get("Created")
            out.append(
                ContainerInfo(
                    id=str(row.get("Id", "")),
                    name=str(names[0]).lstrip("/"),
                    labels=dict(row.get("Labels") or {}),
                    state=str(row.get("State", "unknown")),
                    exit_code=int(match.group(1)) if match else None,
                    created_at=float(created) if isinstance(created, int | float) else None,
                    image=row.get("Image"),
                    raw=row,
                )
            )
        return out

    async def stop(self, name: str, grace: float = 1.0) -> None:
        with self._errors(f"stop {name}"):
            await self._call(
                f"containers/{name}/stop",
                "POST",
                {"t": max(round(grace), 0)},
                aiohttp.ClientTimeout(total=grace + 30),
            )

    async def wait(self, name: str) -> int:
        with self._errors(f"wait for {name}"):
            data = await self.docker._query_json(
                f"containers/{name}/wait",
                method="POST",
                params={"condition": "not-running"},
                timeout=aiohttp.ClientTimeout(),
            )
        return int(data.get("StatusCode", -1))

    async def remove(self, name: str, *, force: bool = False) -> None:
        from agentkit.errors import ConflictError, NotFoundError

        try:
            with self._errors(f"remove {name}"):
                await self._call(
                    f"containers/{name}", "DELETE", {"force": "1" if force else "0", "v": "1"}
                )
        except NotFoundError:
            return
        except ConflictError as exc:  # "removal already in progress"
            if "in progress" not in str(exc):
                raise

    async def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncGenerator[LogChunk, None]:
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "tail": "all" if tail is None else str(tail),
        }
        with self._errors(f"logs of {name}"):
            resp = await self.docker._do_query(
                f"containers/{name}/logs", "GET", params=params, timeout=aiohttp.ClientTimeout()
            )
            try:
                # Our containers never have a TTY, so the stream is always multiplexed
                # (8-byte frame headers: stream id, 3 zero bytes, big-endian length).
                content = resp.content
                while True:
                    try:
                        header = await content.readexactly(8)
                    except asyncio.IncompleteReadError as exc:
                        if exc.partial:
                            yield LogChunk(STDOUT, exc.partial)
                        return
                    stream, size = header[0], struct.unpack(">I", header[4:8])[0]
                    data = await content.readexactly(size) if size else b""
                    yield LogChunk(STDERR if stream == 2 else STDOUT, data)
            finally:
                resp.close()

    async def events(
        self, labels: Mapping[str, str | None], *, actions: tuple[str, ...] = ()
    ) -> AsyncGenerator[RuntimeEvent, None]:
        filters = {"type": ["container"], "label": _label_filters(labels)}
        if actions:
            filters["event"] = list(actions)
        with self._errors("follow container events"):
            resp = await self.docker._do_query(
                "events",
                "GET",
                params={"filters": json.dumps(filters)},
                timeout=aiohttp.ClientTimeout(),
            )
            try:
                while True:
                    line = await resp.content.readline()
                    if not line:
                        return
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    actor = data.get("Actor") or {}
                    attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
                    yield RuntimeEvent(
                        action=str(data.get("Action") or data.get("status") or ""),
                        name=attrs.get("name", ""),
                        id=str(actor.get("ID") or data.get("id") or ""),
                        attributes=attrs,
                        time_nano=data.get("timeNano"),
                    )
            finally:
                resp.close()

    async def image_exists(self, image: str) -> bool:
        from agentkit.errors import NotFoundError

        try:
            with self._errors(f"inspect image {image}"):
                await self.docker._query_json(f"images/{image}/json")
        except NotFoundError:
            return False
        return True

    async def aclose(self) -> None:
        await self.docker.close()
