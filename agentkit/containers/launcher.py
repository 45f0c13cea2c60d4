"""`Launcher`: one spawn, start to finish - checks, image, workspace, record, run.

One object per service, holding what a spawn needs (executor, settings, store, redactor,
runtime), instead of free functions fed the service's fields. The pure pieces (task and timeout
checks, the agent's environment and network, the run spec) live in
:mod:`~agentkit.containers.launch`; the agent's environment is built in ONE place there
(:func:`~agentkit.containers.launch.container_env`).

Order of one spawn: checks (no I/O) -> image available -> workspace prepared (and the run
record's directory, one host command) -> behind the gateway, the run's own network created with
the gateway on it -> record written, run registered with the gateway and, holding an engine slot
(``AGENTKIT_SPAWN_CONCURRENCY``), run created, all side by side -> run started (slot given
back). The run starts only once its
record exists and the gateway knows its token; a failed start is recorded ``failed`` with the
reason and leaves no run. Each spawn's phases are timed (:class:`SpawnPhases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agentkit.containers.launch import (
    SessionOptions,
    check_budget,
    check_network,
    check_task,
    check_timeout,
    has_credentials,
    plan_launch,
    prepare_workspace,
)
from agentkit.containers.models import AgentState, new_agent_id
from agentkit.containers.records import RunRecord

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.containers.runs import RunStore
    from agentkit.executors.base import Executor
    from agentkit.gateway.agents import AgentGateway
    from agentkit.redact import Redactor
    from agentkit.runtimes.base import RunSpec, Runtime

__all__ = ["Launched", "Launcher", "SpawnPhases"]

T = TypeVar("T")
#: how many spawns' phase timings a launcher keeps (newest last; diagnostics and bench/)
PHASES_KEPT = 256


class SpawnPhases:
    """When each phase of one spawn began and ended, in seconds since the spawn was called.

    Phases: ``checks``, ``image``, ``gateway_ready``, ``workspace`` (the host command:
    workspace and record directory), ``gateway_network`` (the run's own network, the gateway
    joined), then side by side ``record`` (meta and task written), ``gateway_register`` and
    ``slot_wait`` (pacing) + ``engine_create``; then ``engine_start``.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.spans: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = (start - self.t0, time.perf_counter() - self.t0)

    async def timed(self, name: str, awaitable: Awaitable[T]) -> T:
        with self.span(name):
            return await awaitable

    def durations(self) -> dict[str, float]:
        return {name: end - start for name, (start, end) in self.spans.items()}


@dataclass(frozen=True, slots=True)
class Launched:
    """A started run: its spec, its record's meta and when it was created."""

    spec: RunSpec
    meta: dict[str, Any]
    created: float
    #: seconds this spawn waited for a slot (0 when it did not have to)
    waited_s: float = 0.0
    #: when each phase began and ended (:class:`SpawnPhases`)
    phases: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.name


class Launcher:
    """Spawns agents for one service."""

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        store: RunStore,
        redactor: Redactor,
        runtime: Callable[[], Awaitable[Runtime]],
        gateway: Callable[[], Awaitable[AgentGateway | None]] | None = None,
    ) -> None:
        self.executor = executor
        #: the agent gateway (``None``: agents get the key and the configured network)
        self._gateway = gateway
        self.settings = settings
        self.store = store
        self.redactor = redactor
        self._runtime = runtime
        self._image_ok: set[str] = set()
        # Spawn bursts are paced: at most this many create + start runs at once (each prepares
        # its workspace and record before it takes a slot).
        self._slots = asyncio.Semaphore(settings.spawn_concurrency)
        #: (run id, :attr:`SpawnPhases.spans`) of the newest spawns, oldest first
        self.phases: deque[tuple[str, dict[str, tuple[float, float]]]] = deque(maxlen=PHASES_KEPT)

    def check(self, task: str, timeout_ms: int, *, scripted: bool) -> None:
        """Everything that can be refused without touching the host."""
        check_task(task)
        check_network(self.settings)
        if not scripted and not has_credentials(self.settings):
            self.settings.require_api_key()  # raises: Claude Code cannot run without them
        check_timeout(timeout_ms)

    async def ensure_image(self, runtime: Runtime, image: str) -> None:
        if image not in self._image_ok:
            await runtime.ensure_image(image)
            self._image_ok.add(image)

    async def prepare_workspace(self, workspace_path: str, *, run_dir: str = "") -> str:
        return await prepare_workspace(
            self.executor, self.settings, workspace_path, run_dir=run_dir
        )

    async def spawn(
        self,
        task: str,
        workspace_path: str,
        timeout_ms: int,
        *,
        image: str | None = None,
        command: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        max_cost_usd: float | None = None,
        session: SessionOptions | None = None,
    ) -> Launched:
        """Check, prepare and start one agent; returns what was started.

        Behind the gateway the spec gets the gateway's environment and network instead of the
        key, and the run is registered with it (its token and budget) before it starts
        (:meth:`agentkit.gateway.agents.AgentGateway.plan_run`). Host preparation (workspace,
        record directory) happens before a spawn takes its turn; at most
        ``AGENTKIT_SPAWN_CONCURRENCY`` spawns create and start their runs at once, the others
        wait for a slot (``Launched.waited_s`` says how long).
        """
        phases = SpawnPhases()
        with phases.span("checks"):
            self.check(task, timeout_ms, scripted=command is not None)
        gateway = await self._gateway() if self._gateway is not None else None
        budget = check_budget(max_cost_usd, self.settings, gateway is not None)
        runtime = await self._runtime()
        image = image or self.settings.image
        with phases.span("image"):
            await self.ensure_image(runtime, image)
        image_start = None
        if gateway is not None:
            with phases.span("gateway_ready"):
                await gateway.client()  # its network must exist before the run is created
                image_start = await gateway.image_start(image)
        run_id = new_agent_id()
        with phases.span("workspace"):
            workspace = await self.prepare_workspace(
                workspace_path, run_dir=self.store.path(run_id)
            )
        created = time.time()
        plan = None
        try:
            if gateway is not None:
                with phases.span("gateway_network"):
                    network = await gateway.open_network(run_id, image_start)
                plan = gateway.plan_run(
                    run_id,
                    workspace=workspace,
                    deadline=created + timeout_ms / 1000,
                    max_cost_usd=budget,
                    network=network,
                    image_start=image_start,
                )
            spec, meta = plan_launch(
                self.settings,
                self.redactor,
                run_id=run_id,
                task=task,
                workspace=workspace,
                image=image,
                timeout_ms=timeout_ms,
                created=created,
                runtime_name=runtime.name,
                node=self.settings.swarm_node,
                command=command,
                entrypoint=entrypoint,
                extra_env=extra_env,
                gateway=plan.additions if plan is not None else None,
                session=session,
            )
            waited = await self.start(
                runtime,
                spec,
                meta,
                task,
                files=session.files if session else None,
                register=plan.register() if plan is not None else None,
                phases=phases,
            )
        except BaseException:
            if gateway is not None:
                with contextlib.suppress(Exception):
                    await gateway.ended(run_id)  # its token dies with the failed start
            raise
        self.phases.append((run_id, dict(phases.spans)))
        return Launched(
            spec,
            meta,
            created,
            waited_s=waited if waited >= 0.001 else 0.0,
            phases=dict(phases.spans),
        )

    async def start(
        self,
        runtime: Runtime,
        spec: RunSpec,
        meta: dict[str, Any],
        task: str,
        *,
        files: Mapping[str, bytes] | None = None,
        register: Awaitable[None] | None = None,
        phases: SpawnPhases | None = None,
    ) -> float:
        """Create the run record and the run side by side (and ``register`` the run with the
        gateway), then start the run; returns the seconds spent waiting for an engine slot.

        The run is created and started holding one of ``AGENTKIT_SPAWN_CONCURRENCY`` slots;
        the record and the registration do not need one. The run starts only once all three
        succeeded. On any failure the run is removed and the record closed as ``failed`` (best
        effort), and the error is raised.
        """
        run_id = spec.name
        phases = phases or SpawnPhases()
        waited = 0.0
        holding = False

        async def create() -> None:
            nonlocal waited, holding
            queued = time.monotonic()
            with phases.span("slot_wait"):
                await self._slots.acquire()
            holding = True
            waited = time.monotonic() - queued
            with phases.span("engine_create"):
                await runtime.create(spec)

        steps = [
            phases.timed("record", self.store.create(run_id, meta, task, mkdir=False)),
            create(),
        ]
        if register is not None:
            steps.append(phases.timed("gateway_register", register))
        try:
            try:
                outcomes = await asyncio.gather(*steps, return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
                if files:  # e.g. a saved session to resume, before the agent starts
                    await runtime.copy_in(run_id, files, owner=spec.user)
                with phases.span("engine_start"):
                    await runtime.start(run_id)
            finally:
                if holding:
                    self._slots.release()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await runtime.remove(run_id, force=True)
            failed = RunRecord.from_dict(meta)
            failed.state = AgentState.FAILED
            failed.finished_at = time.time()
            failed.error = f"could not start: {self.redactor.redact(str(exc))}"
            with contextlib.suppress(Exception):
                data = failed.to_dict()
                await self.store.write_result(run_id, data)
                await self.store.append_index(data)
            raise
        return waited
