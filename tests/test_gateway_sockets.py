"""The gateway's socket transport: agents with no network reach their run's two sockets only.

* :class:`~agentkit.gateway.run_sockets.RunSockets` on real unix sockets: the proxy socket
  splices to a TCP listener standing in for squid, connections are capped per run, the
  folder goes with the run, run ids that are not one path component are refused;
* for real (dockerd, the agent and gateway images): an agent on the socket transport has no
  interface but loopback, reaches the model API and, logged in, squid through
  ``agentkit-forward``, sees only its own sockets (read-only), and its folder goes when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from pathlib import Path

import pytest
from aiohttp import web

from agentkit.containers.service import AgentService
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.agents import GatewayAdditions, ImageStart
from agentkit.gateway.host import SOCKETS_TARGET
from agentkit.gateway.peers import PeerLimit
from agentkit.gateway.run_sockets import API_SOCKET, PROXY_SOCKET, RunSockets, check_run_id
from tests import test_gateway_e2e as e2e
from tests import test_gateway_egress as egress
from tests.containers_support import BASE_IMAGE, bridge_gateway
from tests.test_gateway_e2e import _exec, _helper, _inspect, _settings
from tests.test_gateway_egress import _sh, _wait_until

gateway_image = e2e.gateway_image
gateway_cleanup = e2e.gateway_cleanup
origin = egress.origin


class _Hello(asyncio.Protocol):
    """The model API's stand-in: answers each connection with one line, then closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"api here\n")
        transport.close()


async def _echo_server() -> tuple[asyncio.Server, int, list[bytes], list[str]]:
    """squid's stand-in: echoes what it gets, upper-cased; notes each client's address."""
    got: list[bytes] = []
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        while data := await reader.read(65536):
            got.append(data)
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], got, peers


async def test_run_sockets_splice_to_the_proxy_cap_each_run_and_go_with_it(
    tmp_path: Path,
) -> None:
    server, port, got, peers = await _echo_server()
    limits = PeerLimit(_Hello)
    sockets = RunSockets(str(tmp_path / "runs"), limits.keyed, port, limit=3)
    try:
        folder = await sockets.open("run-a")
        assert sorted(os.listdir(folder)) == [API_SOCKET, PROXY_SOCKET]
        assert os.stat(folder).st_mode & 0o777 == 0o755
        assert os.stat(os.path.join(folder, PROXY_SOCKET)).st_mode & 0o777 == 0o666

        reader, writer = await asyncio.open_unix_connection(os.path.join(folder, API_SOCKET))
        assert await reader.readline() == b"api here\n"
        writer.close()

        held = []
        for i in range(3):  # the cap: three at once for this run
            r, w = await asyncio.open_unix_connection(os.path.join(folder, PROXY_SOCKET))
            w.write(f"hello {i}\n".encode())
            assert await r.readline() == f"HELLO {i}\n".encode()
            held.append((r, w))
        r4, w4 = await asyncio.open_unix_connection(os.path.join(folder, PROXY_SOCKET))
        assert await r4.read() == b""  # the fourth is closed before anything is relayed
        assert sockets.refused == 1
        w4.close()
        # another run has its own count
        other = await sockets.open("run-b")
        r5, w5 = await asyncio.open_unix_connection(os.path.join(other, PROXY_SOCKET))
        w5.write(b"from b\n")
        assert await r5.readline() == b"FROM B\n"
        w5.close()
        # each run reaches squid from a loopback address of its own (squid caps per address)
        assert len(set(peers[:3])) == 1
        assert peers[3] != peers[0]
        assert all(ipaddress.ip_address(p) in ipaddress.ip_network("127.64.0.0/10") for p in peers)
        # a half-close reaches squid's side and its answer still comes back
        r0, w0 = held[0]
        w0.write_eof()
        assert await r0.read() == b""
        for _, w in held[1:]:
            w.close()

        # a gateway restart: the same folder, the sockets bound again
        sockets.close_all()
        again = RunSockets(str(tmp_path / "runs"), limits.keyed, port)
        assert await again.sweep(["run-a"], older_than=3600) == []  # run-b just ended:
        assert os.listdir(other) == []  # its sockets go, its folder stays a while
        assert await again.sweep(["run-a"]) == ["run-b"]
        assert await again.open("run-a") == folder
        r6, w6 = await asyncio.open_unix_connection(os.path.join(folder, PROXY_SOCKET))
        w6.write(b"after restart\n")
        assert await r6.readline() == b"AFTER RESTART\n"
        # the run ends: its open tunnel is cut, not left to outlive it
        assert await again.close("run-a")
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionResetError):  # cut: end of file or a reset
                assert await r6.read() == b""
        w6.close()
        # its sockets go at once; the empty folder stays for the engine (a finished
        # container's archive needs its bind sources) until a sweep finds it old enough
        assert os.listdir(folder) == []
        assert await again.sweep([], older_than=3600) == []
        assert os.path.isdir(folder)
        assert await again.sweep([]) == ["run-a"]
        assert not os.path.exists(folder)
        assert not os.path.exists(other)
        assert b"hello 0\n" in got
    finally:
        sockets.close_all()
        server.close()
        await server.wait_closed()


def test_the_forwarder_runs_before_the_entrypoint_the_run_would_have_had() -> None:
    plain = GatewayAdditions(env={}, network="n")
    assert plain.entrypoint(None) is None
    assert plain.entrypoint(["sh"]) == ("sh",)
    assert plain.command(None, None) is None
    image = ImageStart(("/usr/local/bin/agent-entrypoint",), ("--help",))
    wrapped = GatewayAdditions(
        env={}, network="none", entrypoint_prefix=("/fwd",), image_start=image
    )
    # the image's own entrypoint and command (a create request's entrypoint drops the command)
    assert wrapped.entrypoint(None) == ("/fwd", "/usr/local/bin/agent-entrypoint")
    assert wrapped.command(None, None) == ("--help",)
    # the spawn's own: kept, behind the forwarder
    assert wrapped.entrypoint(["sleep", "3"]) == ("/fwd", "sleep", "3")
    assert wrapped.command(None, ["sleep", "3"]) is None
    assert wrapped.command(["task"], None) == ("task",)


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "x" * 65, "-x", "a\nb"])
def test_run_ids_that_are_not_one_path_component_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        check_run_id(bad)


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.slow
@pytest.mark.usefixtures("gateway_cleanup")
async def test_socket_transport_agent_has_no_network_and_reaches_only_its_own_sockets(
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
    )
    assert settings.agent_transport == "socket"  # the default on the Docker runtime
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        # an image without the forwarder cannot serve the sockets: its run gets a network of
        # its own instead (the network transport), and no sockets
        bare = await agents.spawn(
            "bare", "sock-bare", 60_000, image=BASE_IMAGE, command=["sleep", "300"]
        )
        bare_raw = await _inspect(bare.id)
        gateway = await agents.gateway()
        assert gateway is not None
        assert bare_raw["HostConfig"]["NetworkMode"] == gateway.host.run_network(bare.id)
        assert bare_raw["HostConfig"]["NetworkMode"].startswith("agentkit-agents-")
        assert not os.path.exists(f"{settings.root}/gateway/runs/{bare.id}")
        bare_meta = await agents.store.read_meta(bare.id)
        assert bare_meta is not None
        assert bare_meta["gateway_transport"] == "network"
        await agents.stop(bare.id)
        await agents.wait(bare.id, 60_000)
        a = await agents.spawn("idle", "sock-a", 300_000, entrypoint=["sleep", "300"])
        b = await agents.spawn("idle", "sock-b", 300_000, entrypoint=["sleep", "300"])
        raw = await _inspect(a.id)
        assert raw["HostConfig"]["NetworkMode"] == "none"
        assert list(raw["NetworkSettings"]["Networks"]) == ["none"]
        folder = f"{settings.root}/gateway/runs/{a.id}"
        mounts = {m["Destination"]: m for m in raw["Mounts"]}
        assert mounts[SOCKETS_TARGET]["Source"] == folder
        assert mounts[SOCKETS_TARGET]["RW"] is False
        # the forwarder runs before the spawn's own entrypoint
        assert raw["Config"]["Entrypoint"][0] == "/usr/local/bin/agentkit-forward"
        a_meta = await agents.store.read_meta(a.id)
        assert a_meta is not None
        assert a_meta["gateway_transport"] == "socket"

        # no interface but loopback, no route: nothing to reach, not even the gateway's address
        interfaces = await _exec(a.id, _sh("ls /sys/class/net"), user="1001")
        assert interfaces.split() == ["lo"]
        gw_raw = await _inspect(gateway.host.name)
        gw_ips = [n["IPAddress"] for n in gw_raw["NetworkSettings"]["Networks"].values()]
        gw_ips = [ip for ip in gw_ips if ip]
        probe = (
            "python3 -c 'import socket,sys\n"
            "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)\n"
            ' print("REACHED")\n'
            'except OSError as e: print("UNREACHABLE", e)\' '
        )
        for ip in [*gw_ips, host_ip]:
            for target_port in ("8080", "3128", str(port)):
                said = await _exec(a.id, _sh(f"{probe} {ip} {target_port}"), user="1001")
                assert "UNREACHABLE" in said, (ip, target_port, said)

        # its own two sockets only, read-only; the other run's are nowhere in its view
        listing = await _exec(a.id, _sh(f"ls -A {SOCKETS_TARGET}"), user="1001")
        assert listing.split() == [API_SOCKET, PROXY_SOCKET]
        wrote = await _exec(
            a.id, _sh(f"touch {SOCKETS_TARGET}/x 2>&1; ls -A {SOCKETS_TARGET}"), user="1001"
        )
        assert "x" not in wrote.split()
        found = await _exec(a.id, _sh(f"find / -name '{b.id}*' 2>/dev/null; true"), user="0")
        assert b.id not in found

        # the model API and, logged in, squid through the forwarder on the agent's loopback
        for run in (a.id, b.id):
            api = await _exec(run, _sh('curl -sS -m 20 "$ANTHROPIC_BASE_URL/"'), user="1001")
            assert "agentkit-gateway" in api, api
            got = await _exec(run, _sh(f"curl -sS -m 20 {allowed}/sock-{run[-6:]}"), user="1001")
            assert got == f"served /sock-{run[-6:]}", got
            tunnel = await _exec(
                run, _sh(f"curl -sS -m 20 -p {allowed}/tunnel-{run[-6:]}"), user="1001"
            )
            assert tunnel == f"served /tunnel-{run[-6:]}", tunnel
        code = await _exec(
            a.id,
            _sh(
                "curl -sS -m 20 -o /dev/null -w '%{http_code}' "
                f"--proxy http://127.0.0.1:3128 {allowed}/nologin"
            ),
            user="1001",
        )
        assert code == "407"
        assert "/nologin" not in [r.path for r in seen]
        await _exec(a.id, _sh(f"curl -sS -m 20 http://denied.test:{port}/as-a"), user="1001")

        async def refused() -> bool:
            return any("/as-a" in r["target"] for r in await gateway.egress(a.id))

        await _wait_until(refused, "A's refusal to be recorded under A")

        # A ends: its sockets go (the empty folder stays a while for the engine); B's stay
        await agents.stop(a.id)
        await agents.wait(a.id, 60_000)
        await agents.settle()
        assert os.listdir(folder) == []
        assert os.path.exists(f"{settings.root}/gateway/runs/{b.id}/{API_SOCKET}")
        await agents.stop(b.id)
        await agents.wait(b.id, 60_000)
        await agents.settle()
    assert os.listdir(f"{settings.root}/gateway/runs/{b.id}") == []


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.parametrize(
    ("folder", "port", "said"),
    [
        ("/run/x,fork", "8080", "letters, digits"),  # socat would read ",fork" as an option
        ("run/x", "8080", "absolute path"),
        ("/run/x", "80:80", "digits only"),
    ],
)
async def test_the_forwarder_refuses_a_folder_or_port_socat_would_read_as_options(
    agent_image: str, folder: str, port: str, said: str
) -> None:
    status, out = await _helper(
        agent_image,
        "none",
        "/tmp/agentkit-test-forwarder",
        "exec /usr/local/bin/agentkit-forward echo RAN",
        env={"AGENTKIT_GATEWAY_SOCKETS": folder, "AGENTKIT_GATEWAY_API_PORT": port},
    )
    assert status == 2, out
    assert said in out
    assert "RAN" not in out
