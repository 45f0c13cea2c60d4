"""Runtime benchmark: Docker vs Swarm (vs the in-memory floor), one run, side by side.

    .venv/bin/python bench/runtimes.py [--spawns 20] [--n 10] [--status 200]

Needs dockerd as a swarm manager (``.ci/swarm-init.sh``) and the base image
(``agentkit-base:bookworm``). Everything goes through the agent service on the local executor,
with the plain base image running a shell command (the mechanics, without Claude Code's cost).

Per runtime:

* ``spawns``: N concurrent ``spawn`` calls - wall time until all returned, failures, and wall
  time until all of them finished and were recorded;
* ``exit->noticed``: from the agent's last output line (a timestamp printed just before it
  exits) to ``wait`` returning, p50;
* ``status``: ``get_claude_status`` of a running agent, p50 / p99;
* ``stop``: ``stop`` until the state is recorded ``stopped``, p50.

The memory runtime is the floor: the service's own cost with no engine at all. Ratios are
Swarm / Docker, measured in this one run; no targets are asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentkit.config import Settings
from agentkit.containers.service import AgentService, AgentState
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
from bench._sampling import latencies, pct
from tests.containers_support import BASE_IMAGE
from tests.runtimes_support import remove_labelled

LAST_WORDS = "sleep 0.5; date +%s.%N"


async def memory_agent(run: MemoryRun) -> int:
    """The memory runtime's side of the same commands (the floor)."""
    script = run.spec.command[-1] if run.spec.command else ""
    if script == LAST_WORDS:
        await asyncio.sleep(0.5)
        run.emit(f"{time.time():.6f}")
    elif "600" in script:
        await asyncio.sleep(600)
    else:
        await asyncio.sleep(2.0)
    return 0


@dataclass
class Result:
    spawn_wall: float = 0.0
    spawn_failures: int = 0
    all_done_wall: float = 0.0
    noticed_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    stop_ms: list[float] = field(default_factory=list)


async def measure(kind: str, args: argparse.Namespace) -> Result:
    root = tempfile.mkdtemp(prefix=f"agentkit-bench-{kind}-")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=root,
        image=BASE_IMAGE,
        runtime="swarm" if kind == "swarm" else "docker",
        anthropic_api_key="sk-ant-bench",
    )
    runtime = MemoryRuntime(memory_agent, images=[BASE_IMAGE]) if kind == "memory" else kind
    result = Result()
    try:
        async with AgentService(LocalExecutor(), settings, runtime=runtime) as agents:
            # N concurrent spawns
            start = time.perf_counter()
            spawned = await asyncio.gather(
                *(
                    agents.spawn(f"b{i}", f"w{i}", 120_000, command=["sh", "-c", "sleep 2"])
                    for i in range(args.spawns)
                ),
                return_exceptions=True,
            )
            result.spawn_wall = time.perf_counter() - start
            ok = [s for s in spawned if not isinstance(s, BaseException)]
            result.spawn_failures = len(spawned) - len(ok)
            for failure in (s for s in spawned if isinstance(s, BaseException)):
                print(f"  {kind}: spawn failed: {failure}", file=sys.stderr)
            await asyncio.gather(*(agents.wait(s.id, 300_000) for s in ok))
            await agents.settle()
            result.all_done_wall = time.perf_counter() - start
            # exit -> noticed
            for _ in range(args.n):
                s = await agents.spawn("t", "t", 60_000, command=["sh", "-c", LAST_WORDS])
                waited = await agents.wait(s.id, 60_000)
                returned = time.time()
                assert waited.status.state == AgentState.SUCCEEDED, waited.status
                printed = await agents.output(s.id)
                stamp = float(printed.text.split()[-1])
                result.noticed_ms.append((returned - stamp) * 1000)
            # status of a running agent, then stop it
            first = await agents.spawn("s", "s", 60_000, command=["sh", "-c", "exec sleep 600"])
            result.status_ms = await latencies(lambda: agents.status(first.id), args.status)
            await agents.stop(first.id)
            for _ in range(args.n):
                s = await agents.spawn("s", "s", 60_000, command=["sh", "-c", "exec sleep 600"])
                begin = time.perf_counter()
                stopped = await agents.stop(s.id)
                result.stop_ms.append((time.perf_counter() - begin) * 1000)
                assert stopped.state == AgentState.STOPPED, stopped
            await agents.settle()
    finally:
        if kind != "memory":
            await remove_labelled({"agentkit.managed-by": "agentkit", "agentkit.root": root})
    return result


def _row(name: str, values: dict[str, float], unit: str, fmt: str = "{:.1f}") -> str:
    cells = [f"{fmt.format(values[k]):>10}" for k in ("memory", "docker", "swarm")]
    ratio = values["swarm"] / values["docker"] if values["docker"] else float("nan")
    return f"{name:<28}{''.join(cells)}  {unit:<4}{ratio:>8.2f}x"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spawns", type=int, default=20)
    parser.add_argument("--n", type=int, default=10, help="samples for exit and stop")
    parser.add_argument("--status", type=int, default=200, help="status calls")
    args = parser.parse_args()
    results = {kind: await measure(kind, args) for kind in ("memory", "docker", "swarm")}
    print(f"{'':<28}{'memory':>10}{'docker':>10}{'swarm':>10}        swarm/docker")
    print(
        _row(
            f"{args.spawns} spawns: wall",
            {k: r.spawn_wall for k, r in results.items()},
            "s",
            "{:.2f}",
        )
    )
    print(
        _row(
            f"{args.spawns} spawns: failures",
            {k: r.spawn_failures for k, r in results.items()},
            "",
            "{:.0f}",
        )
    )
    print(
        _row(
            f"{args.spawns} spawns: all recorded",
            {k: r.all_done_wall for k, r in results.items()},
            "s",
            "{:.2f}",
        )
    )
    for name, attr in (("exit->noticed p50", "noticed_ms"), ("stop p50", "stop_ms")):
        print(
            _row(name, {k: statistics.median(getattr(r, attr)) for k, r in results.items()}, "ms")
        )
    print(
        _row("status p50", {k: pct(r.status_ms, 0.5) for k, r in results.items()}, "ms", "{:.2f}")
    )
    print(
        _row("status p99", {k: pct(r.status_ms, 0.99) for k, r in results.items()}, "ms", "{:.2f}")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
