"""The gateway's egress for real: squid's logins, its DNS, and agents kept apart.

* the auth helper relaying logins to the gateway (a real helper process, a real unix socket);
* Debian's squid (in the gateway image) with its resolver pointed at a DNS listener this test
  runs: a refused name is never looked up, an allowed one is;
* agents behind the real gateway (dockerd, the agent and gateway images): proxy logins per run
  (curl, git, python, pip, npm), refusals recorded under the run that logged in, a dead run's
  token refused, and one agent unable to reach another while both reach the gateway.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agentkit.containers.service import AgentService, AgentState
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.budgets import RunEntry, Runs, token_sha256
from agentkit.gateway.egress import AUTH_RECHECK_S, squid_config
from agentkit.gateway.host import gateway_names
from agentkit.gateway.proxy_auth import LoginServer, helper_argv
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests import test_gateway_e2e as e2e
from tests.containers_support import DOCKER_SOCKET, bridge_gateway
from tests.test_gateway_e2e import _exec, _inspect, _settings

gateway_image = e2e.gateway_image
gateway_cleanup = e2e.gateway_cleanup

# --- the auth helper ------------------------------------------------------------------------


async def test_the_auth_helper_relays_logins_to_the_gateway_and_fails_closed(
    tmp_path: Path,
) -> None:
    runs = Runs()
    runs.add(token_sha256("tok-a"), RunEntry("run-a", None, None, None))
    runs.add(token_sha256("tok-b"), RunEntry("run-b", None, None, None))
    path = str(tmp_path / "auth.sock")
    server = LoginServer(path, runs.login)
    await server.start()
    assert os.stat(path).st_mode & 0o777 == 0o600
    proc = await asyncio.create_subprocess_exec(
        *helper_argv(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={},  # squid gives it nothing of the gateway's
    )
    assert proc.stdin is not None
    assert proc.stdout is not None

    async def ask(line: bytes) -> bytes:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(line)
        await proc.stdin.drain()
        return await asyncio.wait_for(proc.stdout.readline(), 30)

    try:
        assert await ask(b"run-a tok-a\n") == b"OK\n"
        assert await ask(b"run%2Da tok%2Da\n") == b"OK\n"  # squid URL-escapes both
        assert (await ask(b"run-b tok-a\n")).startswith(b"ERR")  # another run's token
        assert (await ask(b"run-a tok-x\n")).startswith(b"ERR")
        assert (await ask(b"run-a\n")).startswith(b"ERR")
        assert (await ask(b"run-a " + b"x" * 5000 + b"\n")).startswith(b"ERR")  # bounded
        runs.end("run-a")
        assert (await ask(b"run-a tok-a\n")).startswith(b"ERR")  # its run ended
        assert await ask(b"run-b tok-b\n") == b"OK\n"  # the helper went on
        await server.close()
        assert (await ask(b"run-b tok-b\n")).startswith(b"BH")  # no gateway: refused
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
        await server.close()
    assert proc.returncode == 0
    assert server.checked == 7


# --- squid's resolver -----------------------------------------------------------------------

#: a DNS listener on 127.0.0.1:53 (in squid's network namespace): prints each query, answers
#: allowed.test with the address given, NXDOMAIN for the rest
DNS_LISTENER = r"""
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
address = socket.inet_aton(sys.argv[1])
print("listening", flush=True)
while True:
    data, peer = sock.recvfrom(4096)
    i, labels = 12, []
    while i < len(data) and data[i]:
        labels.append(data[i + 1 : i + 1 + data[i]].decode("ascii", "replace"))
        i += 1 + data[i]
    name = ".".join(labels).lower()
    qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
    print("query", name, qtype, flush=True)
    question = data[12 : i + 5]
    if name == "allowed.test" and qtype == 1:
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + address
        head = data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01\x00\x00\x00\x00"
    elif name == "allowed.test":
        answer, head = b"", data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x00\x00\x00\x00\x00"
    else:
        answer, head = b"", data[:2] + b"\x81\x83" + data[4:6] + b"\x00\x00\x00\x00\x00\x00"
    sock.sendto(head + question + answer, peer)
"""


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _logs(container: aiodocker.containers.DockerContainer) -> str:
    lines = await container.log(stdout=True, stderr=True)
    return "".join(lines)


async def _wait_until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _connects(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _raw_proxy_status(host: str, port: int, request: bytes) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 30)).decode().strip()
    finally:
        writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def origin() -> AsyncIterator[tuple[int, list[web.Request]]]:
    """An HTTP server on every host address, recording each request it gets."""
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text=f"served {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield int(port), seen
    finally:
        await runner.cleanup()


@pytest.mark.docker
@pytest.mark.image
async def test_squid_never_resolves_a_refused_name_and_resolves_an_allowed_one(
    gateway_image: str, origin: tuple[int, list[web.Request]]
) -> None:
    port, seen = origin
    host_ip = await bridge_gateway()
    conf = squid_config([f"allowed.test:{port}"], port=3128, log_port=3130)
    conf = conf.replace("access_log tcp://127.0.0.1:3130 logformat=agentkit", "access_log none")
    conf += "dns_nameservers 127.0.0.1\n"  # the listener below, in squid's network namespace
    suffix = secrets.token_hex(4)
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        squid = await docker.containers.create(
            {
                "Image": gateway_image,
                "Entrypoint": ["/usr/sbin/squid", "-N", "-f", "/run/agentkit-squid/squid.conf"],
                "User": "0:0",
                "HostConfig": {"NetworkMode": "bridge"},
                "Labels": {"agentkit.test": "egress-dns"},
            },
            name=f"agentkit-test-squid-{suffix}",
        )
        listener = None
        try:
            await squid.put_archive("/run/agentkit-squid", _tar("squid.conf", conf.encode()))
            await squid.start()
            listener = await docker.containers.create(
                {
                    "Image": gateway_image,
                    "Entrypoint": ["python3", "-u", "-c", DNS_LISTENER, host_ip],
                    "User": "0:0",
                    "HostConfig": {"NetworkMode": f"container:{squid.id}"},
                    "Labels": {"agentkit.test": "egress-dns"},
                },
                name=f"agentkit-test-dns-{suffix}",
            )
            await listener.start()
            await _wait_until(
                lambda: _has(listener, "listening"), "the DNS listener to listen", timeout=30
            )
            info = await squid.show()
            squid_ip = info["NetworkSettings"]["IPAddress"]
            await _wait_until(lambda: _connects(squid_ip, 3128), "squid to listen")
            proxy = f"http://{squid_ip}:3128"
            async with aiohttp.ClientSession() as http:
                refused = await http.get("http://refused.test/leak", proxy=proxy)
                assert refused.status == 403
                refused_port = await http.get(f"http://refused-port.test:{port}/", proxy=proxy)
                assert refused_port.status == 403
                tunnel = await _raw_proxy_status(
                    squid_ip,
                    3128,
                    b"CONNECT refused-tunnel.test:443 HTTP/1.1\r\n"
                    b"Host: refused-tunnel.test:443\r\n\r\n",
                )
                assert " 403 " in tunnel, tunnel
                allowed = await http.get(f"http://allowed.test:{port}/fine", proxy=proxy)
                assert allowed.status == 200
                assert await allowed.text() == "served /fine"
            queries = await _logs(listener)
        finally:
            for container in (listener, squid):
                if container is not None:
                    await container.delete(force=True)
    names = {line.split()[1] for line in queries.splitlines() if line.startswith("query ")}
    assert "allowed.test" in names, queries  # the control: squid does use this resolver
    assert not [n for n in names if "refused" in n], queries
    assert [r.path for r in seen] == ["/fine"]


async def _has(container: aiodocker.containers.DockerContainer, text: str) -> bool:
    return text in await _logs(container)


# --- agents behind the gateway --------------------------------------------------------------


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.slow
@pytest.mark.usefixtures("gateway_cleanup")
async def test_proxy_logins_per_run_and_agents_cannot_reach_each_other(
    agent_image: str,
    gateway_image: str,
    tmp_path: Path,
    origin: tuple[int, list[web.Request]],
) -> None:
    port, seen = origin
    host_ip = await bridge_gateway()
    allowed = f"http://allowed.test:{port}"
    settings = _settings(
        tmp_path / "root",
        agent_image,
        anthropic_api_key="sk-ant-unused",
        anthropic_base_url=f"http://{host_ip}:9",
        egress_allow=f"allowed.test:{port}",
        gateway_extra_hosts=[f"allowed.test:{host_ip}", f"denied.test:{host_ip}"],
        agent_transport="network",  # the socket transport: tests/test_gateway_sockets.py
    )
    gw_name, _, _ = gateway_names(settings.root)
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        toolset = Toolset(
            container_tools(),
            context=ToolContext(settings=settings, executor=executor, agents=agents),
        )
        a = await agents.spawn(
            "listen", "iso-a", 300_000, entrypoint=["python3", "-m", "http.server", "8000"]
        )
        b = await agents.spawn("idle", "iso-b", 300_000, entrypoint=["sleep", "300"])
        tokens = {}
        for run in (a.id, b.id):
            env = await _exec(run, ["printenv", "ANTHROPIC_API_KEY", "HTTPS_PROXY"])
            token, proxy_url = env.split()
            tokens[run] = token
            assert proxy_url == f"http://{run}:{token}@{gw_name}:3128"
        await _wait_until(
            lambda: _exec_ok(
                a.id,
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000), 2)'",
            ),
            "agent A to listen",
        )
        a_raw, b_raw = await _inspect(a.id), await _inspect(b.id)
        (a_net,) = a_raw["NetworkSettings"]["Networks"]
        (b_net,) = b_raw["NetworkSettings"]["Networks"]
        assert a_net != b_net  # one network per run
        a_ip = a_raw["NetworkSettings"]["Networks"][a_net]["IPAddress"]
        gw_raw = await _inspect(gw_name)
        assert {a_net, b_net} <= set(gw_raw["NetworkSettings"]["Networks"])
        assert (await _exec(gw_name, ["cat", "/proc/sys/net/ipv4/ip_forward"])).strip() == "0"

        # B cannot reach A; both reach the gateway's API and, logged in, its proxy
        probe = (
            "python3 -c 'import socket,sys\n"
            'try:\n socket.create_connection((sys.argv[1], 8000), 5); print("REACHED")\n'
            'except OSError as e: print("UNREACHABLE", e)\' '
        )
        assert "UNREACHABLE" in await _exec(b.id, _sh(probe + a_ip), user="1001")
        for run in (a.id, b.id):
            api = await _exec(run, _sh('curl -sS -m 20 "$ANTHROPIC_BASE_URL/"'), user="1001")
            assert "agentkit-gateway" in api, api
            got = await _exec(run, _sh(f"curl -sS -m 20 {allowed}/curl-{run[-6:]}"), user="1001")
            assert got == f"served /curl-{run[-6:]}", got

        # each client honours the run's login in the proxy URL
        tools = {
            "tunnel": f"curl -sS -m 20 -p {allowed}/tunnel",
            "git": f"git ls-remote {allowed}/repo.git; true",
            "python": "python3 -c 'import urllib.request as u; "
            f'print(u.urlopen("{allowed}/py").read())\'',
            "pip": f"python3 -m venv /tmp/v && /tmp/v/bin/pip download -q --no-deps -d /tmp/d "
            f"--trusted-host allowed.test --index-url {allowed}/simple/ agentkitprobe; true",
            "npm": f"npm view agentkitprobe --registry {allowed}/ --fetch-retries 0; true",
        }
        said = {
            tool: await _exec(b.id, _sh(f"cd /tmp && ({command}) 2>&1"), user="1001")
            for tool, command in tools.items()
        }
        paths = [r.path for r in seen]
        assert "/tunnel" in paths, said["tunnel"]  # CONNECT with the login
        assert "/repo.git/info/refs" in paths, said["git"]
        assert "/py" in paths, said["python"]
        assert "/simple/agentkitprobe/" in paths, said["pip"]
        assert "/agentkitprobe" in paths, said["npm"]
        # the login stays between the agent and squid: the origin never sees it
        for request in seen:
            assert not any(tokens[b.id] in v for v in request.headers.values())
            assert "Proxy-Authorization" not in request.headers

        # no login, a wrong token, or another run's id: 407, nothing goes out
        gw_proxy = f"{gw_name}:3128"
        for login in ("", f"{b.id}:wrong@", f"{a.id}:{tokens[b.id]}@"):
            code = await _exec(
                b.id,
                _sh(
                    f"curl -sS -m 20 -o /dev/null -w '%{{http_code}}' "
                    f"--proxy http://{login}{gw_proxy} {allowed}/nologin"
                ),
                user="1001",
            )
            assert code == "407", (login.split(":")[0], code)
        assert "/nologin" not in [r.path for r in seen]

        # refusals are recorded under the run that logged in, whatever address sent them
        await _exec(b.id, _sh(f"curl -sS -m 20 http://denied.test:{port}/as-b"), user="1001")
        await _exec(
            b.id,
            _sh(
                f"curl -sS -m 20 --proxy http://{a.id}:{tokens[a.id]}@{gw_proxy} "
                f"http://denied.test:{port}/as-a"
            ),
            user="1001",
        )
        a_last_login = time.time()
        gateway = await agents.gateway()
        assert gateway is not None

        async def refused(run: str, path: str) -> bool:
            return any(path in r["target"] for r in await gateway.egress(run))

        await _wait_until(lambda: refused(b.id, "/as-b"), "B's refusal to be recorded")
        await _wait_until(lambda: refused(a.id, "/as-a"), "A's refusal to be recorded")
        assert not await refused(b.id, "/as-a")
        assert not await refused(a.id, "/as-b")
        assert not await refused(b.id, "/nologin")  # a failed login is nobody's

        # A ends: its token dies in squid too, and its network goes
        await agents.stop(a.id)
        waited = await agents.wait(a.id, 60_000)
        assert waited.status.finished
        await agents.settle()
        # squid trusts a checked login for AUTH_RECHECK_S: past that, A's token is asked about
        await _wait_until(
            lambda: _true(time.time() > a_last_login + AUTH_RECHECK_S + 1), "squid's login TTL"
        )
        dead = await _exec(
            b.id,
            _sh(
                f"curl -sS -m 20 -o /dev/null -w '%{{http_code}}' "
                f"--proxy http://{a.id}:{tokens[a.id]}@{gw_proxy} {allowed}/dead"
            ),
            user="1001",
        )
        assert dead == "407"
        assert "/dead" not in [r.path for r in seen]
        networks = await _network_names(settings.root)
        assert a_net not in networks
        assert b_net in networks

        # the tokens are in no tool result, squid record or gateway log
        results = [
            await toolset.call("get_claude_output", {"container_id": a.id}),
            await toolset.call("get_claude_output", {"container_id": b.id}),
            await toolset.call("get_claude_status", {"container_id": b.id}),
            await toolset.call("list_claude_agents", {}),
        ]
        assert "[egress] refused" in results[1].content
        assert "/as-b" in results[1].content
        egress_rows = [*await gateway.egress(a.id), *await gateway.egress(b.id)]
        async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
            gw_logs = "".join(
                await (await docker.containers.get(gw_name)).log(stdout=True, stderr=True)
            )
        await agents.stop(b.id)
        await agents.wait(b.id, 60_000)
        await agents.settle()
    for token in tokens.values():
        for result in results:
            assert token not in result.content
            assert token not in json.dumps(result.data, default=str)
        assert token not in json.dumps(egress_rows)
        assert token not in gw_logs
        for path in (tmp_path / "root").rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert token.encode() not in path.read_bytes(), path
    assert b_net not in await _network_names(settings.root)  # B's network went with it
    assert waited.status.state in (AgentState.STOPPED, AgentState.FAILED, AgentState.SUCCEEDED)


async def _true(value: bool) -> bool:
    return value


async def _exec_ok(container: str, script: str) -> bool:
    out = await _exec(container, _sh(f"{script} && echo EXEC-OK"))
    return "EXEC-OK" in out


async def _network_names(root: str) -> set[str]:
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        found = await docker._query_json(
            "networks", params={"filters": json.dumps({"label": [f"agentkit.root={root}"]})}
        )
    return {str(n["Name"]) for n in found}


@pytest.mark.docker
async def test_run_networks_take_free_subnets_of_the_pool_and_say_when_it_is_full() -> None:
    from agentkit.errors import ConfigError
    from agentkit.gateway.run_networks import RunNetworks
    from tests.containers_support import BASE_IMAGE

    tag = secrets.token_hex(4)
    root = f"/tmp/agentkit-test-runnets-{tag}"
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        gw = await docker.containers.create(
            {"Image": BASE_IMAGE, "Cmd": ["sleep", "300"], "Labels": {"agentkit.root": root}},
            name=f"agentkit-test-runnets-gw-{tag}",
        )
        await gw.start()
        # a /28 of a range nobody else uses: room for two runs' /29s
        pool = f"10.215.{secrets.randbelow(250)}.{secrets.randbelow(16) * 16}/28"
        nets = RunNetworks(
            docker,
            root=root,
            gateway=f"agentkit-test-runnets-gw-{tag}",
            prefix=f"agentkit-test-runnets-{tag}",
            pool=pool,
            socket=DOCKER_SOCKET,
        )
        try:
            first = await nets.create("run-1")
            second = await nets.create("run-2")
            subnets = set()
            for name in (first, second):
                data = await docker._query_json(f"networks/{name}")
                assert data["Internal"] is True
                assert data["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
                subnets.add(data["IPAM"]["Config"][0]["Subnet"])
                assert f"agentkit-test-runnets-gw-{tag}" in {
                    c["Name"] for c in data["Containers"].values()
                }
            assert len(subnets) == 2
            with pytest.raises(ConfigError, match="AGENTKIT_AGENT_SUBNET_POOL"):
                await nets.create("run-3")
            assert await nets.remove("run-1")
            again = await nets.create("run-4")  # the freed /29 is taken again
            data = await docker._query_json(f"networks/{again}")
            assert data["IPAM"]["Config"][0]["Subnet"] in subnets
        finally:
            await gw.delete(force=True)
            for run in ("run-1", "run-2", "run-3", "run-4"):
                await nets.remove(run)
        assert await _network_names(root) == set()
