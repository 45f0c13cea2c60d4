"""Session benchmark: how fast a message reaches a running agent's input, one run, side by side.

    .venv/bin/python bench/sessions.py [--n 50]

Needs dockerd and the base image (``agentkit-base:bookworm``). A container runs ``cat`` with an
open stdin (as an agent in session mode does); its output is followed as the service follows
an agent. Measured on the local engine:

* ``write``: ``Runtime.write_stdin`` of one line (the attach is kept; each write also asks the
  engine whether the run still runs), p50 / p99;
* ``echo``: from ``write_stdin`` to the same line read back from the followed logs, p50 / p99 -
  the whole path a message takes to the agent and its replay back to the controller;
* the floor: one ``inspect`` (the cheapest Engine API round trip), p50.

Ratios are against the floor measured in this run; no targets are asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentkit.config import Settings
from agentkit.containers.models import new_agent_id
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.base import RunSpec
from agentkit.runtimes.docker import DockerRuntime
from agentkit.runtimes.docker_engine import open_docker
from bench._sampling import latencies, pct
from tests.containers_support import BASE_IMAGE
from tests.runtimes_support import remove_labelled


async def main(n: int) -> None:
    settings = Settings(_env_file=None, host=None)  # type: ignore[call-arg]
    runtime = DockerRuntime(await open_docker(LocalExecutor(), settings))
    labels = {"agentkit.managed-by": "agentkit", "agentkit.root": f"/tmp/bench-{new_agent_id()}"}
    spec = RunSpec(
        name=new_agent_id(),
        image=BASE_IMAGE,
        labels=labels,
        env={},
        command=("cat",),
        open_stdin=True,
    )
    try:
        await runtime.create(spec)
        await runtime.start(spec.name)
        lines: asyncio.Queue[bytes] = asyncio.Queue()

        async def follow() -> None:
            partial = b""
            async with contextlib.aclosing(runtime.logs(spec.name, follow=True)) as stream:
                async for chunk in stream:
                    *done, partial = (partial + chunk.data).split(b"\n")
                    for line in done:
                        lines.put_nowait(line)

        follower = asyncio.create_task(follow())
        counter = iter(range(10**9))

        async def write() -> None:
            await runtime.write_stdin(spec.name, f"w{next(counter)}\n".encode())

        async def echo() -> None:
            token = f"e{next(counter)}".encode()
            await runtime.write_stdin(spec.name, token + b"\n")
            while await lines.get() != token:
                pass

        floor = await latencies(lambda: runtime.inspect(spec.name), n)
        writes = await latencies(write, n)
        while not lines.empty():
            lines.get_nowait()
        start = time.perf_counter()
        echoes = await latencies(echo, n)
        elapsed = time.perf_counter() - start
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    finally:
        await runtime.stop(spec.name, 0)
        await runtime.aclose()
        await remove_labelled(labels)
    base = pct(floor, 0.5)
    print(f"floor  inspect p50 {base:.2f} ms")
    for name, samples in (("write", writes), ("echo", echoes)):
        p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
        print(f"{name:6} p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({p50 / base:.1f}x the floor)")
    print(f"{n} echoes in {elapsed:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    asyncio.run(main(parser.parse_args().n))
