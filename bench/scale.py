"""One host at full speed (issue 13): every figure as a ratio to a floor measured in this run.

    .venv/bin/python bench/scale.py [--n 400] [--runs 10000] [--spawns 20,100] [--agents 200]
        [--seconds 20] [--real-agents 20] [--files 100000] [--only requests,list,...]

Needs dockerd, /usr/sbin/sshd (a private one is started on loopback) and the base image
(``agentkit-base:bookworm``). Sections:

* ``requests``: ``get_claude_status`` (running agent) and ``list_claude_agents`` through the
  Toolset over SSH, against the floor: a raw Engine API request (inspect / list) written by hand
  on persistent SSH channels (one per request in flight) in the same process. p50 interleaved
  call by call (noise hits both alike) and throughput with 16 in flight. Concurrent calls for
  the same agent share engine reads (never one sent before the call: containers/fresh.py), so
  the throughput of status calls spread over 3 agents is reported too.
* ``list``: first page of ``list_claude_agents`` with 10 and with 10,000 recorded runs (a fresh
  controller on each history; its start-up, which reads the index once, is reported too).
* ``spawns``: N concurrent ``spawn`` (N = 20, 100) vs the engine alone (create + start of N
  containers of the same image, concurrently, through the same forwarded socket), in the
  default configuration (the gateway on unless ``AGENTKIT_GATEWAY=false``; its first start,
  once per controller, is done before and reported apart). ``--spawn-rounds`` bursts of each
  kind, interleaved: the bare floor (no mount, limits or network: the target's ratio), the
  engine creating exactly the spec a spawn asks for (mount, limits, init, the gateway's
  network), the bare container on the agents' internal network (what that network alone costs
  the engine), and ours. Load noise swamps a few percent of wall time on a shared machine, so
  agentkit's own share of the critical path is reported too: how long the engine sits idle at
  the start of a burst (until the first create), the tail after the last start, the
  controller's CPU per burst, and each spawn phase (``Launcher.phases``). Before each round
  the controller's spare run networks (``AGENTKIT_AGENT_NETWORK_SPARES``) are made again, as
  between bursts of a controller that runs all day.
* ``follow``: the controller's CPU (share of one core) and RSS while following 200 agents that
  each print a stream-json line every 100 ms, records over SSH, then every line checked in the
  records. The agents are the in-memory runtime (200 real containers do not fit 2 shared
  cores); a smaller run with real containers (``--real-agents``) follows.
* ``workspace``: spawn on a 100,000-file workspace the agent already owns vs on an empty one
  (and, for scale, what the old ``chown -R`` of that tree alone costs).

Targets (issue 13): status p50 <= 1.5x the floor and >= 50% of its throughput at 16 in flight;
list first page p50 <= 2 ms at 10,000 runs; 20 concurrent spawns <= 1.1x the engine alone;
200 followed agents <= 1 core and <= 300 MB; spawn on 100,000 files <= 1.2x an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentkit.containers.launch import plan_launch
from agentkit.containers.service import AgentService, AgentState, new_agent_id
from agentkit.executors import SSHExecutor
from agentkit.executors.base import UnixConnection
from agentkit.runtimes.base import RunSpec
from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from bench._sampling import interleaved, pct, throughput
from tests.containers_support import AGENT_IMAGE, remove_containers_of_root
from tests.sshd import SSHServer, sshd_available, start_sshd

SOCKET = "/var/run/docker.sock"
CHATTY = (
    'i=0; while [ "$i" -lt "$N" ]; do '
    'printf \'{"type":"assistant","message":{"id":"m%s","content":[{"type":"text",'
    '"text":"step %s of the plan, with some words to make the line realistic"}]}}\\n\' "$i" "$i"; '
    'i=$((i+1)); sleep "$DELAY"; done; '
    'printf \'{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
    '"total_cost_usd":0.001,"session_id":"bench","result":"done"}\\n\''
)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RawEngine:
    """The floor: hand-written HTTP/1.1 on one persistent channel (no client library)."""

    def __init__(self, conn: UnixConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, executor: SSHExecutor) -> RawEngine:
        return cls(await executor.open_unix_connection(SOCKET))

    async def get(self, target: str) -> bytes:
        self.conn.writer.write(f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
        reader = self.conn.reader
        head = await reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length is not None:
            return await reader.readexactly(length)
        body = bytearray()
        while size := int((await reader.readline()).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
        return bytes(body)

    def close(self) -> None:
        self.conn.writer.close()


async def floor_pool(executor: SSHExecutor, target: str, n: int) -> Callable[[], Awaitable[Any]]:
    """A call of the floor request on one of ``n`` persistent channels (one per call in flight)."""
    idle = [await RawEngine.open(executor) for _ in range(n)]

    async def call() -> bytes:
        raw = idle.pop()
        try:
            return await raw.get(target)
        finally:
            idle.append(raw)

    return call


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, server: SSHServer, tmp: Path) -> None:
        self.args = args
        self.server = server
        self.tmp = tmp
        self.results: dict[str, Any] = {}
        self.roots: list[str] = []

    def settings(self, name: str, **extra: Any) -> Any:
        root = str(self.tmp / name)
        self.roots.append(root)
        values = {"image": AGENT_IMAGE, "anthropic_api_key": "sk-ant-bench-0123456789", **extra}
        return self.server.settings(root=root, **values)

    async def service(self, name: str, **extra: Any) -> tuple[SSHExecutor, AgentService]:
        settings = self.settings(name, **extra)
        executor = SSHExecutor(settings)
        await executor.connect()
        agents = AgentService(executor, settings)
        await agents.start()
        return executor, agents

    # --- requests ---------------------------------------------------------------------------

    async def requests(self) -> None:
        n = self.args.n
        executor, agents = await self.service("requests")
        try:
            toolset = Toolset(
                container_tools(),
                context=ToolContext(settings=agents.settings, executor=executor, agents=agents),
            )
            for i in range(5):
                st = await agents.spawn(f"finished {i}", f"ws{i}", 60_000, entrypoint=["true"])
                await agents.wait(st.id, 30_000)
            running = [
                await agents.spawn(f"run {i}", f"r{i}", 600_000, entrypoint=["sleep", "600"])
                for i in range(3)
            ]
            await agents.settle()
            target = running[0].id
            version = (await agents.runtime()).docker.api_version  # type: ignore[attr-defined]
            filters = json.dumps({"label": [f"{k}={v}" for k, v in agents.labels.items()]})
            from urllib.parse import urlencode

            inspect_t = f"/{version}/containers/{target}/json"
            list_t = f"/{version}/containers/json?" + urlencode({"all": "1", "filters": filters})
            floor_inspect = await floor_pool(executor, inspect_t, 16)
            floor_list = await floor_pool(executor, list_t, 16)

            async def status() -> None:
                result = await toolset.call("get_claude_status", {"container_id": target})
                assert not result.is_error, result.content

            spread = itertools.cycle([st.id for st in running])

            async def status_spread() -> None:  # calls for different agents share no request
                result = await toolset.call("get_claude_status", {"container_id": next(spread)})
                assert not result.is_error, result.content

            async def listing() -> None:
                result = await toolset.call("list_claude_agents", {})
                assert not result.is_error, result.content
                assert len(result.data["agents"]) == 8

            lat = await interleaved(
                {
                    "status": status,
                    "floor_inspect": floor_inspect,
                    "list": listing,
                    "floor_list": floor_list,
                },
                n,
            )
            tput = {}
            for name, fn in (
                ("status", status),
                ("floor_inspect", floor_inspect),
                ("list", listing),
                ("floor_list", floor_list),
            ):
                tput[name] = await throughput(fn, n * 2, 16)
            tput["status_of_3_agents"] = await throughput(status_spread, n * 2, 16)
            p50 = {k: pct(v, 0.5) for k, v in lat.items()}
            self.results["requests"] = {
                "p50_ms": p50,
                "p99_ms": {k: pct(v, 0.99) for k, v in lat.items()},
                "per_s_16_in_flight": tput,
                "status_p50_vs_floor": ratio(p50["status"], p50["floor_inspect"]),
                "status_throughput_share_of_floor": ratio(tput["status"], tput["floor_inspect"]),
                "status_of_3_agents_throughput_share": ratio(
                    tput["status_of_3_agents"], tput["floor_inspect"]
                ),
                "list_p50_vs_floor": ratio(p50["list"], p50["floor_list"]),
                "list_throughput_share_of_floor": ratio(tput["list"], tput["floor_list"]),
            }
            for st in running:
                await agents.stop(st.id)
        finally:
            await agents.aclose()
            await executor.aclose()

    # --- list with a long history --------------------------------------------------------------

    async def list_history(self) -> None:
        out: dict[str, Any] = {}
        for count in (10, self.args.runs):
            settings = self.settings(f"history-{count}")
            write_history(Path(settings.runs_root), count)
            executor = SSHExecutor(settings)
            await executor.connect()
            agents = AgentService(executor, settings)
            try:
                started = time.perf_counter()
                await agents.start()
                start_s = time.perf_counter() - started
                toolset = Toolset(container_tools(), context=ToolContext(agents=agents))
                rss = rss_mb()

                async def first_page(toolset: Toolset = toolset, count: int = count) -> None:
                    result = await toolset.call("list_claude_agents", {})  # default: 20
                    assert len(result.data["agents"]) == min(20, count), result.content

                async def ten(toolset: Toolset = toolset) -> None:
                    result = await toolset.call("list_claude_agents", {"limit": 10})
                    assert len(result.data["agents"]) == 10, result.content

                async def filtered(toolset: Toolset = toolset) -> None:
                    result = await toolset.call(
                        "list_claude_agents", {"limit": 20, "state": "failed", "workspace": "w3"}
                    )
                    assert not result.is_error, result.content

                lat = await interleaved(
                    {"first": first_page, "ten": ten, "filtered": filtered}, self.args.n
                )
                out[str(count)] = {
                    "controller_start_s": round(start_s, 3),
                    "first_page_p50_ms": pct(lat["first"], 0.5),
                    "ten_p50_ms": pct(lat["ten"], 0.5),
                    "first_page_p99_ms": pct(lat["first"], 0.99),
                    "filtered_page_p50_ms": pct(lat["filtered"], 0.5),
                    "per_s_16_in_flight": await throughput(first_page, self.args.n, 16),
                    "rss_mb_after_start": round(rss, 1),
                }
            finally:
                await agents.aclose()
                await executor.aclose()
        big, small = out[str(self.args.runs)], out["10"]
        out["ten_p50_ratio_big_vs_10"] = ratio(big["ten_p50_ms"], small["ten_p50_ms"])
        self.results["list_history"] = out

    # --- concurrent spawns ---------------------------------------------------------------------

    async def spawns(self) -> None:
        """N concurrent spawns vs the engine creating and starting N containers, rounds
        interleaved (the machine is shared: noise hits both alike); the phase breakdown of our
        spawns says where the time goes."""
        out: dict[str, Any] = {}
        for n in self.args.spawns:
            executor, agents = await self.service(f"spawns-{n}")
            try:
                out[str(n)] = await self._spawn_rounds(n, agents)
            finally:
                await agents.aclose()
                await executor.aclose()
        self.results["spawns"] = out

    async def _spawn_rounds(self, n: int, agents: AgentService) -> dict[str, Any]:
        runtime = await agents.runtime()
        gateway = await agents.gateway()
        started = time.perf_counter()
        if gateway is not None:  # the gateway's first start is once per controller: not a burst
            await gateway.client()
        gateway_start_s = time.perf_counter() - started
        # one spawn first (image checked, executor warm), as a controller that already runs
        warm = await agents.spawn("warm", "warm", 60_000, entrypoint=["true"])
        await agents.wait(warm.id, 30_000)
        labels = {k: v for k, v in agents.labels.items() if v is not None}
        bare = [
            RunSpec(name="", image=AGENT_IMAGE, labels=labels, env={}, entrypoint=("sleep", "3"))
        ] * n
        socket = gateway is not None and gateway.host.transport == "socket"
        # on the network transport, the bare container on the internal network agents sit on:
        # what that network alone costs the engine (user-defined networks set up more at each
        # start than the bridge); on the socket transport, the bare container with no network
        bare_agent_net = []
        if gateway is not None:
            bare_agent_net = [
                replace(bare[0], network="none" if socket else gateway.host.network)
            ] * n
        # the same containers a spawn asks for: mount, limits, init, user, network, labels and
        # env, and on the socket transport the run's sockets (made by the gateway) and the
        # forwarder before the entrypoint
        same = []
        floor_runs = []
        for i in range(n):
            ws = await agents.prepare_workspace(f"e{i}")
            additions = None
            if gateway is not None:
                floor_run = f"floor-{i}-{new_agent_id()}"
                floor_runs.append(floor_run)
                image_start = await gateway.image_start(AGENT_IMAGE)
                network = await gateway.open_network(floor_run, image_start)
                plan = gateway.plan_run(
                    floor_run,
                    workspace=ws,
                    deadline=time.time() + 600,
                    max_cost_usd=None,
                    network=network,
                    image_start=image_start,
                )
                additions = plan.additions
            spec, _ = plan_launch(
                agents.settings,
                agents.redactor,
                run_id="",
                task="burst",
                workspace=ws,
                image=AGENT_IMAGE,
                timeout_ms=120_000,
                created=time.time(),
                runtime_name=runtime.name,
                entrypoint=["sleep", "3"],
                gateway=additions,
            )
            same.append(spec)

        cpu: dict[str, list[float]] = {"engine_same_spec": [], "ours": []}

        async def engine(template: list[RunSpec], what: str) -> float:
            specs = [replace(sp, name=new_agent_id()) for sp in template]
            cpu0 = time.process_time()
            start = time.perf_counter()
            await asyncio.gather(*(runtime.create(sp) for sp in specs))
            await asyncio.gather(*(runtime.start(sp.name) for sp in specs))
            took = time.perf_counter() - start
            if what in cpu:
                cpu[what].append(time.process_time() - cpu0)
            await asyncio.gather(*(runtime.remove(sp.name, force=True) for sp in specs))
            return took

        rounds: dict[str, list[float]] = {"engine_bare": [], "engine_same_spec": [], "ours": []}
        if bare_agent_net:
            rounds["engine_bare_agent_network"] = []
        # our own time on the critical path, which load noise hides in the wall-clock ratio:
        # the engine idle at the start of a burst (until the first create), and the tail after
        # the last start (until the last spawn returned)
        idle_first: list[float] = []
        tail_last: list[float] = []
        failures: list[str] = []
        paced, max_wait = 0, 0.0
        phases: list[dict[str, tuple[float, float]]] = []
        spares = None if socket else getattr(getattr(gateway, "host", None), "run_networks", None)

        async def settled() -> None:
            """A controller between bursts: its spare networks made again (the refill is
            background engine work that would otherwise land in the next round, ours or not)."""
            if spares is not None:
                async with asyncio.timeout(300):
                    await spares.filled.wait()

        for r in range(self.args.spawn_rounds):
            order = list(rounds)
            order = order[r % len(order) :] + order[: r % len(order)]
            for what in order:
                await settled()
                if what == "engine_bare":
                    rounds[what].append(await engine(bare, what))
                elif what == "engine_same_spec":
                    rounds[what].append(await engine(same, what))
                elif what == "engine_bare_agent_network":
                    rounds[what].append(await engine(bare_agent_net, what))
                else:
                    agents.launcher.phases.clear()
                    cpu0 = time.process_time()
                    start = time.perf_counter()
                    outcomes = await asyncio.gather(
                        *(
                            agents.spawn(f"burst {i}", f"b{i}", 120_000, entrypoint=["sleep", "3"])
                            for i in range(n)
                        ),
                        return_exceptions=True,
                    )
                    took = time.perf_counter() - start
                    cpu[what].append(time.process_time() - cpu0)
                    rounds[what].append(took)
                    burst = [spans for _, spans in agents.launcher.phases]
                    phases.extend(burst)
                    # phases are relative to each spawn's call; the calls began together
                    creates = [b["engine_create"][0] for b in burst if "engine_create" in b]
                    starts = [b["engine_start"][1] for b in burst if "engine_start" in b]
                    if creates and starts:
                        idle_first.append(min(creates))
                        tail_last.append(took - max(starts))
                    ok = [o for o in outcomes if not isinstance(o, BaseException)]
                    failures += [repr(o) for o in outcomes if isinstance(o, BaseException)]
                    waited = [o.spawn_wait_s for o in ok if o.spawn_wait_s]
                    paced = max(paced, len(waited))
                    max_wait = max([max_wait, *waited])
                    await asyncio.gather(*(agents.wait(o.id, 60_000) for o in ok))
                    await agents.settle()
        if gateway is not None:
            for floor_run in floor_runs:  # the floor's sockets (or networks) go
                await gateway.ended(floor_run)
        med = {k: statistics.median(v) for k, v in rounds.items()}
        return {
            "rounds": self.args.spawn_rounds,
            "seconds": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "ratio": ratio(med["ours"], med["engine_bare"]),
            "ratio_same_spec": ratio(med["ours"], med["engine_same_spec"]),
            "transport": gateway.host.transport if gateway is not None else None,
            # the bare container on the agents' network (none on the socket transport, an
            # internal network on the network transport) vs on the default bridge
            "agent_network_cost": (
                ratio(med["engine_bare_agent_network"], med["engine_bare"])
                if "engine_bare_agent_network" in med
                else None
            ),
            "ratio_range": [
                ratio(min(rounds["ours"]), max(rounds["engine_bare"])),
                ratio(max(rounds["ours"]), min(rounds["engine_bare"])),
            ],
            "gateway": gateway is not None,
            "gateway_first_start_s": round(gateway_start_s, 3),
            "spare_networks": (
                agents.settings.agent_network_spares if gateway is not None and not socket else 0
            ),
            "failures": failures[:3],
            "failed": len(failures),
            "paced_spawns": paced,
            "max_wait_s": round(max_wait, 3),
            "engine_idle_before_first_create_ms": ms_stats(idle_first),
            "after_last_start_ms": ms_stats(tail_last),
            "controller_cpu_s": {k: round(statistics.median(v), 3) for k, v in cpu.items() if v},
            "phases": phase_breakdown(phases),
        }

    # --- following many chatty agents -------------------------------------------------------

    async def follow(self) -> None:
        n, seconds = self.args.agents, self.args.seconds
        lines_each = int(seconds * 10)
        image = "agentkit-memory:bench"

        async def chatty(run: MemoryRun) -> int:
            for i in range(lines_each):
                run.emit(
                    {
                        "type": "assistant",
                        "message": {
                            "id": f"m{i}",
                            "content": [{"type": "text", "text": f"step {i} of the plan " * 3}],
                        },
                    }
                )
                await asyncio.sleep(0.1)
            run.emit({"type": "result", "subtype": "success", "is_error": False, "result": "ok"})
            return 0

        memory = MemoryRuntime(chatty, images=[image])
        settings = self.settings("follow", image=image)
        executor = SSHExecutor(settings)
        await executor.connect()
        agents = AgentService(executor, settings, runtime=memory)
        try:
            await agents.start()
            rss_before = rss_mb()
            spawned = await asyncio.gather(
                *(agents.spawn(f"chatty {i}", f"c{i}", 600_000) for i in range(n))
            )
            await asyncio.sleep(2.0)  # everyone is printing
            cpu0, wall0 = time.process_time(), time.perf_counter()
            peak = rss_mb()
            while time.perf_counter() - wall0 < seconds - 4:
                await asyncio.sleep(0.5)
                peak = max(peak, rss_mb())
            cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            finals = await asyncio.gather(*(agents.wait(s.id, 120_000) for s in spawned))
            await agents.settle()
            missing = 0
            for s in spawned:
                raw = await agents.store.read_output(s.id)
                missing += lines_each + 1 - len(raw.splitlines())
            self.results["follow_memory_runtime"] = {
                "agents": n,
                "lines_per_agent": lines_each + 1,
                "controller_cpu_cores": round(cpu, 3),
                "controller_rss_mb_before": round(rss_before, 1),
                "controller_rss_mb_peak": round(peak, 1),
                "max_rss_mb_process": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
                "succeeded": sum(1 for f in finals if f.status.state == AgentState.SUCCEEDED),
                "lines_missing_in_records": missing,
            }
        finally:
            await agents.aclose()
            await executor.aclose()
            await memory.aclose()
        if self.args.real_agents:
            await self.follow_real()

    async def follow_real(self) -> None:
        n, seconds = self.args.real_agents, self.args.seconds
        executor, agents = await self.service("follow-real")
        lines_each = int(seconds * 10)
        try:
            env = {"N": str(lines_each), "DELAY": "0.1"}
            spawned = await asyncio.gather(
                *(
                    agents.spawn(
                        f"chatty {i}",
                        f"r{i}",
                        600_000,
                        entrypoint=["sh", "-c", CHATTY],
                        extra_env=env,
                    )
                    for i in range(n)
                )
            )
            await asyncio.sleep(3.0)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            peak = rss_mb()
            while time.perf_counter() - wall0 < seconds - 6:
                await asyncio.sleep(0.5)
                peak = max(peak, rss_mb())
            cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            await asyncio.gather(*(agents.wait(s.id, 180_000) for s in spawned))
            await agents.settle()
            missing = 0
            for s in spawned:
                raw = await agents.store.read_output(s.id)
                missing += lines_each + 1 - len(raw.splitlines())
            self.results["follow_real_containers"] = {
                "agents": n,
                "lines_per_agent": lines_each + 1,
                "controller_cpu_cores": round(cpu, 3),
                "controller_rss_mb_peak": round(peak, 1),
                "lines_missing_in_records": missing,
            }
        finally:
            await agents.aclose()
            await executor.aclose()

    # --- a large workspace ----------------------------------------------------------------------

    async def workspace(self) -> None:
        executor, agents = await self.service("workspace")
        try:
            big = Path(agents.settings.workspaces_root) / "big"
            make_tree(big, self.args.files)
            (Path(agents.settings.workspaces_root) / "empty").mkdir(parents=True)
            os.chown(Path(agents.settings.workspaces_root) / "empty", 1001, 1001)
            times: dict[str, list[float]] = {"big": [], "empty": []}
            await agents.spawn("warm", "empty", 60_000, entrypoint=["true"])
            for _ in range(self.args.workspace_rounds):
                for name in ("empty", "big"):
                    start = time.perf_counter()
                    st = await agents.spawn("x", name, 60_000, entrypoint=["true"])
                    times[name].append((time.perf_counter() - start) * 1000)
                    await agents.wait(st.id, 30_000)
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec("chown", "-R", "-h", "1001:1001", str(big))
            await proc.wait()
            chown_ms = (time.perf_counter() - start) * 1000
            big_p50, empty_p50 = statistics.median(times["big"]), statistics.median(times["empty"])
            self.results["workspace"] = {
                "files": self.args.files,
                "spawn_p50_ms_big": round(big_p50, 1),
                "spawn_p50_ms_empty": round(empty_p50, 1),
                "ratio_big_vs_empty": ratio(big_p50, empty_p50),
                "old_chown_R_of_the_tree_alone_ms": round(chown_ms, 1),
            }
        finally:
            await agents.aclose()
            await executor.aclose()


def ms_stats(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = [x * 1000 for x in seconds]
    return {
        "p50": round(statistics.median(ms), 1),
        "min": round(min(ms), 1),
        "max": round(max(ms), 1),
    }


def phase_breakdown(spans: list[dict[str, tuple[float, float]]]) -> dict[str, dict[str, float]]:
    """Per phase over all spawns: p50 and max of its duration and of when it ended (ms after
    the spawn was called), in the order phases end."""
    names: dict[str, list[tuple[float, float]]] = {}
    for one in spans:
        for name, (start, end) in one.items():
            names.setdefault(name, []).append((start, end))
    out = {}
    for name, pairs in names.items():
        took = [(e - s) * 1000 for s, e in pairs]
        ends = [e * 1000 for _, e in pairs]
        out[name] = {
            "p50_ms": round(statistics.median(took), 1),
            "max_ms": round(max(took), 1),
            "ends_p50_ms": round(statistics.median(ends), 1),
        }
    return dict(sorted(out.items(), key=lambda kv: kv[1]["ends_p50_ms"]))


def write_history(runs: Path, count: int) -> None:
    """``count`` finished runs as a controller leaves them: a record directory each + index."""
    runs.mkdir(parents=True, exist_ok=True)
    base_ms = int(time.time() * 1000) - count * 60_000
    states = ["succeeded", "succeeded", "failed", "stopped", "timed_out"]
    with (runs / "index.jsonl").open("w") as index:
        for i in range(count):
            run_id = f"claude-agent-{base_ms + i * 60_000:013d}-{i % 1_000_000:06d}"
            record = {
                "id": run_id,
                "state": states[i % len(states)],
                "created": (base_ms + i * 60_000) / 1000,
                "finished_at": (base_ms + i * 60_000) / 1000 + 30,
                "workspace": f"/opt/agentflow/workspaces/w{i % 7}",
                "task": f"task number {i}: refactor the module and add tests " * 3,
                "turns": 7,
                "cost_usd": 0.0421,
                "result_text": "Done. " * 40,
                "exit_code": 0,
            }
            line = json.dumps(record) + "\n"
            index.write(line)
            d = runs / run_id
            d.mkdir()
            (d / "result.json").write_text(line)


def make_tree(root: Path, files: int) -> None:
    """``files`` small files in 1,000-file directories, all owned by the agent user."""
    per_dir = 1000
    for i in range(0, files, per_dir):
        d = root / f"pkg{i // per_dir:04d}"
        d.mkdir(parents=True)
        for j in range(min(per_dir, files - i)):
            (d / f"f{j}.py").write_bytes(b"x = 1\n")
    proc = os.spawnvp(os.P_WAIT, "chown", ["chown", "-R", "-h", "1001:1001", str(root)])
    assert proc == 0


def summary(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    if "requests" in r:
        q = r["requests"]
        s50, share = q["status_p50_vs_floor"], q["status_throughput_share_of_floor"]
        lines.append(
            f"status p50 {s50}x the floor (target <= 1.5: {verdict(s50 <= 1.5)}), "
            f"{share:.0%} of its throughput at 16 in flight (target >= 50%: "
            f"{verdict(share >= 0.5)}); spread over 3 agents: "
            f"{q['status_of_3_agents_throughput_share']:.0%}"
        )
        lines.append(
            f"list (8 runs) p50 {q['list_p50_vs_floor']}x one raw engine list, "
            f"{q['list_throughput_share_of_floor']:.0%} of its throughput"
        )
    if "list_history" in r:
        h = r["list_history"][str(args.runs)]
        lines.append(
            f"list first page at {args.runs} runs p50 {h['first_page_p50_ms']:.2f} ms "
            f"(target <= 2 ms: {verdict(h['first_page_p50_ms'] <= 2)}), "
            f"10 newest: {r['list_history']['ten_p50_ratio_big_vs_10']}x the same list at 10 runs; "
            f"controller start {h['controller_start_s']} s"
        )
    if "spawns" in r:
        for n, s in r["spawns"].items():
            target = f" (target <= 1.1: {verdict(s['ratio'] <= 1.1)})" if n == "20" else ""
            gw = "gateway off"
            if s["gateway"]:
                gw = f"gateway on, {s['spare_networks']} spare networks"
                if s["transport"] == "socket":
                    gw = "gateway on, socket transport"
            lines.append(
                f"{n} concurrent spawns ({gw}) {s['ratio']}x the engine alone{target}, "
                f"range {s['ratio_range'][0]}-{s['ratio_range'][1]} over {s['rounds']} rounds; "
                f"{s['ratio_same_spec']}x the engine creating the same spec (mount, limits, "
                f"network); {s['failed']} failures, {s['paced_spawns']} paced"
            )
            if s.get("agent_network_cost"):
                where = (
                    "with no network (the socket transport)"
                    if s["transport"] == "socket"
                    else "on the agents' internal network"
                )
                lines.append(
                    f"  the engine alone starts the bare containers {where} in "
                    f"{s['agent_network_cost']}x the time it takes on the default bridge"
                )
            steps = ", ".join(f"{name} {p['p50_ms']:.0f}" for name, p in s["phases"].items())
            lines.append(f"  phases, p50 ms each: {steps}")
            idle, tail = s["engine_idle_before_first_create_ms"], s["after_last_start_ms"]
            cpu = s["controller_cpu_s"]
            lines.append(
                f"  ours on the critical path: engine idle until the first create "
                f"{idle.get('p50')} ms, last start to last return {tail.get('p50')} ms (p50); "
                f"controller CPU {cpu.get('ours')} s per burst vs {cpu.get('engine_same_spec')} "
                "s driving the engine alone"
            )
    if "follow_memory_runtime" in r:
        f = r["follow_memory_runtime"]
        ok = f["controller_cpu_cores"] <= 1 and f["controller_rss_mb_peak"] <= 300
        lines.append(
            f"{f['agents']} chatty agents: controller {f['controller_cpu_cores']} cores, "
            f"{f['controller_rss_mb_peak']} MB RSS (target <= 1 core, <= 300 MB: "
            f"{verdict(ok)}), {f['lines_missing_in_records']} lines missing in records"
        )
    if "follow_real_containers" in r:
        f = r["follow_real_containers"]
        lines.append(
            f"{f['agents']} real chatty containers: controller {f['controller_cpu_cores']} "
            f"cores, {f['controller_rss_mb_peak']} MB, {f['lines_missing_in_records']} missing"
        )
    if "workspace" in r:
        w = r["workspace"]
        lines.append(
            f"spawn on {w['files']} files {w['ratio_big_vs_empty']}x an empty workspace "
            f"(target <= 1.2: {verdict(w['ratio_big_vs_empty'] <= 1.2)}); chown -R of the "
            f"tree alone {w['old_chown_R_of_the_tree_alone_ms']:.0f} ms"
        )
    return lines


SECTIONS = ("requests", "list", "spawns", "follow", "workspace")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="samples per latency measurement")
    parser.add_argument("--runs", type=int, default=10_000, help="recorded runs for list")
    parser.add_argument("--spawns", default="20,100", help="concurrent spawn counts")
    parser.add_argument("--agents", type=int, default=200, help="followed chatty agents")
    parser.add_argument("--seconds", type=float, default=20, help="how long they chat")
    parser.add_argument("--real-agents", type=int, default=20, help="real chatty containers")
    parser.add_argument("--files", type=int, default=100_000, help="files in the big workspace")
    parser.add_argument("--workspace-rounds", type=int, default=7)
    parser.add_argument("--spawn-rounds", type=int, default=3, help="bursts of each size")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    args = parser.parse_args()
    args.spawns = [int(x) for x in args.spawns.split(",") if x]
    if not sshd_available():
        sys.exit("needs /usr/sbin/sshd (apt install openssh-server)")
    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-scale-"))
    server = start_sshd(tmp / "sshd")
    bench = Bench(args, server, tmp)
    wanted = set(args.only.split(","))
    try:
        if "requests" in wanted:
            await bench.requests()
        if "list" in wanted:
            await bench.list_history()
        if "spawns" in wanted:
            await bench.spawns()
        if "follow" in wanted:
            await bench.follow()
        if "workspace" in wanted:
            await bench.workspace()
    finally:
        server.stop()
        for root in bench.roots:
            try:
                await remove_containers_of_root(root)
            except Exception as exc:  # never hide what went wrong in a section
                print(f"cleanup of {root} failed: {exc!r}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(bench.results, indent=2, default=float))
    print()
    for line in summary(bench.results, args):
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
