"""The gateway for real: its container on the agent host, agents on its internal network, the
real Claude Code CLI in the agent image, the scripted Anthropic server on the host as upstream.

Tests taking the ``runtime`` fixture run twice: on the Docker runtime (the gateway a container,
agents on an internal bridge) and on the Swarm runtime (the gateway a service, its config a
swarm secret, agents services on an internal overlay), on the single-node swarm of this engine.

Needs dockerd, the agent image (AGENTKIT_IMAGE) and the gateway image (AGENTKIT_GATEWAY_IMAGE,
built from AGENTKIT_BASE_IMAGE on first use); the swarm cases a swarm manager engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agentkit.config import Settings
from agentkit.containers.service import AgentService, AgentState
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.agents import AgentGateway
from agentkit.gateway.host import GatewayHost, gateway_names
from agentkit.gateway.image import GatewayImageBuilder
from agentkit.gateway.pricing import PriceTable, TokenCounts
from agentkit.testing import ScriptedAnthropicServer, reply
from agentkit.testing.scripts import ClaudeCodeScript
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests.containers_support import DOCKER_SOCKET, bridge_gateway, docker_ok
from tests.runtimes_support import remove_labelled, swarm_manager
from tests.support import require

pytestmark = [pytest.mark.docker, pytest.mark.image, pytest.mark.slow]

GATEWAY_IMAGE = os.environ.get("AGENTKIT_GATEWAY_IMAGE", "agentkit-gateway:latest")


def _settings(root: Path, agent_image: str, runtime: str = "docker", **kw: Any) -> Settings:
    ca = os.environ.get("AGENTKIT_EXTRA_CA_DIR")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=str(root),
        image=agent_image,
        gateway_image=GATEWAY_IMAGE,
        base_image=os.environ.get("AGENTKIT_BASE_IMAGE"),
        extra_ca_dir=Path(ca) if ca else None,
        container_memory="2g",
        runtime=runtime,
        **kw,
    )


@pytest_asyncio.fixture(loop_scope="session", params=["docker", "swarm"])
async def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime agents (and the gateway) run on."""
    if request.param == "swarm":
        require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="session")
async def gateway_image(agent_image: str) -> str:
    """The gateway image, built through the library's builder if missing or outdated."""
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        await GatewayImageBuilder(docker, _settings(Path("/"), agent_image)).ensure()
    return GATEWAY_IMAGE


@pytest_asyncio.fixture(loop_scope="session")
async def gateway_cleanup(tmp_path: Path) -> AsyncIterator[None]:
    """Remove what the test root left: agents and gateway (containers or services), the
    gateway's config secrets and its internal network - only this root's."""
    yield
    if await docker_ok():
        await remove_labelled(
            {"agentkit.managed-by": "agentkit", "agentkit.root": str(tmp_path / "root")}
        )


async def _container(name: str) -> str:
    """The container of a run or the gateway: the container ``name``, or the running task
    container of the swarm service ``name``."""
    label = f"com.docker.swarm.service.name={name}"
    filters = json.dumps({"label": [label], "status": ["running"]})
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        found = await docker._query_json("containers/json", params={"filters": filters})
    return str(found[0]["Id"]) if found else name


async def _engine_view(name: str) -> str:
    """Everything the engine shows about ``name``: ``docker inspect`` of its container and, on
    swarm, ``docker service inspect`` and its tasks, as one JSON text."""
    seen: list[Any] = [await _inspect(await _container(name))]
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        with contextlib.suppress(aiodocker.exceptions.DockerError):
            seen.append(await docker._query_json(f"services/{name}"))
            filters = json.dumps({"service": [name]})
            seen.append(await docker._query_json("tasks", params={"filters": filters}))
    return json.dumps(seen)


async def _exec(name: str, argv: list[str], *, user: str = "0") -> str:
    """Run ``argv`` in the container of ``name`` through the Engine API; its stdout."""
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        ctr = await docker.containers.get(await _container(name))
        exe = await ctr.exec(argv, user=user, stdout=True, stderr=True)
        out = bytearray()
        async with exe.start(detach=False) as stream:
            while True:
                msg = await stream.read_out()
                if msg is None:
                    break
                if msg.stream == 1:
                    out += msg.data
        return out.decode("utf-8", "replace")


async def _helper(
    image: str, network: str, root: str, script: str, *, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """``sh -c script`` in a throwaway container of ``image`` on ``network`` (labelled for the
    test root's cleanup); its exit status and output."""
    labels = {"agentkit.managed-by": "agentkit", "agentkit.root": root}
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        ctr = await docker.containers.create(
            {
                "Image": image,
                "Entrypoint": ["sh", "-c", script],
                "Cmd": [],
                "User": "1001:1001",
                "Env": [f"{k}={v}" for k, v in (env or {}).items()],
                "Labels": labels,
                "HostConfig": {"NetworkMode": network, "CapDrop": ["ALL"]},
            }
        )
        try:
            await ctr.start()
            status = await ctr.wait(timeout=120)
            out = "".join(await ctr.log(stdout=True, stderr=True))
        finally:
            await ctr.delete(force=True)
    return int(status["StatusCode"]), out.strip()


async def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    """``agentkit ARGS`` in a subprocess on the test's root; (exit status, stdout)."""
    env = {
        **os.environ,
        "AGENTKIT_ROOT": settings.root,
        "AGENTKIT_IMAGE": settings.image,
        "AGENTKIT_GATEWAY_IMAGE": settings.gateway_image,
        "ANTHROPIC_API_KEY": "sk-ant-cli-unused",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentkit.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def _gateway_secret(service: str) -> dict[str, Any]:
    """``docker secret inspect`` of the config secret the gateway service mounts."""
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        spec = (await docker._query_json(f"services/{service}"))["Spec"]
        (mounted,) = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        return dict(await docker._query_json(f"secrets/{mounted['SecretID']}"))


async def _inspect(container: str) -> dict[str, Any]:
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        return dict(await docker._query_json(f"containers/{container}/json"))


async def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _served_usage(script: ClaudeCodeScript, replies: list[Any]) -> TokenCounts:
    """What the scripted server reported over every request it answered."""
    total = TokenCounts()
    for answer in replies[: len(script.main_requests)]:
        total += TokenCounts.from_mapping(answer.usage)
    for _ in script.side_requests:
        total += TokenCounts.from_mapping(script.side_reply.usage)
    return total


@pytest.mark.usefixtures("gateway_cleanup")
async def test_key_nowhere_usage_metered_to_the_token_and_token_dies(
    agent_image: str, gateway_image: str, tmp_path: Path, runtime: str
) -> None:
    key = "sk-ant-gateway-e2e-" + secrets.token_hex(16)
    usage1 = reply.usage(
        input_tokens=1200,
        output_tokens=40,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=0,
    )
    usage2 = reply.usage(
        input_tokens=30,
        output_tokens=25,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=4200,
    )
    replies = [
        reply.tool_use(
            "Bash", {"command": "echo hi > /workspace/hi.txt", "description": "x"}, usage=usage1
        ).delayed(3.0),
        reply.text("All done.", usage=usage2),
    ]
    script = ClaudeCodeScript(replies, side_reply=reply.text("ok", usage=reply.usage(5, 1)))
    upstream_host = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            runtime,
            anthropic_api_key=key,
            anthropic_base_url=server.url_for(upstream_host),
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            toolset = Toolset(
                container_tools(),
                context=ToolContext(settings=settings, executor=executor, agents=agents),
            )
            results = []
            spawned = await toolset.call(
                "spawn_claude_agent",
                {"task": "write hi", "workspace_path": "gw", "timeout": 120_000},
            )
            results.append(spawned)
            assert not spawned.is_error, spawned.content
            agent_id = spawned.data["id"]
            # Claude Code is up and waiting for its (delayed) first answer
            await _wait_for(lambda: len(script.main_requests) == 1, "the first model request")

            # every process in the agent container: environment and argv
            scan = await _exec(
                agent_id,
                ["sh", "-c", "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline; echo; done"],
            )
            assert "claude" in scan
            # on Docker the socket transport: the gateway's sockets served on the agent's own
            # loopback; on Swarm the gateway by name on the overlay
            base = "127.0.0.1:8080" if runtime == "docker" else "agentkit-gateway-"
            assert f"ANTHROPIC_BASE_URL=http://{base}" in scan
            assert "ANTHROPIC_API_KEY=agentkit-run-" in scan  # the per-run token instead
            token = scan.split("ANTHROPIC_API_KEY=", 1)[1].split("\0", 1)[0]
            assert key not in scan
            # docker inspect (and on swarm service inspect) of the agent and of the gateway
            gw_name, network, _ = gateway_names(settings.root)
            agent_view, gateway_view = await _engine_view(agent_id), await _engine_view(gw_name)
            assert token in agent_view  # what the engine shows was really read
            assert key not in agent_view
            assert key not in gateway_view
            agent_raw = await _inspect(await _container(agent_id))
            gateway_raw = await _inspect(await _container(gw_name))
            gateway = await agents.gateway()
            assert gateway is not None
            # its own network on Docker, the shared internal overlay on Swarm
            assert list(agent_raw["NetworkSettings"]["Networks"]) == [
                gateway.host.run_network(agent_id)
            ]
            # the only credential in the agent's spec is its token (on swarm: the service's env)
            env = dict(e.split("=", 1) for e in agent_raw["Config"]["Env"])
            secretish = {k for k in env if re.search("KEY|TOKEN|SECRET|PASSW|AUTH|CREDENTIAL", k)}
            assert secretish == {"ANTHROPIC_API_KEY"}, secretish
            assert env["ANTHROPIC_API_KEY"] == token
            if runtime == "swarm":  # the key reached the gateway as a secret: named, never shown
                secret = await _gateway_secret(gw_name)
                assert secret["Spec"]["Name"].startswith(gw_name)
                assert key not in json.dumps(secret)
                assert "Data" not in secret["Spec"]
                config = await _exec(
                    gw_name, ["stat", "-c", "%U %a", "/etc/agentkit-gateway/config.json"]
                )
                assert config.split() == ["root", "400"]
            # live cost while it runs
            running = await toolset.call("get_claude_status", {"container_id": agent_id})
            results.append(running)
            assert running.data["state"] == "running"

            waited = await toolset.call(
                "wait_for_claude_agent", {"container_id": agent_id, "timeout": 120_000}
            )
            results.append(waited)
            assert waited.data["state"] == "succeeded", waited.content
            results.append(await toolset.call("get_claude_output", {"container_id": agent_id}))
            results.append(await toolset.call("list_claude_agents", {}))
            await agents.settle()
            record = json.loads(
                await executor.read_file(f"{settings.runs_root}/{agent_id}/result.json")
            )
            gateway = await agents.gateway()
            assert gateway is not None
            rows = await (await gateway.client()).usage()

        # the recorded usage equals what the server reported, to the token, cache included
        expected = _served_usage(script, replies)
        metered = TokenCounts.from_mapping(record["metered"])
        assert metered == expected
        assert metered.cache_read_input_tokens == 4200 + 0
        assert record["metered"]["requests"] == len(server.message_requests)
        run_rows = [r for r in rows if r["run_id"] == agent_id]
        assert len(run_rows) == len(server.message_requests)
        assert sum((TokenCounts.from_mapping(r) for r in run_rows), TokenCounts()) == expected
        assert record["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in run_rows))
        assert waited.data["cost_usd"] == pytest.approx(record["cost_usd"])

        # agentkit costs reads the same ledger
        code, shown = await _cli(settings, "costs", "--json")
        assert code == 0, shown
        costs = json.loads(shown.splitlines()[0])
        (group,) = [g for g in costs["groups"] if g["key"] == agent_id]
        assert group["requests"] == len(run_rows)
        assert group["cost_usd"] == pytest.approx(record["cost_usd"], abs=1e-6)
        assert group["cache_read_input_tokens"] == expected.cache_read_input_tokens
        code, shown = await _cli(settings, "costs", "--by", "workspace")
        assert code == 0, shown
        assert "Cost by workspace" in shown
        assert "gw" in shown

        # run records and tool results never hold the key
        for path in (tmp_path / "root" / "runs").rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path
        for result in results:
            assert key not in result.content
            assert key not in json.dumps(result.data, default=str)

        # the token died with the run: the gateway refuses it (asked from the agents' network)
        before = len(server.requests)
        body = json.dumps(
            {
                "model": "claude-sonnet-5-5",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        code, out = await _helper(
            agent_image,
            network,
            settings.root,
            'curl -sS -m 20 --noproxy "*" -w " http=%{http_code}" -H "x-api-key: $TOKEN" '
            f'-H "content-type: application/json" -d "$BODY" http://{gw_name}:8080/v1/messages',
            env={"TOKEN": token, "BODY": body},
        )
        assert code == 0, out
        assert out.endswith(" http=401"), out
        assert "ended" in json.loads(out.rsplit(" ", 1)[0])["error"]["message"]
        assert len(server.requests) == before

        # the model API listens on the agents' network only: from the outward network (a
        # container on `bridge`, and the host) its port is refused
        gw_ip = gateway_raw["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert gw_ip
        code, out = await _helper(
            agent_image,
            "bridge",
            settings.root,
            f'curl -sS -m 20 --noproxy "*" http://{gw_ip}:8080/api/hello 2>&1; echo " rc=$?"',
        )
        assert out.endswith(" rc=7"), out  # curl: couldn't connect (the old gateway said 200)
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as http:
                await http.get(f"http://{gw_ip}:8080/api/hello", timeout=aiohttp.ClientTimeout(20))
        assert len(server.requests) == before


@pytest.mark.usefixtures("gateway_cleanup")
async def test_budget_exceeded_ends_the_run_and_nothing_goes_upstream_after(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    # sonnet input is $3 per million: 200k tokens = $0.60 > the $0.50 budget
    pricey = reply.usage(input_tokens=200_000, output_tokens=10)
    replies = [
        reply.tool_use("Bash", {"command": "true", "description": "x"}, usage=pricey),
        reply.text("never served"),
    ]
    script = ClaudeCodeScript(replies)
    upstream_host = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            anthropic_api_key="sk-ant-x",
            anthropic_base_url=server.url_for(upstream_host),
            model="claude-sonnet-5-5",
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            toolset = Toolset(
                container_tools(),
                context=ToolContext(settings=settings, executor=executor, agents=agents),
            )
            spawned = await toolset.call(
                "spawn_claude_agent",
                {
                    "task": "spend",
                    "workspace_path": "budget",
                    "timeout": 120_000,
                    "max_cost_usd": 0.5,
                },
            )
            assert not spawned.is_error, spawned.content
            agent_id = spawned.data["id"]
            waited = await toolset.call(
                "wait_for_claude_agent", {"container_id": agent_id, "timeout": 120_000}
            )
            assert waited.data["state"] == "budget_exceeded", waited.content
            assert "budget_exceeded" in waited.content
            assert "max_cost_usd" in waited.content
            status = await toolset.call("get_claude_status", {"container_id": agent_id})
            listing = await toolset.call("list_claude_agents", {})
            output = await toolset.call("get_claude_output", {"container_id": agent_id})
            assert "budget_exceeded" in status.content
            assert f"{agent_id} budget_exceeded" in listing.content
            assert "budget exceeded" in output.content  # Claude Code showed the refusal
        _, logs = await _cli(settings, "logs", agent_id)
        assert "[budget_exceeded]" in logs, logs
    # exactly the one request that crossed the limit reached the server
    assert len(script.main_requests) == 1
    assert [r.index for r in server.message_requests] == [script.main_requests[0].index] + [
        r.index for r in script.side_requests if r.index < script.main_requests[0].index
    ]


def _host_addresses() -> list[str]:
    """The host's own IPv4 addresses (``ip -4 -o addr``) but loopback and those of user-defined
    Docker bridges (``br-*``: other tests' networks, possibly hundreds on a shared engine)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True, timeout=5
    ).stdout
    rows = [line.split() for line in out.splitlines() if " inet " in line]
    return [
        r[3].split("/")[0]
        for r in rows
        if not r[3].startswith("127.") and not r[1].startswith(("br-", "agk"))
    ]


def _tool_result_text(request: Any) -> str:
    out = []
    for result in request.tool_results():
        content = result.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "\n".join(out)


@pytest.mark.usefixtures("gateway_cleanup")
async def test_egress_allowed_refused_and_direct(
    agent_image: str, gateway_image: str, tmp_path: Path, runtime: str
) -> None:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text=f"served {request.path}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host_ip = await bridge_gateway()
    command = (
        f'curl -sS -m 20 http://allowed.test:{port}/allowed; echo " rc1=$?"; '
        f"curl -sS -m 20 -o /dev/null -w 'http=%{{http_code}}' http://denied.test:{port}/denied;"
        f' echo " rc2=$?"; '
        f'curl -sS -m 20 https://denied.test:{port}/tunnel 2>&1; echo " rc3=$?"; '
        f"curl -sS -m 5 --noproxy '*' http://{host_ip}:{port}/direct 2>&1; echo \" rc4=$?\"; "
        # an allowed host, but listed without this port: only 80 (and 443 for TLS) are open
        f"curl -sS -m 20 -o /dev/null -w 'http=%{{http_code}}' http://other.test:{port}/port;"
        f' echo " rc5=$?"; '
        f'curl -sS -m 20 https://other.test:{port}/port-tunnel 2>&1; echo " rc6=$?"; '
        # every address of the host (its bridges, its own network): the server listens on all
        + "".join(
            f"curl -sS -m 5 --noproxy '*' http://{ip}:{port}/host 2>&1; echo \" host={ip}:$?\"; "
            for ip in _host_addresses()
        )
    )
    script = ClaudeCodeScript(
        [
            reply.tool_use(
                "Bash", {"command": command, "description": "egress", "timeout": 90_000}
            ),
            reply.text("checked"),
        ]
    )
    try:
        async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
            settings = _settings(
                tmp_path / "root",
                agent_image,
                runtime,
                anthropic_api_key="sk-ant-x",
                anthropic_base_url=server.url_for(host_ip),
                egress_allow=f"allowed.test:{port},other.test",
                gateway_extra_hosts=[
                    f"allowed.test:{host_ip}",
                    f"denied.test:{host_ip}",
                    f"other.test:{host_ip}",
                ],
            )
            async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
                spawned = await agents.spawn("check egress", "egress", 120_000)
                waited = await agents.wait(spawned.id, 120_000)
                assert waited.status.state == AgentState.SUCCEEDED, waited.status
                output = await agents.output(spawned.id)
    finally:
        await runner.cleanup()
    seen = _tool_result_text(script.main_requests[1])
    assert "served /allowed rc1=0" in seen, seen  # allowed host, through the proxy
    assert "http=403 rc2=0" in seen, seen  # refused by the allowlist
    assert "rc3=0" not in seen  # HTTPS tunnel to a refused host: no CONNECT
    assert "rc4=0" not in seen  # no route off the internal network without the proxy
    assert "http=403 rc5=0" in seen, seen  # allowed host, port not listed
    assert "rc6=0" not in seen  # no CONNECT to a port other than 443
    for ip in _host_addresses():  # nothing on the host is reachable, on any of its addresses
        assert f" host={ip}:" in seen, seen
        assert f" host={ip}:0" not in seen, seen
    assert hits == ["/allowed"]
    # refused connections are recorded for the run and shown with its output
    assert "[egress] refused" in output.text
    assert f"denied.test:{port}" in output.text
    assert "allowed.test" not in output.text.split("[egress]", 1)[1]


@pytest.mark.usefixtures("gateway_cleanup")
async def test_gateway_restart_mid_run_keeps_ledger_and_next_request_succeeds(
    agent_image: str, gateway_image: str, tmp_path: Path, runtime: str
) -> None:
    replies = [
        reply.tool_use(
            "Bash",
            {"command": "sleep 6", "description": "wait", "timeout": 60_000},
            usage=reply.usage(input_tokens=111, output_tokens=11),
        ),
        reply.text("after the restart", usage=reply.usage(input_tokens=222, output_tokens=22)),
    ]
    script = ClaudeCodeScript(replies)
    host_ip = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            runtime,
            anthropic_api_key="sk-ant-x",
            anthropic_base_url=server.url_for(host_ip),
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            # room for a swarm service restart on a busy machine (50-85 s alone here)
            spawned = await agents.spawn("survive a restart", "restart", 300_000)
            gateway = await agents.gateway()
            assert gateway is not None
            await _wait_for(lambda: len(script.main_requests) == 1, "the first turn")
            client = await gateway.client()

            async def recorded() -> int:
                return int((await client.runs([spawned.id]))[spawned.id]["requests"])

            deadline = time.monotonic() + 30
            while await recorded() < 1:  # the first answer is metered once it streamed out
                assert time.monotonic() < deadline, "the first request was never metered"
                await asyncio.sleep(0.05)
            # live cost while it runs (the Bash tool sleeps): status and list ask the gateway
            running = await agents.status(spawned.id)
            assert running.state == AgentState.RUNNING
            model = script.main_requests[0].model  # Claude Code's default model, priced
            first_cost = PriceTable().cost(model, TokenCounts(111, 11, 0, 0))
            assert running.cost_usd == pytest.approx(first_cost)
            (listed,) = [a for a in await agents.list() if a.id == spawned.id]
            assert listed.cost_usd == pytest.approx(first_cost)
            before = await _inspect(await _container(gateway.host.name))
            await gateway.host.restart()
            after = await _inspect(await _container(gateway.host.name))
            assert after["State"]["StartedAt"] != before["State"]["StartedAt"]
            await client.health(wait=30)
            assert await recorded() >= 1  # kept across the restart
            waited = await agents.wait(spawned.id, 300_000)
            assert waited.status.state == AgentState.SUCCEEDED, waited.status
            assert waited.status.result_text == "after the restart"
            await agents.settle()
            record = json.loads(
                await executor.read_file(f"{settings.runs_root}/{spawned.id}/result.json")
            )
    assert len(script.main_requests) == 2
    assert record["metered"]["requests"] == len(server.message_requests)
    assert record["metered"]["input_tokens"] >= 333


@pytest.mark.usefixtures("gateway_cleanup")
async def test_managed_settings_win_over_the_workspace_and_cannot_be_changed(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    permissive = {"permissions": {"allow": ["Read", "Read(//proc/**)"], "deny": []}}
    script = ClaudeCodeScript(
        [
            reply.tool_use("Read", {"file_path": "/proc/self/environ"}),
            reply.tool_use(
                "Bash",
                {
                    "command": "stat -c '%U:%G %a' /etc/claude-code/managed-settings.json; "
                    "echo '{}' > /etc/claude-code/managed-settings.json; echo \"rc=$?\"",
                    "description": "try to change the managed settings",
                },
            ),
            reply.text("done"),
        ]
    )
    host_ip = await bridge_gateway()
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            anthropic_api_key="sk-ant-x",
            anthropic_base_url=server.url_for(host_ip),
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            workspace = await agents.prepare_workspace("managed")
            await executor.makedirs(f"{workspace}/.claude")
            for name in ("settings.json", "settings.local.json"):
                await executor.write_file(
                    f"{workspace}/.claude/{name}", json.dumps(permissive).encode()
                )
            spawned = await agents.spawn("read the environment", "managed", 120_000)
            waited = await agents.wait(spawned.id, 120_000)
            assert waited.status.finished
    read_result = _tool_result_text(script.main_requests[1])
    bash_result = _tool_result_text(script.main_requests[2])
    assert "ANTHROPIC_API_KEY" not in read_result
    assert "denied" in read_result.lower(), read_result
    assert "root:root 644" in bash_result, bash_result
    assert "Permission denied" in bash_result
    assert "rc=0" not in bash_result


@pytest.mark.usefixtures("gateway_cleanup")
async def test_outer_agent_usage_joins_the_ledger_with_its_cost(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    from agentkit.agent.loop import ToolBasedAgent
    from agentkit.gateway.recorder import UsageRecorder

    turns = [
        reply.text("first", usage=reply.usage(input_tokens=1000, output_tokens=100)),
        reply.text("second", usage=reply.usage(10, 20, cache_creation_input_tokens=3000)),
    ]
    server = ScriptedAnthropicServer(turns)
    settings = _settings(tmp_path / "root", agent_image, anthropic_api_key="sk-ant-x")
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        recorder = UsageRecorder(agents)
        agent = ToolBasedAgent(
            Toolset(), client=server.client(), model="claude-haiku-4-5", on_usage=recorder
        )
        first = await agent.run("one")  # no gateway runs yet: the row waits in memory
        assert await recorder.flush() is False  # nothing answers: kept, not lost
        assert len(recorder.pending) == 1
        gateway = await agents.gateway()
        assert gateway is not None
        client = await gateway.client()  # e.g. the first spawn starts it
        second = await agent.run("two")
        await recorder.aclose()
        rows = [r for r in await client.usage() if r["source"] == "controller"]
    assert recorder.recorded == 2
    assert first.usage.cost_usd == pytest.approx(1000 * 1 / 1e6 + 100 * 5 / 1e6)
    assert second.usage.cost_usd == pytest.approx(10 / 1e6 + 20 * 5 / 1e6 + 3000 * 1.25 / 1e6)
    assert [r["cost_usd"] for r in rows] == pytest.approx(
        [first.usage.cost_usd, second.usage.cost_usd]
    )
    assert [r["input_tokens"] for r in rows] == [1000, 10]
    assert rows[1]["cache_creation_input_tokens"] == 3000
    assert {r["model"] for r in rows} == {"claude-haiku-4-5"}


@pytest.mark.usefixtures("gateway_cleanup")
async def test_a_burst_of_20_spawns_all_start_with_a_token_the_gateway_knows(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    """Registration runs side by side with creating the container, yet no agent starts before
    the gateway knows its token: each agent's first act is a request with it (an unknown token
    gets 401). Twenty at once, none failing, each recorded before it started."""
    probe = (
        'curl -s -o /dev/null -w "%{http_code}\\n" -H "x-api-key: $ANTHROPIC_API_KEY" '
        '-H "anthropic-version: 2023-06-01" "$ANTHROPIC_BASE_URL/v1/models"'
    )
    upstream_host = await bridge_gateway()
    script = ClaudeCodeScript([reply.text("unused")])  # the probe asks the upstream nothing
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            anthropic_api_key="sk-ant-burst-" + secrets.token_hex(8),
            anthropic_base_url=server.url_for(upstream_host),
        )
        async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
            outcomes = await asyncio.gather(
                *(
                    agents.spawn(
                        f"burst {i}",
                        f"b{i}",
                        120_000,
                        entrypoint=["sh", "-c", probe],
                        command=["probe"],
                    )
                    for i in range(20)
                ),
                return_exceptions=True,
            )
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            assert not failed, failed[:3]
            spawned = [o for o in outcomes if not isinstance(o, BaseException)]
            finals = await asyncio.gather(*(agents.wait(s.id, 120_000) for s in spawned))
            await agents.settle()
            assert all(f.status.state == AgentState.SUCCEEDED for f in finals), [
                (f.status.state, f.status.error, f.status.exit_code) for f in finals
            ][:3]
            phases = dict(agents.launcher.phases)
            # the probe tells a known token from an unknown one
            control = await agents.spawn(
                "control",
                "control",
                120_000,
                entrypoint=["sh", "-c", probe],
                command=["probe"],
                extra_env={"ANTHROPIC_API_KEY": "agentkit-run-" + secrets.token_urlsafe(32)},
            )
            await agents.wait(control.id, 120_000)
            await agents.settle()
            assert (await agents.store.read_output(control.id)).decode().strip() == "401"
            for s in spawned:
                code = (await agents.store.read_output(s.id)).decode().strip()
                assert code.isdigit(), (s.id, code)
                assert code != "401", s.id  # the token was unknown when the agent started
                meta = await agents.store.read_meta(s.id)
                assert meta is not None
                assert meta["gateway"]
                spans = phases[s.id]
                assert spans["gateway_register"][1] <= spans["engine_start"][0]
                assert spans["record"][1] <= spans["engine_start"][0]


@pytest.mark.usefixtures("gateway_cleanup")
async def test_a_non_streamed_answer_through_the_gateway_container_is_whole_and_metered(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    # 300 kB of text in one non-streamed answer: it reaches the gateway in many pieces, its
    # usage last (before the fix the agent got the first piece and the answer cost $0)
    usage = reply.usage(input_tokens=150_000, output_tokens=60_000)
    big = reply.text("x" * 300_000, usage=usage)
    upstream_host = await bridge_gateway()
    body = json.dumps(
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 64000,
            "messages": [{"role": "user", "content": "write a lot"}],
        }
    )
    call = (
        'curl -sS -m 60 --noproxy "*" -o /tmp/answer -w "%{http_code} " -H "x-api-key: $TOKEN" '
        '-H "content-type: application/json" -d "$BODY" http://$GW:8080/v1/messages; '
        "wc -c < /tmp/answer; tail -c 20 /tmp/answer"
    )
    async with ScriptedAnthropicServer([big, big], host="0.0.0.0") as server:
        settings = _settings(
            tmp_path / "root",
            agent_image,
            anthropic_api_key="sk-ant-x",
            anthropic_base_url=server.url_for(upstream_host),
            agent_transport="network",  # a helper container on the run's network calls it
        )
        async with (
            LocalExecutor() as executor,
            aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker,
            aiohttp.ClientSession() as http,
        ):
            direct = await (await http.post(f"{server.url}/v1/messages", data=body)).read()
            gateway = AgentGateway(GatewayHost(executor, settings, docker), settings)
            try:
                network = await gateway.open_network("big-answer")
                plan = gateway.plan_run(
                    "big-answer",
                    workspace="/ws/big",
                    deadline=time.time() + 600,
                    max_cost_usd=None,
                    network=network,
                )
                await plan.register()
                token = plan.additions.env["ANTHROPIC_API_KEY"]
                env = {"GW": gateway.host.name, "TOKEN": token, "BODY": body}
                code, out = await _helper(agent_image, network, settings.root, call, env=env)
                summary = await gateway.ended("big-answer")
            finally:
                await gateway.aclose()
    assert code == 0, out
    status, size = out.split()[:2]
    assert status == "200"
    assert int(size) == len(direct)  # the whole answer, not its first piece
    assert out.endswith(direct[-20:].decode())
    assert summary is not None
    assert summary["requests"] == 1
    assert summary["output_tokens"] == 60_000
    assert summary["cost_usd"] == pytest.approx(
        PriceTable().cost("claude-sonnet-5-5", TokenCounts.from_mapping(usage))
    )


async def _owned(kind: str, root: str) -> list[dict[str, Any]]:
    """The secrets / networks / services the engine lists with ``root``'s agentkit labels."""
    labels = ["agentkit.managed-by=agentkit", f"agentkit.root={root}"]
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        found = await docker._query_json(kind, params={"filters": json.dumps({"label": labels})})
    return list(found)


@pytest.mark.usefixtures("gateway_cleanup")
async def test_swarm_gateway_gets_the_key_as_a_secret_replaced_when_the_config_changes(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    root = tmp_path / "root"
    gw_name, network, _ = gateway_names(str(root))
    keys = ["sk-ant-first-" + secrets.token_hex(16), "sk-ant-second-" + secrets.token_hex(16)]
    seen_secrets: list[str] = []
    service_ids: set[str] = set()
    async with LocalExecutor() as executor:
        for key in keys:
            settings = _settings(root, agent_image, "swarm", anthropic_api_key=key)
            async with AgentService(executor, settings) as agents:
                gateway = await agents.gateway()
                assert gateway is not None
                health = await (await gateway.client()).health()
                assert health["squid"] == "running"
                node = (await agents.runtime()).node_id  # type: ignore[attr-defined]
            (secret,) = await _owned("secrets", str(root))  # one: the old one was removed
            seen_secrets.append(secret["Spec"]["Name"])
            service = (await _engine_view(gw_name)) + json.dumps(secret)
            assert not any(k in service for k in keys)  # names it, never shows it
            (svc,) = await _owned("services", str(root))
            service_ids.add(svc["ID"])
            spec = svc["Spec"]
            task = spec["TaskTemplate"]
            assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
            assert task["RestartPolicy"]["Condition"] == "any"
            assert task["Placement"]["Constraints"] == [f"node.id=={node}"]
            assert not task["ContainerSpec"].get("Env")
            (mount,) = task["ContainerSpec"]["Secrets"]
            assert mount["SecretName"] == secret["Spec"]["Name"]
            assert mount["File"] == {
                "Name": "/etc/agentkit-gateway/config.json",
                "UID": "0",
                "GID": "0",
                "Mode": 0o400,
            }
            # what the gateway reads is the current config, readable by root only
            config = json.loads(await _exec(gw_name, ["cat", "/etc/agentkit-gateway/config.json"]))
            assert config["api_key"] == key
            (net,) = await _owned("networks", str(root))
            # squid serves the overlay's subnet only
            assert config["agent_subnets"] == [c["Subnet"] for c in net["IPAM"]["Config"]]
            assert config["agent_subnets"]
            denied = await _exec(
                gw_name,
                ["sh", "-c", "cat /etc/agentkit-gateway/config.json 2>&1; echo rc=$?"],
                user="65534",
            )
            assert key not in denied
            assert "rc=0" not in denied
    assert len(set(seen_secrets)) == 2  # a new secret for the new config
    assert len(service_ids) == 1  # the same service, updated
    assert net["Name"] == network
    assert net["Driver"] == "overlay"
    assert net["Internal"] is True
