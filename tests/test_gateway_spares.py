"""Spare per-run networks: made ahead with the gateway on them, one run each, never left behind.

Against the real engine, with a plain container standing in for the gateway (the networks'
only other member); the gateway itself takes spares in the e2e and egress tests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiodocker
import pytest
import pytest_asyncio

from agentkit.gateway.run_networks import (
    LABEL_CREATED,
    LABEL_POOL,
    SPARE_ORPHAN_S,
    RunNetworks,
)
from tests.containers_support import BASE_IMAGE, DOCKER_SOCKET

pytestmark = pytest.mark.docker


@dataclass
class Fixture:
    docker: aiodocker.Docker
    root: str
    gateway: str
    prefix: str
    pool: str

    def networks(self, spares: int, listen: list[int] | None = None) -> RunNetworks:
        async def heard() -> None:
            if listen is not None:
                listen.append(1)

        return RunNetworks(
            self.docker,
            root=self.root,
            gateway=self.gateway,
            prefix=self.prefix,
            pool=self.pool,
            socket=DOCKER_SOCKET,
            spares=spares,
            listen=heard,
        )

    async def names(self) -> set[str]:
        found = await self.docker._query_json(
            "networks", params={"filters": json.dumps({"label": [f"agentkit.root={self.root}"]})}
        )
        return {str(n["Name"]) for n in found}

    async def members(self, network: str) -> set[str]:
        data = await self.docker._query_json(f"networks/{network}")
        return {str(c["Name"]) for c in (data.get("Containers") or {}).values()}


@pytest_asyncio.fixture(loop_scope="session")
async def engine() -> AsyncIterator[Fixture]:
    tag = secrets.token_hex(4)
    root = f"/tmp/agentkit-test-spares-{tag}"
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        gw = await docker.containers.create(
            {"Image": BASE_IMAGE, "Cmd": ["sleep", "600"], "Labels": {"agentkit.root": root}},
            name=f"agentkit-test-spares-gw-{tag}",
        )
        await gw.start()
        # a /26 nobody else uses: room for eight runs' /29s
        pool = f"10.216.{secrets.randbelow(250)}.{secrets.randbelow(4) * 64}/26"
        gw_name, prefix = f"agentkit-test-spares-gw-{tag}", f"agentkit-test-sp-{tag}"
        fx = Fixture(docker, root, gw_name, prefix, pool)
        try:
            yield fx
        finally:
            await gw.delete(force=True)
            for name in await fx.names():
                resp = await docker._do_query(f"networks/{name}", "DELETE")
                resp.release()


async def _filled(nets: RunNetworks) -> None:
    async with asyncio.timeout(60):
        await nets.filled.wait()


async def test_spares_are_made_ahead_given_to_one_run_each_and_refilled(engine: Fixture) -> None:
    heard: list[int] = []
    nets = engine.networks(spares=3, listen=heard)
    nets.start_spares()
    await _filled(nets)
    ahead = await engine.names()
    assert len(ahead) == 3
    assert len(heard) == 3  # the model API listens on each before a run can take it
    for name in ahead:
        assert await engine.members(name) == {engine.gateway}
    first = await nets.create("run-a")
    second = await nets.create("run-b")
    assert {first, second} <= ahead  # spares, not networks made at the spawn
    assert first != second  # one run each
    assert not nets.needs_listen("run-a")
    assert nets.network("run-a") == first
    await _filled(nets)  # refilled behind the spawns
    now = await engine.names()
    assert len(now) == 5
    assert await nets.remove("run-a")  # never reused: removed with its run
    assert first not in await engine.names()
    await nets.aclose()  # the spares no run took go with the controller
    assert await engine.names() == {second}
    assert await nets.remove("run-b")
    assert await engine.names() == set()


async def test_without_spares_a_run_gets_a_network_made_for_it(engine: Fixture) -> None:
    nets = engine.networks(spares=0)
    nets.start_spares()
    assert nets.filled.is_set()
    name = await nets.create("run-c")
    assert name == nets.name("run-c")
    assert nets.needs_listen("run-c")
    assert await engine.members(name) == {engine.gateway}
    assert await nets.remove("run-c")
    await nets.aclose()
    assert await engine.names() == set()


async def test_a_burst_larger_than_the_pool_takes_spares_then_makes_the_rest(
    engine: Fixture,
) -> None:
    nets = engine.networks(spares=2)
    nets.start_spares()
    await _filled(nets)
    spares = await engine.names()
    got = await asyncio.gather(*(nets.create(f"burst-{i}") for i in range(4)))
    assert len(set(got)) == 4
    assert len(spares & set(got)) == 2
    subnets = set()
    for name in got:
        data = await engine.docker._query_json(f"networks/{name}")
        subnets.add(data["IPAM"]["Config"][0]["Subnet"])
    assert len(subnets) == 4  # made side by side, never the same /29 twice
    for i in range(4):
        await nets.remove(f"burst-{i}")
    await nets.aclose()
    assert await engine.names() == set()


async def _spare_left_by(engine: Fixture, pool_id: str, age_s: float, subnet: str) -> str:
    """A spare network as a controller that died would have left it ``age_s`` ago."""
    name = f"{engine.prefix}-s{secrets.token_hex(5)}"
    body = {
        "Name": name,
        "Driver": "bridge",
        "Internal": True,
        "Labels": {
            "agentkit.managed-by": "agentkit",
            "agentkit.root": engine.root,
            "agentkit.role": "run-network",
            LABEL_POOL: pool_id,
            LABEL_CREATED: f"{time.time() - age_s:.3f}",
        },
        "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet}]},
    }
    await engine.docker._query_json("networks/create", method="POST", data=body)
    return name


async def test_sweep_keeps_another_controllers_spares_and_removes_orphans(
    engine: Fixture,
) -> None:
    base = engine.pool.rsplit(".", 1)[0]
    last = int(engine.pool.rsplit(".", 1)[1].split("/")[0])
    young = await _spare_left_by(engine, "other-live", 60, f"{base}.{last + 48}/29")
    old = SPARE_ORPHAN_S + 60
    orphan = await _spare_left_by(engine, "other-dead", old, f"{base}.{last + 56}/29")
    nets = engine.networks(spares=1)
    nets.start_spares()
    await _filled(nets)
    own = (await engine.names()) - {young, orphan}
    assert await nets.sweep() == 1
    left = await engine.names()
    assert orphan not in left  # a controller gone an hour: nobody can hand it out
    assert young in left  # another live controller may hand it to a run any moment
    assert own <= left  # this controller's own spare
    await nets.aclose()
    assert await engine.names() == {young}
