"""`DockerRuntime`: the runtime contract on one Docker Engine (Engine API over aiodocker).

One run is one container. The Docker words stay here: container states, the ``die`` and ``oom``
events, and what exit statuses mean (124 is the agent image's ``timeout`` firing at the
deadline; 137/143 are SIGKILL/SIGTERM) are translated into :class:`~agentkit.runtimes.base.
ExitEvent`/:class:`~agentkit.runtimes.base.RunState` by :func:`exit_reason` and
:meth:`DockerRuntime.info_from_inspect`. No ``docker`` CLI process is ever started, and every
backend error leaves as an :mod:`agentkit.errors` type (:mod:`agentkit.runtimes.docker_engine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import re
import struct
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiodocker
import aiohttp

from agentkit.errors import ConflictError, NotFoundError, RuntimeUnavailable, ToolError
from agentkit.runtimes.archive import pack, unpack_one
from agentkit.runtimes.base import (
    STDERR,
    STDOUT,
    ExitEvent,
    ExitReason,
    LogChunk,
    RunInfo,
    RunSpec,
    RunState,
    Runtime,
)
from agentkit.runtimes.docker_engine import docker_errors
from agentkit.runtimes.engine_http import EngineHTTP

if TYPE_CHECKING:
    from agentkit.config import Settings

__all__ = [
    "DockerRuntime",
    "exit_reason",
    "label_filters",
    "parse_time",
    "read_multiplexed",
    "without_env",
]

logger = logging.getLogger("agentkit.runtimes")

#: exit status of the agent image's ``timeout`` when the deadline passed
DEADLINE_EXIT = 124
#: 128 + SIGKILL / SIGTERM
SIGNAL_EXITS = (137, 143)

_STATES = {
    "created": RunState.PENDING,
    "restarting": RunState.RUNNING,
    "running": RunState.RUNNING,
    "paused": RunState.RUNNING,
    "removing": RunState.EXITED,
    "exited": RunState.EXITED,
    "dead": RunState.EXITED,
}


def exit_reason(exit_code: int | None, oom: bool) -> ExitReason:
    """Docker's exit status (and OOM flag) in neutral words."""
    if oom and exit_code != 0:
        return ExitReason.OOM
    if exit_code == DEADLINE_EXIT:
        return ExitReason.DEADLINE
    if exit_code in SIGNAL_EXITS:
        return ExitReason.SIGNALLED
    return ExitReason.EXITED


def parse_time(value: Any) -> float | None:
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


def without_env(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Inspect output without ``Config.Env``: it holds the agent's secrets (ANTHROPIC_API_KEY),
    which must never be kept where they could be logged or returned."""
    config = data.get("Config")
    if not isinstance(config, Mapping) or "Env" not in config:
        return data
    return {**data, "Config": {k: v for k, v in config.items() if k != "Env"}}


def label_filters(labels: Mapping[str, str | None]) -> list[str]:
    return [key if value is None else f"{key}={value}" for key, value in labels.items()]


async def read_multiplexed(resp: aiohttp.ClientResponse) -> AsyncGenerator[LogChunk, None]:
    """Docker's multiplexed log stream (8-byte frame headers: stream id, 3 zero bytes,
    big-endian length) as chunks. Our runs never have a TTY, so it is always multiplexed."""
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


def _int(value: Any) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if text.lstrip("-").isdigit() else None


class DockerRuntime(Runtime):
    """:class:`Runtime` over one Docker Engine (one aiodocker client).

    ``settings``: when given, :meth:`ensure_image` builds the configured agent image
    (``AGENTKIT_IMAGE``) on first use instead of refusing it.
    """

    name = "docker"

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        socket: str = "the Docker socket",
        settings: Settings | None = None,
        engine: EngineHTTP | None = None,
    ) -> None:
        self.docker = docker
        self.settings = settings
        self._socket = socket
        #: the hot queries (inspect, list) over pooled keep-alive connections, when given
        self.engine = engine
        self._stdin: dict[str, Any] = {}  # run name -> open attach stream (aiodocker Stream)
        self._stdin_locks: dict[str, asyncio.Lock] = {}

    def _errors(self, what: str) -> Any:
        return docker_errors(what, self._socket)

    @staticmethod
    def create_body(spec: RunSpec) -> dict[str, Any]:
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
            "ReadonlyRootfs": spec.read_only_root,
        }
        if spec.tmpfs:
            host["Tmpfs"] = {
                t.target: f"rw,nosuid,nodev,noexec,size={t.size_bytes},mode={t.mode:o}"
                for t in spec.tmpfs
            }
        if spec.memory_bytes:
            host["Memory"] = spec.memory_bytes
            host["MemorySwap"] = spec.memory_bytes  # no swap on top of the limit
        if spec.nano_cpus:
            host["NanoCpus"] = spec.nano_cpus
        if spec.pids_limit:
            host["PidsLimit"] = spec.pids_limit
        if spec.nofile:
            host["Ulimits"] = [{"Name": "nofile", "Soft": spec.nofile[0], "Hard": spec.nofile[1]}]
        if spec.log_max_bytes:
            host["LogConfig"] = {
                "Type": "json-file",
                "Config": {"max-size": str(spec.log_max_bytes), "max-file": "1"},
            }
        body: dict[str, Any] = {
            "Image": spec.image,
            "Labels": dict(spec.labels),
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "User": spec.user,
            "Tty": False,
            # a session keeps stdin open across attaches (StdinOnce false): a controller that
            # restarts attaches again; the agent's entrypoint decides when its input ends
            "OpenStdin": spec.open_stdin,
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

    async def create(self, spec: RunSpec) -> str:
        with self._errors(f"create container {spec.name}"):
            data = await self.docker._query_json(
                "containers/create",
                method="POST",
                params={"name": spec.name},
                data=self.create_body(spec),
            )
        return str(data["Id"])

    async def call(
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
            await self.call(f"containers/{name}/start", "POST")

    @staticmethod
    def info_from_inspect(data: Mapping[str, Any]) -> RunInfo:
        """``GET /containers/{id}/json`` in neutral words."""
        state = data.get("State") or {}
        config = data.get("Config") or {}
        status = str(state.get("Status", "unknown"))
        run_state = _STATES.get(status, RunState.LOST)
        name = str(data.get("Name", "")).lstrip("/")
        exit_event = None
        if run_state == RunState.EXITED:
            code = _int(state.get("ExitCode"))
            oom = bool(state.get("OOMKilled"))
            exit_event = ExitEvent(
                run=name,
                exit_code=code,
                oom=oom,
                reason=exit_reason(code, oom),
                at=parse_time(state.get("FinishedAt")),
                error=state.get("Error") or None,
            )
        return RunInfo(
            id=str(data.get("Id", "")),
            name=name,
            labels=dict(config.get("Labels") or {}),
            state=run_state,
            exit=exit_event,
            created_at=parse_time(data.get("Created")),
            started_at=parse_time(state.get("StartedAt")),
            image=config.get("Image"),
            raw=without_env(data),
        )

    async def inspect(self, name: str) -> RunInfo:
        with self._errors(f"inspect {name}"):
            if self.engine is not None:
                data = await self.engine.get_json(f"containers/{name}/json")
            else:
                data = await self.docker._query_json(f"containers/{name}/json")
        return self.info_from_inspect(data)

    async def list(self, labels: Mapping[str, str | None]) -> list[RunInfo]:
        params = {"all": "1", "filters": json.dumps({"label": label_filters(labels)})}
        with self._errors("list containers"):
            if self.engine is not None:
                rows = await self.engine.get_json("containers/json", params)
            else:
                rows = await self.docker._query_json("containers/json", params=params)
        out: list[RunInfo] = []
        for row in rows:
            name = str((row.get("Names") or [""])[0]).lstrip("/")
            match = _EXITED.match(str(row.get("Status", "")))
            state = _STATES.get(str(row.get("State", "")), RunState.LOST)
            code = int(match.group(1)) if match else None
            created = row.get("Created")
            exit_event = None
            if state == RunState.EXITED:  # the cheap list does not say OOM: inspect does
                exit_event = ExitEvent(name, code, False, exit_reason(code, False))
            out.append(
                RunInfo(
                    id=str(row.get("Id", "")),
                    name=name,
                    labels=dict(row.get("Labels") or {}),
                    state=state,
                    exit=exit_event,
                    created_at=float(created) if isinstance(created, int | float) else None,
                    image=row.get("Image"),
                    raw=row,
                )
            )
        return out

    async def stop(self, name: str, grace: float = 1.0) -> None:
        with self._errors(f"stop {name}"):
            await self.call(
                f"containers/{name}/stop",
                "POST",
                {"t": max(round(grace), 0)},
                aiohttp.ClientTimeout(total=grace + 30),
            )

    async def wait(self, name: str) -> ExitEvent:
        with self._errors(f"wait for {name}"):
            data = await self.docker._query_json(
                f"containers/{name}/wait",
                method="POST",
                params={"condition": "not-running"},
                timeout=aiohttp.ClientTimeout(),
            )
        code = _int(data.get("StatusCode"))
        if code == 137:  # SIGKILL: the kernel's OOM killer or a stop; only inspect knows
            try:
                info = await self.inspect(name)
            except NotFoundError:
                info = None
            if info is not None and info.exit is not None:
                return info.exit
        return ExitEvent(name, code, False, exit_reason(code, False))

    async def remove(self, name: str, *, force: bool = False) -> None:
        await self._drop_stdin(name)
        try:
            with self._errors(f"remove {name}"):
                await self.call(
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
                async for chunk in read_multiplexed(resp):
                    yield chunk
            finally:
                resp.close()

    async def events(
        self, filters: Mapping[str, Sequence[str]], *, since: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The engine's raw events matching ``filters`` (``since``: replayed from then on)."""
        params = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = f"{since:.9f}"
        with self._errors("follow engine events"):
            resp = await self.docker._do_query(
                "events", "GET", params=params, timeout=aiohttp.ClientTimeout()
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
                    if isinstance(data, dict):
                        yield data
            finally:
                resp.close()

    async def exits(
        self, labels: Mapping[str, str | None], *, since: float | None = None
    ) -> AsyncGenerator[ExitEvent, None]:
        """``die`` events, told apart from OOM kills by the ``oom`` event that precedes them."""
        oom: set[str] = set()
        filters = {"type": ["container"], "label": label_filters(labels), "event": ["die", "oom"]}
        async for data in self.events(filters, since=since):
            actor = data.get("Actor") or {}
            attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
            name = attrs.get("name", "")
            if data.get("Action") == "oom":
                oom.add(name)
                continue
            code = _int(attrs.get("exitCode"))
            killed = name in oom
            oom.discard(name)
            at = data.get("timeNano")
            yield ExitEvent(
                run=name,
                exit_code=code,
                oom=killed,
                reason=exit_reason(code, killed),
                at=at / 1e9 if isinstance(at, int | float) else None,
            )

    # --- sessions ---------------------------------------------------------------------------------

    async def write_stdin(self, name: str, data: bytes) -> None:
        """Through one attach per run (``POST /containers/{name}/attach?stdin=1``, a hijacked
        connection over the same socket or SSH channel), opened on first use and reopened once
        when it broke (e.g. after the engine connection dropped)."""
        lock = self._stdin_locks.setdefault(name, asyncio.Lock())
        async with lock:
            reused = name in self._stdin
            try:
                await self._write_stdin(name, data)
            except (RuntimeUnavailable, OSError, RuntimeError):
                await self._drop_stdin(name)
                if not reused:
                    raise
                await self._write_stdin(name, data)  # the kept attach had broken: once more

    async def _write_stdin(self, name: str, data: bytes) -> None:
        with self._errors(f"write to the input of {name}"):
            # asked every time (a fraction of a millisecond): a kept attach to a container that
            # ended would swallow the write without an error
            info = await self.inspect(name)
            if info.state != RunState.RUNNING:
                await self._drop_stdin(name)
                raise ConflictError(f"{name} is not running: its input is closed")
            if not (info.raw.get("Config") or {}).get("OpenStdin"):
                raise ToolError(f"{name} was not started with an open input")
            stream = self._stdin.get(name)
            if stream is None:
                stream = self.docker.containers.container(name).attach(
                    stdin=True, stdout=False, stderr=False, logs=False
                )
                self._stdin[name] = stream
            await stream.write_in(data)

    async def _drop_stdin(self, name: str) -> None:
        stream = self._stdin.pop(name, None)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close()

    async def copy_out(self, name: str, path: str, *, max_bytes: int) -> bytes | None:
        """``GET /containers/{name}/archive?path=...`` (works on exited containers), read up to
        ``max_bytes`` plus the tar framing; the one regular file is taken from it."""
        limit = max_bytes + 64 * 1024
        try:
            with self._errors(f"copy {path} out of {name}"):
                resp = await self.docker._do_query(
                    f"containers/{name}/archive",
                    "GET",
                    params={"path": path},
                    timeout=aiohttp.ClientTimeout(total=120),
                )
                chunks = bytearray()
                try:
                    while len(chunks) <= limit:
                        piece = await resp.content.read(64 * 1024)
                        if not piece:
                            break
                        chunks.extend(piece)
                finally:
                    resp.close()
                data = bytes(chunks)
        except NotFoundError:
            return None
        if len(data) > limit:
            raise ToolError(f"{path} in {name} is larger than {max_bytes} bytes")
        return unpack_one(data, posixpath.basename(path), max_bytes=max_bytes)

    async def copy_in(self, name: str, files: Mapping[str, bytes], *, owner: str) -> None:
        archive = pack(files, owner=owner)
        with self._errors(f"copy files into {name}"):
            resp = await self.docker._do_query(
                f"containers/{name}/archive",
                "PUT",
                params={"path": "/", "noOverwriteDirNonDir": "true"},
                data=archive,
                headers={"Content-Type": "application/x-tar"},
                timeout=aiohttp.ClientTimeout(total=120),
            )
            try:
                await resp.read()
            finally:
                resp.release()

    async def image_exists(self, image: str) -> bool:
        try:
            with self._errors(f"inspect image {image}"):
                await self.docker._query_json(f"images/{image}/json")
        except NotFoundError:
            return False
        return True

    async def ensure_image(self, image: str) -> None:
        """Refuse a missing image, except the configured agent image: that one is built."""
        if await self.image_exists(image):
            return
        if self.settings is None or image != self.settings.image:
            raise ToolError(f"image {image} does not exist on the host")
        from agentkit.runtimes.image import ensure_image as build_image

        logger.info("agent image %s is missing: building it (first use)", image)
        await build_image(self.docker, self.settings)

    async def aclose(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()
        for name in list(self._stdin):
            await self._drop_stdin(name)
        await self.docker.close()
