"""How the Swarm runtime notices ends and reads output: exit events, ``wait``, ``logs``.

A mixin of :class:`~agentkit.runtimes.swarm.SwarmRuntime` (split out for size; it uses the
runtime's engine client, its task reads and the ends it remembers):

* **exits**: the manager's event stream - the task container's ``die``/``oom`` (container
  events carry the service name) and ``node`` events (a node going down makes its runs
  ``lost``). The manager sees container events of its own node only, and Swarm emits no event
  when a task ends (Docker 20.10): for runs on other nodes, and tasks that never got a
  container, :meth:`wait` re-reads the task on node events and every ``BACKSTOP`` seconds.
* **logs**: a task on the engine's own node is read from its container (complete and ended the
  moment it exits); a task on another node through the service logs API, which does not end
  with the task: a followed stream is closed once the run ended and was quiet for ``LOG_IDLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiodocker
import aiohttp

from agentkit.errors import AgentkitError, NotFoundError
from agentkit.runtimes.base import ExitEvent, LogChunk, RunInfo, RunState
from agentkit.runtimes.docker import DockerRuntime, exit_reason, read_multiplexed
from agentkit.runtimes.swarm_spec import task_state

__all__ = ["BACKSTOP", "LOG_IDLE", "SERVICE_LABEL", "SwarmFollowing", "newest_task"]

BACKSTOP = 2.0  # seconds between task re-reads while waiting (rejected/lost tasks have no event)
LOG_IDLE = 0.3  # a followed service log stream of an ended run closes after this long quiet
SERVICE_LABEL = "com.docker.swarm.service.name"


def newest_task(tasks: list[dict[str, Any]], service_id: str) -> dict[str, Any] | None:
    """The newest task of one service (a replicated job has one; a retried one, more)."""
    mine = [t for t in tasks if str(t.get("ServiceID")) == service_id]
    return max(mine, key=lambda t: str(t.get("CreatedAt")), default=None)


class SwarmFollowing:
    """``exits``, ``wait`` and ``logs`` of the Swarm runtime (mixed into it)."""

    docker: aiodocker.Docker
    engine: DockerRuntime
    node_id: str
    _socket: str
    _removed: dict[str, RunInfo]
    _waiting: dict[str, set[asyncio.Event]]
    _died: dict[str, ExitEvent]
    _down_cache: tuple[float, set[str]] | None

    def _errors(self, what: str) -> Any:
        raise NotImplementedError

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError

    async def inspect(self, name: str) -> RunInfo:
        raise NotImplementedError

    async def list(self, labels: Mapping[str, str | None]) -> list[RunInfo]:
        raise NotImplementedError

    # --- exits ----------------------------------------------------------------------------------

    async def exits(
        self, labels: Mapping[str, str | None], *, since: float | None = None
    ) -> AsyncGenerator[ExitEvent, None]:
        """Task containers' ``die`` (with a preceding ``oom``), and runs lost with a node."""
        oom: set[str] = set()
        filters = {
            "type": ["container", "node"],
            "event": ["die", "oom", "update", "remove"],
        }
        async for data in self.engine.events(filters, since=since):
            actor = data.get("Actor") or {}
            attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
            if data.get("Type") == "node":
                self._down_cache = None
                for info in await self.list(labels):
                    if info.state == RunState.LOST and info.exit is not None:
                        yield info.exit
                continue
            name = attrs.get(SERVICE_LABEL)
            if not name or not all(
                k in attrs and (v is None or attrs[k] == v) for k, v in labels.items()
            ):
                continue
            if data.get("Action") == "oom":
                oom.add(name)
                continue
            code = attrs.get("exitCode", "")
            exit_code = int(code) if code.lstrip("-").isdigit() else None
            killed = name in oom
            oom.discard(name)
            at = data.get("timeNano")
            event = ExitEvent(
                name,
                exit_code,
                killed,
                exit_reason(exit_code, killed),
                at / 1e9 if isinstance(at, int | float) else None,
            )
            self._died.setdefault(name, event)
            yield event

    async def wait(self, name: str) -> ExitEvent:
        """The run's end: its container's ``die`` event (as it happens), or the task seen ended
        (re-read at start, on node events and every ``BACKSTOP`` s: a task rejected before it
        had a container, or lost with its node, has no container event)."""
        filters = {
            "type": ["container", "node"],
            "event": ["die", "oom", "update", "remove"],
        }
        woke = asyncio.Event()
        died: list[ExitEvent] = []
        since = time.time()

        async def listen() -> None:
            oom = False
            async for data in self.engine.events(filters, since=since):
                attrs = (data.get("Actor") or {}).get("Attributes") or {}
                if data.get("Type") == "node":
                    self._down_cache = None
                    woke.set()
                elif attrs.get(SERVICE_LABEL) == name and data.get("Action") == "oom":
                    oom = True
                elif attrs.get(SERVICE_LABEL) == name and data.get("Action") == "die":
                    code = str(attrs.get("exitCode", ""))
                    exit_code = int(code) if code.lstrip("-").isdigit() else None
                    at = data.get("timeNano")
                    died.append(
                        ExitEvent(
                            name,
                            exit_code,
                            oom,
                            exit_reason(exit_code, oom),
                            at / 1e9 if isinstance(at, int | float) else None,
                        )
                    )
                    self._died.setdefault(name, died[0])
                    woke.set()
                    return

        listener = asyncio.create_task(listen(), name=f"swarm wait {name}")
        self._waiting.setdefault(name, set()).add(woke)
        try:
            while True:
                info = await self.inspect(name)
                if info.exit is not None:
                    return info.exit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woke.wait(), BACKSTOP)
                woke.clear()
                if died:
                    return died[0]
                if listener.done() and (listener.cancelled() or listener.exception()):
                    listener = asyncio.create_task(listen(), name=f"swarm wait {name}")
        finally:
            self._waiting.get(name, set()).discard(woke)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, AgentkitError):
                await listener

    # --- logs -----------------------------------------------------------------------------------

    async def _local_container(self, name: str, *, wait: bool) -> str | None:
        """The id of the run's container when it runs on this engine's node (``None``: on
        another node, or it ended without one). ``wait``: until the task has been placed."""
        filters = {"type": ["container"], "event": ["create", "start", "die"]}
        since = time.time()
        woke = asyncio.Event()

        async def listen() -> None:
            async for data in self.engine.events(filters, since=since):
                if ((data.get("Actor") or {}).get("Attributes") or {}).get(SERVICE_LABEL) == name:
                    woke.set()

        listener = asyncio.create_task(listen()) if wait else None
        try:
            while True:
                service, rows = await asyncio.gather(
                    self._get(f"services/{name}"),
                    self._get("tasks", {"filters": json.dumps({"service": [name]})}),
                )
                task = newest_task(rows, str(service.get("ID"))) or {}
                status = task.get("Status") or {}
                cid = (status.get("ContainerStatus") or {}).get("ContainerID")
                if cid:
                    return str(cid) if task.get("NodeID") == self.node_id else None
                placed = task.get("NodeID") and task.get("NodeID") != self.node_id
                if not wait or placed or task_state(task, False) != RunState.PENDING:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woke.wait(), BACKSTOP)
                woke.clear()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, AgentkitError):
                    await listener

    async def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncGenerator[LogChunk, None]:
        """On this engine's node: the task container's own logs (they end exactly when it
        does). Elsewhere: the service logs API, closed once the run ended and went quiet."""
        try:
            cid = await self._local_container(name, wait=follow)
        except NotFoundError:
            if name in self._removed:  # stopped by removing its service: nothing more to read
                return
            raise
        if cid is not None:
            async with contextlib.aclosing(self.engine.logs(cid, follow=follow, tail=tail)) as it:
                async for chunk in it:
                    yield chunk
            if follow:  # it ended: remember how (the task's state catches up a moment later)
                ended = await self.engine.wait(cid)
                self._died.setdefault(name, dataclasses.replace(ended, run=name))
            return
        async with contextlib.aclosing(self._service_logs(name, follow, tail)) as it:
            async for chunk in it:
                yield chunk

    async def _service_logs(
        self, name: str, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogChunk, None]:
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "tail": "all" if tail is None else str(tail),
        }
        ended = asyncio.Event()

        async def watch_end() -> None:
            with contextlib.suppress(AgentkitError):
                await self.wait(name)
            ended.set()

        watcher = asyncio.create_task(watch_end()) if follow else None
        with self._errors(f"logs of {name}"):
            resp = await self.docker._do_query(
                f"services/{name}/logs", "GET", params=params, timeout=aiohttp.ClientTimeout()
            )
            stream = read_multiplexed(resp)
            try:
                while True:
                    chunk = await self._next_chunk(stream, ended if follow else None)
                    if chunk is None:
                        return
                    yield chunk
            finally:
                await stream.aclose()
                resp.close()
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher

    @staticmethod
    async def _next_chunk(
        stream: AsyncGenerator[LogChunk, None], ended: asyncio.Event | None
    ) -> LogChunk | None:
        """The next chunk; ``None`` at the end, or once ``ended`` and quiet for ``LOG_IDLE``."""
        reader = asyncio.ensure_future(anext(stream))
        try:
            if ended is not None and not ended.is_set():
                end = asyncio.ensure_future(ended.wait())
                await asyncio.wait({reader, end}, return_when=asyncio.FIRST_COMPLETED)
                end.cancel()
            if not reader.done():
                if ended is None:
                    return await reader
                done, _ = await asyncio.wait({reader}, timeout=LOG_IDLE)
                if not done:
                    return None
            return reader.result()
        except StopAsyncIteration:
            return None
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await reader
