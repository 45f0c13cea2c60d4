"""The benchmarks still run (tiny sample counts; their numbers are read by people, not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers_support import BASE_IMAGE, docker_ok, image_ok
from tests.support import require

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(script: str, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_agent_loop_bench_reports_overhead() -> None:
    out = _bench("agent_loop.py", "--turns", "3", "--rounds", "2")
    assert "loop overhead" in out
    assert "bare SDK round trip" in out


def test_executors_bench_runs_side_by_side() -> None:
    require(Path("/usr/sbin/sshd").exists(), "OpenSSH server (apt install openssh-server)")
    out = _bench("executors.py", "--n", "5")
    assert "asyncssh" in out


async def test_agents_bench_runs_side_by_side() -> None:
    require(await docker_ok(), "a running Docker engine")
    require(Path("/usr/sbin/sshd").exists(), "OpenSSH server (apt install openssh-server)")
    out = _bench("agents.py", "--n", "5", "--spawns", "3", timeout=400)
    assert "status" in out


async def test_workspaces_bench_runs(agent_image: str) -> None:
    out = _bench("workspaces.py", "--workspaces", "3", "--n", "1", timeout=400)
    assert "every workspace changed" in out
    assert "nothing changed" in out


def test_workspaces_handover_bench_runs() -> None:
    require(os.getuid() == 0, "root (the hand-over bench chowns)")
    out = _bench("workspaces.py", "--handover", "2000", "--n", "2")
    assert "chown -R -h" in out


async def test_runtimes_bench_runs_side_by_side() -> None:
    from tests.runtimes_support import swarm_manager

    require(await swarm_manager(), "a swarm manager engine (.ci/swarm-init.sh)")
    out = _bench("runtimes.py", "--spawns", "3", "--n", "2", "--status", "20", timeout=400)
    assert "exit->noticed" in out
    assert "swarm/docker" in out


async def test_serve_bench_runs_side_by_side() -> None:
    require(await docker_ok(), "a running Docker engine")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE} (.ci/build-images.sh)")
    out = _bench("serve.py", "--n", "20", "--subscribers", "5", "--lines", "20", timeout=300)
    assert "in-process status" in out
    assert "5 got every event once and in order, 0 lost or repeated" in out


@pytest.mark.timeout(500)  # the subprocess has 400 s (pytest's default is 300)
async def test_gateway_bench_runs_side_by_side() -> None:
    require(await docker_ok(), "a running Docker engine")
    out = _bench("gateway.py", "--n", "5", "--agents", "3", timeout=400)
    assert "added p50" in out
    assert "socket vs network transport" in out  # the agent image over both transports
    assert "3 of 3 metered" in out


async def test_gateway_networks_bench_runs_side_by_side() -> None:
    require(await docker_ok(), "a running Docker engine")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    out = _bench("gateway_networks.py", "--live", "3", "--k", "2")
    assert "ratio to the floor" in out
    assert "the gateway is on 4 networks" in out  # Docker's bridge + the 3 live run networks


async def test_scale_bench_runs_every_section() -> None:
    require(await docker_ok(), "a running Docker engine")
    require(Path("/usr/sbin/sshd").exists(), "OpenSSH server (apt install openssh-server)")
    out = _bench(
        "scale.py",
        *("--n", "5", "--runs", "200", "--spawns", "3", "--agents", "5", "--seconds", "5"),
        *("--real-agents", "2", "--files", "300", "--workspace-rounds", "1"),
        timeout=400,
    )
    for line in ("status p50", "list first page at 200 runs", "3 concurrent spawns"):
        assert line in out
    assert "5 chatty agents" in out
    assert "0 lines missing in records" in out
    assert "spawn on 300 files" in out


async def test_sessions_bench_runs() -> None:
    require(await docker_ok(), "a running Docker engine")
    out = _bench("sessions.py", "--n", "5")
    assert "echo" in out
