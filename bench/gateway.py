"""Gateway benchmark: one run, the same requests direct and through the gateway.

    .venv/bin/python bench/gateway.py [--n 300] [--agents 20] [--runtime docker|swarm]

Needs dockerd and the gateway image's inputs (``AGENTKIT_BASE_IMAGE``; the image
``AGENTKIT_GATEWAY_IMAGE`` is built on first use). The upstream is agentkit's scripted Anthropic
server on this machine; the gateway is the real container. Requests are sent from an agent-like
container (python3 + aiohttp from the gateway image): "direct" from one on Docker's bridge to the
upstream (an agent without the gateway), "through the gateway" from one on the gateway's internal
network (an agent behind it). With ``--runtime swarm`` the gateway is the swarm service on its
internal overlay (the engine must be a swarm manager) and the clients join that overlay.

Measures, side by side in this run:

* a streamed model request (small answer): p50 / p99 (ms) direct and through the gateway, and
  the added latency; the same through the gateway's code run in-process on loopback (its
  software cost without the extra container hop);
* time to the first SSE byte of an answer whose first event comes after 50 ms, both ways;
* N agents (distinct tokens) streaming at once through one gateway, each answer paced over
  ~0.6 s: wall time vs direct, failures, and that the ledger metered every request.

Target (read, never asserted): added latency p50 <= 2 ms; TTFB within noise; N at once with
zero failures and wall time close to direct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from agentkit.config import Settings
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.agents import FORWARD
from agentkit.gateway.budgets import token_sha256
from agentkit.gateway.host import API_PORT, SOCKETS_TARGET, GatewayHost
from agentkit.runtimes.docker_engine import open_docker
from agentkit.testing import ScriptedAnthropicServer, reply
from bench._sampling import pct
from tests.containers_support import AGENT_IMAGE, bridge_gateway, remove_containers_of_root
from tests.gateway_support import local_gateway
from tests.runtimes_support import remove_labelled

BODY = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


async def request(http: aiohttp.ClientSession, url: str, token: str) -> tuple[float, float]:
    """(total ms, ms to the first body byte) of one streamed request."""
    start = time.perf_counter()
    async with http.post(
        f"{url}/v1/messages?beta=true", json=BODY, headers={"x-api-key": token}
    ) as resp:
        first = await resp.content.readany()
        ttfb = (time.perf_counter() - start) * 1000
        assert resp.status == 200, (resp.status, first[:200])
        await resp.read()
    return (time.perf_counter() - start) * 1000, ttfb


async def series(
    http: aiohttp.ClientSession, url: str, token: str, n: int
) -> tuple[list[float], list[float]]:
    for _ in range(10):
        await request(http, url, token)
    total, ttfb = [], []
    for _ in range(n):
        t, f = await request(http, url, token)
        total.append(t)
        ttfb.append(f)
    return total, ttfb


# Runs inside a container (the gateway image has python3 + aiohttp): what an agent sees.
CLIENT = r"""
import asyncio, json, os, time, aiohttp
URL, N, MODE = os.environ["URL"], int(os.environ["N"]), os.environ["MODE"]
TOKENS = json.loads(os.environ["TOKENS"])
BODY = {"model": "claude-sonnet-5-5", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}
async def one(http, token):
    start = time.perf_counter()
    if MODE == "ping":  # the gateway's health answer: the container hop without an upstream
        async with http.get(URL + "/") as resp:
            await resp.read()
        return (time.perf_counter() - start) * 1000, 0.0
    async with http.post(URL + "/v1/messages?beta=true", json=BODY,
                         headers={"x-api-key": token}) as resp:
        await resp.content.readany()
        ttfb = (time.perf_counter() - start) * 1000
        assert resp.status == 200, resp.status
        await resp.read()
    return (time.perf_counter() - start) * 1000, ttfb
async def main():
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as http:
        if MODE == "fleet":
            await one(http, TOKENS[0])
            start = time.perf_counter()
            res = await asyncio.gather(*(one(http, t) for t in TOKENS), return_exceptions=True)
            wall = time.perf_counter() - start
            failed = sum(1 for r in res if isinstance(r, BaseException))
            print(json.dumps({"wall": wall, "failed": failed}))
            return
        for _ in range(10):
            await one(http, TOKENS[0])
        out = [await one(http, TOKENS[0]) for _ in range(N)]
        print(json.dumps({"total": [t for t, _ in out], "ttfb": [f for _, f in out]}))
asyncio.run(main())
"""


# Runs inside the agent image (python3, standard library only): sequential streamed requests
# on one kept-alive connection, as Claude Code makes them, with no proxy in between.
STDLIB_CLIENT = r"""
import http.client, json, os, time, urllib.parse
url = urllib.parse.urlsplit(os.environ["URL"])
N, TOKEN = int(os.environ["N"]), os.environ["TOKEN"]
BODY = json.dumps({"model": "claude-sonnet-5-5", "max_tokens": 100, "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
def one():
    start = time.perf_counter()
    conn.request("POST", "/v1/messages?beta=true", body=BODY,
                 headers={"x-api-key": TOKEN, "content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, (resp.status, data[:200])
    return (time.perf_counter() - start) * 1000
for _ in range(10):
    one()
print(json.dumps({"total": [one() for _ in range(N)]}))
"""


async def in_container(
    docker: Any,
    image: str,
    network: str,
    url: str,
    tokens: list[str],
    n: int,
    mode: str,
    *,
    argv: list[str] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run :data:`CLIENT` (or ``argv``) in a fresh container on ``network``; its JSON answer."""
    name = f"agentkit-bench-client-{secrets.token_hex(4)}"
    variables = {"URL": url, "N": str(n), "MODE": mode, "TOKENS": json.dumps(tokens)}
    variables.update(env or {})
    body = {
        "Image": image,
        "Entrypoint": argv or ["python3", "-c", CLIENT],
        "Cmd": [],
        "Env": [f"{k}={v}" for k, v in variables.items()],
        "Labels": {"agentkit.bench": "gateway"},
        "HostConfig": {"NetworkMode": network, "Mounts": mounts or []},
    }
    await docker._query_json("containers/create", method="POST", params={"name": name}, data=body)
    try:
        await docker._query_json(f"containers/{name}/start", method="POST")
        async with asyncio.timeout(600):
            await docker._query_json(f"containers/{name}/wait", method="POST")
        container = await docker.containers.get(name)
        logs = "".join(await container.log(stdout=True, stderr=True)).strip()
        try:
            return dict(json.loads(logs.splitlines()[-1]))
        except (ValueError, IndexError):
            raise RuntimeError(f"the client in {network} failed:\n{logs[-2000:]}") from None
    finally:
        await docker._query_json(f"containers/{name}", method="DELETE", params={"force": "1"})


def line(name: str, samples: list[float]) -> str:
    return f"  {name:<34} p50 {pct(samples, 0.5):7.2f} ms   p99 {pct(samples, 0.99):7.2f} ms"


async def gateway_host(executor: Any, settings: Settings, docker: Any, runtime: str) -> Any:
    """The gateway as ``runtime`` places it: a container, or a swarm service."""
    if runtime == "swarm":
        from agentkit.gateway.swarm_host import SwarmGatewayHost
        from agentkit.runtimes.swarm import SwarmRuntime

        swarm = await SwarmRuntime.open(docker)
        return SwarmGatewayHost(executor, settings, docker, node_id=swarm.node_id)
    return GatewayHost(executor, settings, docker)


async def main(n: int, agents: int, runtime: str = "docker") -> None:
    host_ip = await bridge_gateway()
    quick = reply.text("ok " * 20, usage=reply.usage(input_tokens=100, output_tokens=20))
    async with ScriptedAnthropicServer(default=quick, host="0.0.0.0") as server:
        root = tempfile.mkdtemp(prefix="agentkit-bench-gateway-")
        ca = os.environ.get("AGENTKIT_EXTRA_CA_DIR")
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            host=None,
            root=root,
            anthropic_api_key="sk-bench",
            anthropic_base_url=server.url_for(host_ip),
            base_image=os.environ.get("AGENTKIT_BASE_IMAGE"),
            extra_ca_dir=Path(ca) if ca else None,
        )
        upstream = server.url_for(host_ip)
        async with LocalExecutor() as executor:
            docker = await open_docker(executor, settings)
            gateway = await gateway_host(executor, settings, docker, runtime)
            try:
                t0 = time.perf_counter()
                client = await gateway.ensure()
                print(f"gateway ({runtime}) ensured in {time.perf_counter() - t0:.1f} s")
                image = settings.gateway_image
                tokens = [f"bench-token-{i}" for i in range(max(agents, 1))]
                for i, token in enumerate(tokens):
                    await client.register(
                        f"bench-run-{i}",
                        token_sha256(token),
                        workspace="/bench",
                        max_cost_usd=None,
                        expires=None,
                    )

                async def agent_view(mode: str, count: int, k: int = 1) -> tuple[Any, Any]:
                    """The same client in a container: direct (bridge) and via the gateway."""
                    direct = await in_container(
                        docker, image, "bridge", upstream, ["x"] * k, count, mode
                    )
                    via = await in_container(
                        docker, image, gateway.network, gateway.api_url, tokens[:k], count, mode
                    )
                    return direct, via

                print(f"streamed request, {n} sequential, from an agent-like container:")
                direct, via = await agent_view("series", n)
                print(line("direct (bridge -> upstream)", direct["total"]))
                print(line("through the gateway", via["total"]))
                d50, v50 = pct(direct["total"], 0.5), pct(via["total"], 0.5)
                print(f"  added p50 {v50 - d50:.2f} ms (ratio {v50 / d50:.2f}x)  [target <= 2 ms]")
                hop = await in_container(
                    docker, image, gateway.network, gateway.api_url, tokens[:1], n, "ping"
                )
                print(line("agent -> gateway hop alone (GET /)", hop["total"]))
                h50 = pct(hop["total"], 0.5)
                print(f"  added p50 beyond that extra hop {v50 - d50 - h50:.2f} ms")

                if runtime == "docker":
                    await transports(docker, gateway, client, upstream, tokens[0], n)

                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as http:
                    host_direct, _ = await series(http, server.url, "x", n)
                    with tempfile.TemporaryDirectory() as folder:
                        async with local_gateway(Path(folder), upstream_url=server.url) as local:
                            await local.run("inproc")
                            inproc, _ = await series(http, local.url, "agentkit-run-test-inproc", n)
                print("the gateway's code alone (in-process on loopback, no container hop):")
                print(line("direct", host_direct))
                print(line("through the gateway code", inproc))
                soft = pct(inproc, 0.5) - pct(host_direct, 0.5)
                print(f"  added p50 {soft:.2f} ms")

                server.default = reply.text("late", usage=reply.usage(10, 2)).delayed(0.05)
                direct, via = await agent_view("series", max(n // 5, 20))
                print("time to first SSE byte, first event after 50 ms (agent-like container):")
                print(line("direct", direct["ttfb"]))
                print(line("through the gateway", via["ttfb"]))
                ratio = pct(via["ttfb"], 0.5) / pct(direct["ttfb"], 0.5)
                print(f"  TTFB ratio p50 {ratio:.3f}x [target: within noise]")

                server.default = reply.text("word " * 60, usage=reply.usage(50, 60)).streamed(
                    chunk_size=10, chunk_delay=0.02
                )
                before = len(await client.usage())
                direct, via = await agent_view("fleet", 0, agents)
                metered = len(await client.usage()) - before - 1  # minus the warm-up request
                print(f"{agents} agents streaming at once (~0.6 s answers, distinct tokens):")
                print(f"  direct {direct['wall']:.3f} s, {direct['failed']} failed")
                print(
                    f"  through the gateway {via['wall']:.3f} s, {via['failed']} failed, "
                    f"{metered} of {agents} metered; ratio {via['wall'] / direct['wall']:.2f}x"
                )
            finally:
                await gateway.aclose()
                await docker.close()
                if runtime == "swarm":  # the service, its secret, clients, the overlay
                    await remove_labelled({"agentkit.root": root})
                else:
                    await remove_containers_of_root(root)
                    await docker_network_rm(gateway.network)


async def transports(
    docker: Any, gateway: GatewayHost, client: Any, upstream: str, token: str, n: int
) -> None:
    """The same requests from the agent image over each way an agent reaches the gateway:
    its internal network, and the socket transport (agentkit-forward's socat on the agent's
    loopback, then the run's unix socket), against the upstream straight from the bridge."""
    run_id = "bench-run-0"  # registered with ``token``
    await client.open_sockets(run_id)
    argv = ["python3", "-c", STDLIB_CLIENT]
    try:
        direct = await in_container(
            docker, AGENT_IMAGE, "bridge", upstream, [], n, "", argv=argv, env={"TOKEN": token}
        )
        network = await in_container(
            docker,
            AGENT_IMAGE,
            gateway.network,
            gateway.api_url,
            [],
            n,
            "",
            argv=argv,
            env={"TOKEN": token},
        )
        mount = {
            "Type": "bind",
            "Source": gateway.sockets_folder(run_id),
            "Target": SOCKETS_TARGET,
            "ReadOnly": True,
        }
        socket = await in_container(
            docker,
            AGENT_IMAGE,
            "none",
            f"http://127.0.0.1:{API_PORT}",
            [],
            n,
            "",
            argv=[FORWARD, *argv],
            mounts=[mount],
            env={"TOKEN": token, "AGENTKIT_GATEWAY_SOCKETS": SOCKETS_TARGET},
        )
    finally:
        await client.close_sockets(run_id)
    print(f"streamed request, {n} sequential on one kept-alive connection, from the agent image:")
    print(line("direct (bridge -> upstream)", direct["total"]))
    print(line("network transport", network["total"]))
    print(line("socket transport (socat, unix socket)", socket["total"]))
    d50, n50, s50 = (pct(x["total"], 0.5) for x in (direct, network, socket))
    print(
        f"  added p50: network {n50 - d50:.2f} ms, socket {s50 - d50:.2f} ms; "
        f"socket vs network transport {s50 / n50:.2f}x"
    )


async def docker_network_rm(name: str) -> None:
    import aiodocker

    async with aiodocker.Docker() as docker:
        with contextlib.suppress(aiodocker.exceptions.DockerError):
            await docker._query_json(f"networks/{name}", method="DELETE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sequential requests per series")
    parser.add_argument("--agents", type=int, default=20, help="concurrent streams")
    parser.add_argument("--runtime", choices=("docker", "swarm"), default="docker")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.agents, args.runtime))
