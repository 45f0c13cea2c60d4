"""Per-run internal networks: what one costs a spawn, empty and with 200 of them live.

    .venv/bin/python bench/gateway_networks.py [--live 200] [--k 10]

Needs dockerd and ``AGENTKIT_BASE_IMAGE`` (a stand-in gateway container sleeps in it). Each agent
run behind the gateway gets its own ``Internal`` network with the gateway joined
(:class:`agentkit.gateway.run_networks.RunNetworks`): created at spawn, removed at the end. This
measures, in one run, against a floor measured alongside:

* floor: one container's create + start + remove through the Engine API (what a spawn pays
  anyway for its agent);
* a run network's create (subnet pick + create + gateway join) and remove, with no other run
  network, then with ``--live`` of them present (the gateway joined to all).

Target (read, never asserted): create + remove well under the container floor at 0 and at 200
live networks; all 200 fit (a ``/29`` each from the pool) where Docker's default pools hold ~31.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiodocker

from agentkit.gateway.run_networks import RunNetworks

POOL = "10.214.0.0/16"  # not the default pool: tests may use that one at the same time


async def container_cycle(docker: aiodocker.Docker, image: str) -> float:
    t0 = time.perf_counter()
    ctr = await docker.containers.create(
        {"Image": image, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}},
        name=f"agentkit-bench-floor-{secrets.token_hex(4)}",
    )
    await ctr.start()
    await ctr.delete(force=True)
    return time.perf_counter() - t0


async def network_cycle(nets: RunNetworks, run_id: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    await nets.create(run_id)
    t1 = time.perf_counter()
    await nets.remove(run_id)
    return t1 - t0, time.perf_counter() - t1


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"


async def main(live: int, k: int) -> None:
    image = os.environ.get("AGENTKIT_BASE_IMAGE", "agentkit-base:bookworm")
    tag = secrets.token_hex(4)
    root = f"/tmp/agentkit-bench-networks-{tag}"
    gw_name = f"agentkit-bench-netgw-{tag}"
    print(f"load average before: {os.getloadavg()}")
    async with aiodocker.Docker() as docker:
        gw = await docker.containers.create(
            {"Image": image, "Cmd": ["sleep", "3600"], "Labels": {"agentkit.root": root}},
            name=gw_name,
        )
        await gw.start()
        nets = RunNetworks(
            docker,
            root=root,
            gateway=gw_name,
            prefix=f"agentkit-bench-{tag}",
            pool=POOL,
            socket="/var/run/docker.sock",
        )
        filled: list[str] = []
        try:
            floor = [await container_cycle(docker, image) for _ in range(k)]
            empty = [await network_cycle(nets, f"bench-empty-{i}") for i in range(k)]
            t0 = time.perf_counter()
            for i in range(live):
                await nets.create(f"bench-live-{i}")
                filled.append(f"bench-live-{i}")
            fill_s = time.perf_counter() - t0
            full = [await network_cycle(nets, f"bench-full-{i}") for i in range(k)]
            floor_full = [await container_cycle(docker, image) for _ in range(k)]
            joined = len((await gw.show())["NetworkSettings"]["Networks"])
        finally:
            t0 = time.perf_counter()
            for run_id in filled:
                await nets.remove(run_id)
            drain_s = time.perf_counter() - t0
            await gw.delete(force=True)
            leftovers = await docker._query_json(
                "networks",
                params={"filters": json.dumps({"label": [f"agentkit.root={root}"]})},
            )
            for net in leftovers:
                await docker._query_json(f"networks/{net['Id']}", method="DELETE")
    f0 = statistics.median(floor)
    f1 = statistics.median(floor_full)
    c0, r0 = (statistics.median(x) for x in zip(*empty, strict=True))
    c1, r1 = (statistics.median(x) for x in zip(*full, strict=True))
    print(f"floor: container create+start+remove   {ms(floor)}")
    print(f"run network, none live: create+join {c0 * 1000:.1f} ms, remove {r0 * 1000:.1f} ms")
    print(f"  ratio to the floor {(c0 + r0) / f0:.2f}x")
    print(f"filled {live} live run networks in {fill_s:.1f} s; the gateway is on {joined} networks")
    print(f"floor with {live} live: {ms(floor_full)}")
    print(f"run network, {live} live: create+join {c1 * 1000:.1f} ms, remove {r1 * 1000:.1f} ms")
    print(f"  ratio to the floor {(c1 + r1) / f1:.2f}x; vs none live {(c1 + r1) / (c0 + r0):.2f}x")
    print(f"removed {live} in {drain_s:.1f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.live, args.k))
