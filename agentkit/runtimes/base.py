"""The runtime contract: how services run one isolated process (an agent, a git sandbox).

This module imports no backend. A runtime takes a :class:`RunSpec` (image, command, env,
mounts, limits, hardening, labels, an optional node to pin to) and reports back in neutral
terms only:

* :class:`RunInfo` - a run as the engine sees it (``pending`` / ``running`` / ``exited`` /
  ``lost``), with an :class:`ExitEvent` once it ended;
* :class:`ExitEvent` - ``(run, exit_code, oom, reason, at)``: how a run ended. ``reason`` is an
  :class:`ExitReason`; engine words (Docker's ``die``, exit statuses 137/143/124, Swarm task
  states) are translated inside each backend and never leave it;
* :class:`LogChunk` - a piece of stdout or stderr.

Operations (all raise :mod:`agentkit.errors` types only): ``create`` + ``start``, ``inspect``,
``list`` by labels, ``exits`` (one stream of exit events for runs with some labels), ``wait``
(one run's exit), ``logs`` (with ``follow``), ``stop`` (with a grace period), ``remove``,
``image_exists`` / ``ensure_image``.

Backends: :mod:`~agentkit.runtimes.docker` (one Docker Engine), :mod:`~agentkit.runtimes.swarm`
(Docker Swarm services, one replicated job per run) and :mod:`~agentkit.runtimes.memory`
(in-process, for fast tests of the services). A Kubernetes runtime would map a run to a ``Job``
with ``backoffLimit: 0`` and one pod; see ``docs/scale-out.md``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentkit.errors import ConfigError

__all__ = [
    "STDERR",
    "STDOUT",
    "ExitEvent",
    "ExitReason",
    "LogChunk",
    "Mount",
    "RunInfo",
    "RunSpec",
    "RunState",
    "Runtime",
    "Tmpfs",
    "parse_memory",
    "parse_nofile",
]

STDOUT, STDERR = 1, 2


class RunState(StrEnum):
    """Where a run is, in every runtime's words."""

    PENDING = "pending"  # created, scheduled or starting; not running yet
    RUNNING = "running"
    EXITED = "exited"  # ended (see its ExitEvent)
    LOST = "lost"  # the engine no longer knows how it ended (node gone, task orphaned)


class ExitReason(StrEnum):
    """Why a run ended."""

    EXITED = "exited"  # the process ended by itself; ``exit_code`` says how
    DEADLINE = "deadline"  # the run's own deadline guard ended it (the image's ``timeout``)
    SIGNALLED = "signalled"  # terminated or killed from outside (stop, kill)
    OOM = "oom"  # killed for using more memory than its limit
    LOST = "lost"  # its node or engine went away: how it ended is unknown
    REJECTED = "rejected"  # it never ran: image missing on the node, no node fits, bad spec


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Tmpfs:
    """A memory-backed scratch folder at ``target`` holding at most ``size_bytes`` (``nosuid``,
    ``nodev``; ``noexec`` where the engine allows options), created with ``mode``."""

    target: str
    size_bytes: int
    mode: int = 0o1777


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything needed to run one isolated process (runtime-neutral).

    ``node`` pins the run to one node of a cluster (the node its workspace lives on); a
    single-engine runtime ignores it.
    """

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
    #: open-file limit of the run's processes, ``(soft, hard)`` (None: the engine's default)
    nofile: tuple[int, int] | None = None
    network: str | None = None
    init: bool = True
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    drop_all_capabilities: bool = True
    node: str | None = None
    #: the engine keeps at most this many bytes of the run's output (None: the engine's default)
    log_max_bytes: int | None = None
    #: keep the run's standard input open for :meth:`Runtime.write_stdin` (a session)
    open_stdin: bool = False
    #: the image's filesystem is read-only: the process writes only to its mounts and ``tmpfs``
    read_only_root: bool = False
    #: bounded scratch folders in memory (with ``read_only_root``: the only writable places
    #: besides the mounts)
    tmpfs: tuple[Tmpfs, ...] = ()


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """How one run ended: ``(run, exit_code, oom, reason, at)`` plus the engine's message."""

    run: str
    exit_code: int | None
    oom: bool
    reason: ExitReason
    at: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as the runtime reports it (from inspect, or the cheaper list)."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: RunState
    exit: ExitEvent | None = None
    created_at: float | None = None
    started_at: float | None = None
    image: str | None = None
    node: str | None = None
    #: the engine's answer as is, except the run's environment (secrets)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.state in (RunState.PENDING, RunState.RUNNING)

    @property
    def exit_code(self) -> int | None:
        return self.exit.exit_code if self.exit else None

    @property
    def oom_killed(self) -> bool:
        return bool(self.exit and self.exit.oom)

    @property
    def finished_at(self) -> float | None:
        return self.exit.at if self.exit else None

    @property
    def error(self) -> str | None:
        return self.exit.error if self.exit else None


@dataclass(frozen=True, slots=True)
class LogChunk:
    stream: int  # 1 stdout, 2 stderr
    data: bytes


class Runtime(abc.ABC):
    """Lifecycle of runs on one engine or cluster. All methods raise :mod:`agentkit.errors`
    types; ``NotFoundError`` when there is no such run."""

    name: str = "abstract"

    @abc.abstractmethod
    async def create(self, spec: RunSpec) -> str:
        """Prepare (not start) a run named ``spec.name``; returns the engine's id."""

    @abc.abstractmethod
    async def start(self, name: str) -> None:
        """Start a created run."""

    @abc.abstractmethod
    async def inspect(self, name: str) -> RunInfo: ...

    @abc.abstractmethod
    async def list(self, labels: Mapping[str, str | None]) -> list[RunInfo]:
        """All runs (running or not, not removed) carrying ``labels`` (``None``: key only)."""

    @abc.abstractmethod
    def exits(
        self, labels: Mapping[str, str | None], *, since: float | None = None
    ) -> AsyncGenerator[ExitEvent, None]:
        """Exit events of runs carrying ``labels``, as they happen (until closed or the engine
        connection breaks; then an :mod:`agentkit.errors` error is raised). ``since`` (unix
        time) first replays the exits that happened from then on."""

    @abc.abstractmethod
    async def wait(self, name: str) -> ExitEvent:
        """Block until the run ended; how it ended."""

    @abc.abstractmethod
    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncGenerator[LogChunk, None]:
        """The run's output, stdout and stderr apart; ``follow`` until it ends."""

    @abc.abstractmethod
    async def stop(self, name: str, grace: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Already ended is fine."""

    @abc.abstractmethod
    async def remove(self, name: str, *, force: bool = False) -> None:
        """Forget the run (and anything it left on the engine). Already gone is fine."""

    @abc.abstractmethod
    async def image_exists(self, image: str) -> bool: ...

    async def ensure_image(self, image: str) -> None:
        """Make ``image`` available to new runs, or raise ``ToolError`` saying why not.

        The default only checks; a runtime that can build or distribute images overrides it.
        """
        from agentkit.errors import ToolError

        if not await self.image_exists(image):
            raise ToolError(f"image {image} does not exist on the {self.name} runtime")

    def node_runtime(self) -> Runtime:
        """The runtime for short helper runs (git sandboxes) on the node whose disk holds the
        workspaces: this runtime on a single engine; a cluster runtime returns that node's
        engine (no scheduling round trip for a few seconds of git)."""
        return self

    # --- sessions: input and files (optional; the default says the runtime cannot) ---------------

    async def write_stdin(self, name: str, data: bytes) -> None:
        """Write ``data`` to the standard input of a running run created with ``open_stdin``.

        The run's input stays open after this (other writers may follow; a restarted controller
        writes again). Raises ``ToolError`` when the runtime cannot reach the run's input.
        """
        from agentkit.errors import ToolError

        raise ToolError(f"the {self.name} runtime cannot write to a run's input")

    async def copy_out(self, name: str, path: str, *, max_bytes: int) -> bytes | None:
        """The content of the regular file ``path`` inside a run (running or ended, not yet
        removed); ``None`` when there is no such regular file. A file larger than ``max_bytes``
        raises ``ToolError``: nothing larger is ever read into memory."""
        from agentkit.errors import ToolError

        raise ToolError(f"the {self.name} runtime cannot copy files out of a run")

    async def copy_in(self, name: str, files: Mapping[str, bytes], *, owner: str) -> None:
        """Put ``files`` (absolute path -> content) into a created, not yet started run, owned
        by ``owner`` (``uid:gid``); missing parent directories are created."""
        from agentkit.errors import ToolError

        raise ToolError(f"the {self.name} runtime cannot copy files into a run")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# --- helpers ----------------------------------------------------------------------------------

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_nofile(value: str) -> tuple[int, int]:
    """``"8192"`` / ``"4096:8192"`` -> ``(soft, hard)`` open files (AGENTKIT_CONTAINER_NOFILE)."""
    soft_text, _, hard_text = value.strip().partition(":")
    try:
        soft = int(soft_text.strip())
        hard = int(hard_text.strip()) if hard_text.strip() else soft
    except ValueError:
        soft = hard = -1
    if not 0 < soft <= hard:
        raise ConfigError(
            f"invalid open-file limit {value!r}: use SOFT or SOFT:HARD with 0 < SOFT <= HARD, "
            "e.g. 8192 or 4096:8192 (AGENTKIT_CONTAINER_NOFILE)"
        )
    return soft, hard


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
