"""What ``agentkit doctor`` reports about the executor: which one, how fast, what the host has."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from agentkit.errors import AgentkitError
from agentkit.executors.base import Executor


@dataclass(slots=True)
class ToolCheck:
    """Whether a program exists on the host, and its version line."""

    name: str
    found: bool
    version: str | None = None


@dataclass(slots=True)
class Diagnosis:
    """The result of :func:`diagnose`. ``ok`` is False if the host could not be reached."""

    executor: str
    kind: str
    ok: bool
    error: str | None = None
    latency_ms_p50: float | None = None
    latency_samples_ms: list[float] = field(default_factory=list)
    docker: ToolCheck = field(default_factory=lambda: ToolCheck("docker", False))
    git: ToolCheck = field(default_factory=lambda: ToolCheck("git", False))
    docker_socket: str | None = None
    docker_socket_reachable: bool = False
    docker_socket_error: str | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"executor: {self.executor}"]
        if not self.ok:
            out.append(f"  unreachable: {self.error}")
            return out
        out.append(f"  round trip ('true'): {self.latency_ms_p50:.2f} ms p50")
        for tool in (self.git, self.docker):
            out.append(f"  {tool.name}: {tool.version if tool.found else 'NOT FOUND'}")
        state = "reachable" if self.docker_socket_reachable else "NOT reachable"
        extra = f" ({self.docker_socket_error})" if self.docker_socket_error else ""
        out.append(f"  docker socket {self.docker_socket}: {state}{extra}")
        return out


async def _tool(executor: Executor, name: str, argv: list[str]) -> ToolCheck:
    try:
        result = await executor.run(argv, timeout=15, idempotent=True)
    except (AgentkitError, OSError):
        return ToolCheck(name, False)
    if result.exit_status != 0:
        return ToolCheck(name, False)
    first = (result.stdout_text().strip().splitlines() or [""])[0]
    return ToolCheck(name, True, first or None)


async def _docker_socket(executor: Executor, path: str) -> tuple[bool, str | None]:
    try:
        conn = await asyncio.wait_for(executor.open_unix_connection(path), 10)
    except (AgentkitError, OSError, TimeoutError) as exc:
        return False, str(exc) or type(exc).__name__
    try:
        conn.writer.write(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        await conn.writer.drain()
        status = await asyncio.wait_for(conn.reader.readline(), 10)
    except (OSError, TimeoutError) as exc:
        return False, str(exc) or type(exc).__name__
    finally:
        await conn.aclose()
    if status.startswith(b"HTTP/") and b" 200 " in status:
        return True, None
    return False, status.decode("latin-1").strip() or "no HTTP answer"


async def diagnose(
    executor: Executor, *, samples: int = 7, docker_socket: str = "/var/run/docker.sock"
) -> Diagnosis:
    """Measure and probe the host behind ``executor`` (connects if needed, never raises)."""
    diag = Diagnosis(executor=executor.description, kind=executor.kind, ok=False)
    diag.docker_socket = docker_socket
    try:
        await executor.connect()
        timings: list[float] = []
        for _ in range(max(1, samples)):
            start = time.perf_counter()
            await executor.run(["true"], timeout=15, idempotent=True)
            timings.append((time.perf_counter() - start) * 1000)
    except (AgentkitError, OSError) as exc:
        diag.error = str(exc)
        return diag
    diag.ok = True
    diag.latency_samples_ms = timings
    diag.latency_ms_p50 = statistics.median(timings)
    diag.git, diag.docker = await asyncio.gather(
        _tool(executor, "git", ["git", "--version"]),
        _tool(executor, "docker", ["docker", "version", "--format", "{{.Client.Version}}"]),
    )
    if not diag.docker.found:
        # the daemon may be down while the CLI exists: fall back to the client-only version
        diag.docker = await _tool(executor, "docker", ["docker", "--version"])
    reachable, error = await _docker_socket(executor, docker_socket)
    diag.docker_socket_reachable = reachable
    diag.docker_socket_error = error
    return diag
