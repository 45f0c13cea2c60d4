"""Agent service benchmark: one run, side by side, over the SSH executor on loopback.

    .venv/bin/python bench/agents.py [--n 300] [--spawns 20] [--real-image]

Needs dockerd, /usr/sbin/sshd (a private one is started) and the base image
(``agentkit-base:bookworm``; ``--real-image`` also uses the Claude Code image for the concurrent
spawns, driven by the scripted server).

Measures:

* ``list_claude_agents`` and ``get_claude_status`` through the Toolset: p50 / p99 (ms), and
  throughput with 16 calls in flight;
* the same query the seed made: ``docker ps`` CLI over a ControlMaster ``ssh``;
* time from the agent's exit (its last output line is a timestamp) to ``wait`` returning,
  beside the Engine's wait API alone;
* stop latency (``stop_claude_agent`` until the state is recorded ``stopped``);
* N concurrent spawns: wall time, failures, all finished and recorded;
* the controller's resident memory while following the logs of N running agents.

Targets (from this one run; never timed assertions in tests): status <= 1.5 ms p50 and >= 12x
faster than CLI-over-ssh; exit noticed <= 50 ms; stop <= 250 ms; 20 spawns <= 3 s wall with zero
failures; controller <= 150 MB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentkit.containers.service import AgentService, AgentState, new_agent_id
from agentkit.executors import SSHExecutor
from agentkit.runtimes.base import RunSpec
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from bench._sampling import latencies, pct, throughput
from tests.containers_support import (
    AGENT_IMAGE,
    BASE_IMAGE,
    bridge_gateway,
    remove_containers_of_root,
)
from tests.sshd import SSHServer, sshd_available, start_sshd

# A stand-in agent that prints stream-json lines for a while (mechanics without the CLI cost).
CHATTY = (
    'i=0; while [ "$i" -lt "$N" ]; do '
    'printf \'{"type":"assistant","message":{"id":"m%s","content":[{"type":"text",'
    '"text":"step %s of the plan, with some words to make the line realistic"}]}}\\n\' "$i" "$i"; '
    'i=$((i+1)); sleep "$DELAY"; done; '
    'printf \'{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
    '"total_cost_usd":0.001,"session_id":"bench","result":"done"}\\n\''
)


# prints the moment just before the process exits
LAST_WORDS = "sleep 0.5; date +%s.%N"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class ControlMaster:
    """The seed's design: one ssh ControlMaster, a `docker ps` CLI process per query."""

    def __init__(self, server: SSHServer, tmp: Path) -> None:
        self.server = server
        self.path = tmp / "ctl"
        self.base = [
            "ssh",
            "-o",
            f"ControlPath={self.path}",
            "-o",
            f"UserKnownHostsFile={server.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-i",
            str(server.client_key),
            "-p",
            str(server.port),
            f"{server.user}@{server.host}",
        ]

    async def start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.base[:1],
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=yes",
            "-fN",
            *self.base[1:],
        )
        await proc.wait()

    async def docker_ps(self) -> bytes:
        remote = shlex.join(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                "label=agentkit.managed-by=agentkit",
                "--format",
                "{{json .}}",
            ]
        )
        proc = await asyncio.create_subprocess_exec(
            *self.base,
            remote,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return out

    async def stop(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.base[:1], "-O", "exit", *self.base[1:], stderr=asyncio.subprocess.DEVNULL
        )
        await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per latency measurement")
    parser.add_argument("--spawns", type=int, default=20)
    parser.add_argument("--real-image", action="store_true", help="spawn the Claude Code image")
    args = parser.parse_args()
    if not sshd_available():
        sys.exit("needs /usr/sbin/sshd (apt install openssh-server)")
    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-agents-"))
    server = start_sshd(tmp / "sshd")
    root = str(tmp / "root")
    settings = server.settings(
        root=root, image=BASE_IMAGE, anthropic_api_key="sk-ant-bench-0123456789"
    )
    results: dict[str, object] = {}
    executor = SSHExecutor(settings)
    await executor.connect()
    cm = ControlMaster(server, tmp)
    agents = AgentService(executor, settings)
    try:
        await agents.start()
        toolset = Toolset(
            container_tools(),
            context=ToolContext(settings=settings, executor=executor, agents=agents),
        )
        env = {"N": "100000", "DELAY": "1"}
        # some history: a few finished runs and a few running agents
        for i in range(5):
            st = await agents.spawn(f"finished {i}", f"ws{i}", 60_000, command=["true"])
            await agents.wait(st.id, 30_000)
        running = [
            await agents.spawn(
                f"running {i}", f"run{i}", 600_000, command=["sh", "-c", CHATTY], extra_env=env
            )
            for i in range(3)
        ]
        target = running[0].id

        async def status() -> None:
            result = await toolset.call("get_claude_status", {"container_id": target})
            assert not result.is_error, result.content

        async def listing() -> None:
            result = await toolset.call("list_claude_agents", {})
            assert not result.is_error, result.content

        await cm.start()
        assert b"claude-agent-" in await cm.docker_ps()
        st_l = await latencies(status, args.n)
        li_l = await latencies(listing, max(args.n // 3, 30))
        cli_l = await latencies(cm.docker_ps, max(args.n // 3, 30), warmup=3)
        st_t = await throughput(status, args.n * 2, 16)
        li_t = await throughput(listing, args.n, 16)
        cli_t = await throughput(cm.docker_ps, max(args.n // 3, 30), 16)
        results["get_claude_status"] = {
            "p50": pct(st_l, 0.5),
            "p99": pct(st_l, 0.99),
            "per_s_16": st_t,
        }
        results["list_claude_agents"] = {
            "p50": pct(li_l, 0.5),
            "p99": pct(li_l, 0.99),
            "per_s_16": li_t,
        }
        results["docker_ps_cli_controlmaster"] = {
            "p50": pct(cli_l, 0.5),
            "p99": pct(cli_l, 0.99),
            "per_s_16": cli_t,
        }

        # the engine's own floor for the same operations, through the same forwarded socket
        runtime = await agents.runtime()

        def raw_spec(cmd: list[str]) -> RunSpec:
            return RunSpec(
                name=new_agent_id(),
                image=BASE_IMAGE,
                labels={k: v for k, v in agents.labels.items() if v is not None},
                env={},
                command=tuple(cmd),
                user="1001:1001",
                init=True,
            )

        floor_wait: list[float] = []
        floor_stop: list[float] = []
        for _ in range(5):
            spec = raw_spec(["sh", "-c", LAST_WORDS])
            await runtime.create(spec)
            await runtime.start(spec.name)
            await runtime.wait(spec.name)
            returned = time.time()
            out = b"".join([c.data async for c in runtime.logs(spec.name)])
            floor_wait.append((returned - float(out.split()[-1])) * 1000)
            await runtime.remove(spec.name, force=True)
            spec = raw_spec(["sleep", "600"])
            await runtime.create(spec)
            await runtime.start(spec.name)
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            await runtime.stop(spec.name, grace=1)
            await runtime.wait(spec.name)
            floor_stop.append((time.perf_counter() - start) * 1000)
            await runtime.remove(spec.name, force=True)
        specs = [raw_spec(["sleep", "5"]) for _ in range(args.spawns)]
        start = time.perf_counter()
        await asyncio.gather(*(runtime.create(sp) for sp in specs))
        await asyncio.gather(*(runtime.start(sp.name) for sp in specs))
        floor_spawn_wall = time.perf_counter() - start
        await asyncio.gather(*(runtime.remove(sp.name, force=True) for sp in specs))
        results["engine_floor"] = {
            "wait_api_after_exit_ms_p50": statistics.median(floor_wait),
            "stop_plus_wait_ms_p50": statistics.median(floor_stop),
            f"create_start_{args.spawns}_concurrent_wall_s": floor_spawn_wall,
        }

        # exit -> wait returns: the agent's last words (a timestamp) against wait returning
        exit_lat: list[float] = []
        for i in range(10):
            st = await agents.spawn(f"exit {i}", "exit", 60_000, command=["sh", "-c", LAST_WORDS])
            await agents.wait(st.id, 30_000)
            returned = time.time()
            await agents.settle()
            out = await agents.store.read_output(st.id)
            exit_lat.append((returned - float(out.split()[-1])) * 1000)
        results["exit_to_wait_ms"] = {"p50": statistics.median(exit_lat), "max": max(exit_lat)}

        # stop latency (init forwards SIGTERM)
        stop_lat: list[float] = []
        for i in range(8):
            st = await agents.spawn(f"stop {i}", "stop", 60_000, command=["sleep", "600"])
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            result = await toolset.call("stop_claude_agent", {"container_id": st.id})
            stop_lat.append((time.perf_counter() - start) * 1000)
            assert result.data["state"] == "stopped", result.content
        results["stop_ms"] = {"p50": statistics.median(stop_lat), "max": max(stop_lat)}

        # N concurrent spawns, then follow them all and measure the controller's memory
        for st in running:
            await agents.stop(st.id)
        await agents.settle()
        spawn_kw: dict[str, object] = {}
        server_ctx = None
        if args.real_image:
            from agentkit.testing import ScriptedAnthropicServer, reply

            server_ctx = ScriptedAnthropicServer(
                default=reply.text("ok").delayed(8),
                host="0.0.0.0",
            )
            await server_ctx.start()
            gateway = await bridge_gateway()
            agents.settings = agents.settings.model_copy(
                update={"image": AGENT_IMAGE, "anthropic_base_url": server_ctx.url_for(gateway)}
            )
        else:
            spawn_kw = {
                "command": ["sh", "-c", CHATTY],
                "extra_env": {"N": "60", "DELAY": "0.1"},
            }
        rss_before = rss_mb()
        start = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                agents.spawn(f"concurrent {i}", f"c{i}", 120_000, **spawn_kw)  # type: ignore[arg-type]
                for i in range(args.spawns)
            ),
            return_exceptions=True,
        )
        wall = time.perf_counter() - start
        spawned = [o for o in outcomes if not isinstance(o, BaseException)]
        failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        await asyncio.sleep(3.0)  # all following, output streaming
        rss_following = rss_mb()
        finals = await asyncio.gather(*(agents.wait(s.id, 120_000) for s in spawned))
        ok = [f for f in finals if f.status.state == AgentState.SUCCEEDED]
        lines = [len((await agents.output(s.id, 5)).text) > 0 for s in spawned]
        results["concurrent_spawns"] = {
            "n": args.spawns,
            "image": "claude-code" if args.real_image else "base + stream-json printer",
            "wall_s": wall,
            "failures": failures,
            "succeeded": len(ok),
            "recorded_output": sum(lines),
        }
        results["controller_rss_mb"] = {
            "before_spawns": rss_before,
            f"following_{len(spawned)}": rss_following,
        }
        if server_ctx is not None:
            await server_ctx.stop()
    finally:
        await agents.aclose()
        await cm.stop()
        await executor.aclose()
        server.stop()
        await remove_containers_of_root(root)

    st = results["get_claude_status"]
    cli = results["docker_ps_cli_controlmaster"]
    assert isinstance(st, dict)
    assert isinstance(cli, dict)
    results["status_vs_cli_p50_ratio"] = cli["p50"] / st["p50"]
    print(json.dumps(results, indent=2, default=float))
    print(
        f"\nstatus p50 {st['p50']:.2f} ms (target <= 1.5), "
        f"{results['status_vs_cli_p50_ratio']:.1f}x faster than docker ps over ControlMaster "
        "(target >= 12x)"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONASYNCIODEBUG", "0")
    asyncio.run(main())
