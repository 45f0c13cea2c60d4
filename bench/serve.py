"""``agentkit serve`` benchmark: HTTP overhead, 100 SSE subscribers on one agent, server memory.

    .venv/bin/python bench/serve.py [--n 300] [--subscribers 100] [--lines 300]

Needs dockerd and the base image (``agentkit-base:bookworm``): the agents are stand-ins that
print stream-json lines (the mechanics without the Claude Code CLI's cost). The server is a
real ``agentkit serve`` process on 127.0.0.1; the bench process spawns the agents and is the
HTTP client.

Measures (one run, side by side; never timed assertions in tests):

* ``GET /v1/agents/{id}`` p50 against the in-process ``AgentService.status`` of the same running
  agent, and against ``GET /healthz`` (the HTTP floor: no engine call): target overhead
  <= 1 ms p50;
* N concurrent ``/v1/agents/{id}/events`` subscribers on one agent printing ``--lines`` lines:
  every subscriber must receive every event exactly once, in order (target: none lost);
* the server's resident memory idle and with the N subscribers open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from httpx_sse import aconnect_sse

from agentkit.config import Settings
from agentkit.connect import connect
from agentkit.containers.live import NOTICE_INDEX
from agentkit.serve import create_app
from bench._sampling import pct
from tests.containers_support import BASE_IMAGE, remove_containers_of_root

# waits for the subscribers (a file appears), then prints N stream-json lines
CHATTY = (
    'while [ ! -e /workspace/go ]; do sleep 0.05; done; i=0; while [ "$i" -lt "$N" ]; do '
    'printf \'{"type":"assistant","message":{"id":"m%s","content":[{"type":"text",'
    '"text":"step %s of the plan, with some words to make the line realistic"}]}}\\n\' "$i" "$i"; '
    'i=$((i+1)); sleep "$DELAY"; done; '
    'printf \'{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
    '"total_cost_usd":0.001,"session_id":"bench","result":"done"}\\n\''
)


async def interleaved(
    fns: list[Callable[[], Awaitable[object]]], n: int, warmup: int = 10
) -> list[list[float]]:
    """Milliseconds per call of each of ``fns``, called in turn ``n`` times after a warmup."""
    out: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + n):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            await fn()
            if round_ >= warmup:
                out[index].append((time.perf_counter() - start) * 1000)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc, clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_ms_per_call(
    fn: Callable[[], Awaitable[object]], n: int, pid: int | None = None
) -> float:
    """CPU milliseconds per call of ``fn``: of process ``pid`` (the server), or of this one.

    CPU time does not grow when other processes hold the cores, so it shows the work itself on a
    busy machine, where wall-clock latency mostly shows the queue for a core.
    """
    start = cpu_seconds(pid) if pid else time.process_time()
    for _ in range(n):
        await fn()
    end = cpu_seconds(pid) if pid else time.process_time()
    return (end - start) * 1000 / n


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(root: str, token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTKIT_", "ANTHROPIC_"))}
    env.update(AGENTKIT_ROOT=root, AGENTKIT_API_TOKEN=token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentkit.cli.main", "serve", "--port", str(port)],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                sys.exit("agentkit serve exited at start")
            await asyncio.sleep(0.05)
    sys.exit("agentkit serve did not start")


async def subscriber(client: httpx.AsyncClient, path: str, ready: asyncio.Event) -> list[str]:
    ids: list[str] = []
    async with aconnect_sse(client, "GET", path) as source:
        source.response.raise_for_status()
        ready.set()
        async for sse in source.aiter_sse():
            if sse.event == "end":
                return ids
            if int(sse.id.split(".")[-1]) < NOTICE_INDEX:  # not agentkit's phase notices
                ids.append(sse.id)
    return ids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per latency measurement")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--lines", type=int, default=300, help="lines the watched agent prints")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-serve-"))
    root = str(tmp / "root")
    Path(root).mkdir(parents=True)
    token = secrets.token_urlsafe(32)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        host=None,
        root=root,
        image=BASE_IMAGE,
        container_network="none",
        gateway=False,  # idle `sleep` containers on no network: nothing to meter
    )
    proc, url = await start_server(root, token)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.subscribers + 10)
    results: dict[str, object] = {}
    conn_cm = connect(settings)
    conn = await conn_cm.__aenter__()
    agents = conn.agents
    try:
        env = {"N": str(args.lines), "DELAY": "0.01"}
        idle = await agents.spawn("idle", "idle", 600_000, command=["sleep", "600"])
        done = await agents.spawn("done", "done", 60_000, command=["true"])
        await agents.wait(done.id, 60_000)
        watched = await agents.spawn(
            "chatty", "chatty", 600_000, command=["sh", "-c", CHATTY], extra_env=env
        )
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=120
        ) as c:

            async def over_http() -> None:
                response = await c.get(f"/v1/agents/{idle.id}")
                assert response.status_code == 200, response.text

            async def health() -> None:
                await c.get("/healthz")

            async def in_process() -> None:
                await agents.status(idle.id)

            # the app alone, in this process, without a socket (framework + routes + JSON)
            app = create_app(settings, connection=conn, token=token)
            local = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://app", headers=headers
            )

            async def in_app() -> None:
                response = await local.get(f"/v1/agents/{idle.id}")
                assert response.status_code == 200, response.text

            await over_http()  # the server starts following the agent
            # interleaved, so all of them see the same load on a shared machine
            http_l, proc_l, floor_l, app_l = await interleaved(
                [over_http, in_process, health, in_app], args.n, warmup=30
            )
            cpu_http = await cpu_ms_per_call(over_http, args.n * 3, proc.pid)
            cpu_proc = await cpu_ms_per_call(in_process, args.n * 3)

            async def finished_http() -> None:
                assert (await c.get(f"/v1/agents/{done.id}")).status_code == 200

            async def finished_in_process() -> None:
                await agents.status(done.id)

            await finished_http()
            cpu_done_http = await cpu_ms_per_call(finished_http, args.n * 3, proc.pid)
            cpu_done_proc = await cpu_ms_per_call(finished_in_process, args.n * 3)
            results["status"] = {
                "server_cpu_ms_per_request": cpu_http,
                "in_process_cpu_ms_per_call": cpu_proc,
                "finished_server_cpu_ms_per_request": cpu_done_http,
                "finished_in_process_cpu_ms_per_call": cpu_done_proc,
                "http_p50_ms": pct(http_l, 0.5),
                "in_process_p50_ms": pct(proc_l, 0.5),
                "healthz_p50_ms": pct(floor_l, 0.5),
                "overhead_p50_ms": pct(http_l, 0.5) - pct(proc_l, 0.5),
                "app_only_p50_ms": pct(app_l, 0.5),
                "app_overhead_p50_ms": pct(app_l, 0.5) - pct(proc_l, 0.5),
            }
            rss_idle = rss_mb(proc.pid)

            readies = [asyncio.Event() for _ in range(args.subscribers)]
            path = f"/v1/agents/{watched.id}/events"
            tasks = [asyncio.create_task(subscriber(c, path, r)) for r in readies]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
            rss_open = rss_mb(proc.pid)
            started = time.perf_counter()
            Path(settings.workspaces_root, "chatty", "go").touch()  # the agent starts printing
            peak = rss_open
            while not all(t.done() for t in tasks):
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.wait(tasks, timeout=0.1)
            fan_s = time.perf_counter() - started
            got = [t.result() for t in tasks]
            expected = [f"{n}.0" for n in range(args.lines + 1)]  # N texts + the result line
            complete = sum(1 for ids in got if ids == expected)
            results["subscribers"] = {
                "count": args.subscribers,
                "events_each": len(expected),
                "complete_in_order": complete,
                "lost_or_repeated": args.subscribers - complete,
                "seconds_until_all_ended": fan_s,
            }
            results["server_rss_mb"] = {"idle": rss_idle, "with_subscribers_peak": peak}
    finally:
        await conn_cm.__aexit__(None, None, None)
        proc.terminate()
        proc.wait(30)
        await remove_containers_of_root(root)

    s = results["status"]
    sub = results["subscribers"]
    rss = results["server_rss_mb"]
    assert isinstance(s, dict)
    assert isinstance(sub, dict)
    assert isinstance(rss, dict)
    per_sub_kb = (rss["with_subscribers_peak"] - rss["idle"]) * 1024 / sub["count"]
    print("agentkit serve (one run, loopback, server in its own process)")
    print(
        f"  GET /v1/agents/{{id}} p50 {s['http_p50_ms']:.3f} ms vs in-process status "
        f"{s['in_process_p50_ms']:.3f} ms: overhead {s['overhead_p50_ms']:.3f} ms "
        f"(target <= 1 ms); HTTP floor GET /healthz {s['healthz_p50_ms']:.3f} ms; "
        f"ratio {s['http_p50_ms'] / s['in_process_p50_ms']:.2f}x"
    )
    print(
        f"  CPU per call: the server spends {s['server_cpu_ms_per_request']:.3f} ms per "
        f"GET /v1/agents/{{id}}, the in-process status {s['in_process_cpu_ms_per_call']:.3f} ms: "
        f"overhead {s['server_cpu_ms_per_request'] - s['in_process_cpu_ms_per_call']:.3f} ms "
        "(target <= 1 ms; load-independent)"
    )
    print(
        f"  a finished agent (answered from memory, no engine call): server CPU "
        f"{s['finished_server_cpu_ms_per_request']:.3f} ms per request vs in-process "
        f"{s['finished_in_process_cpu_ms_per_call']:.3f} ms: the HTTP layer's own cost"
    )
    print(
        f"  the app alone (ASGI, no socket) {s['app_only_p50_ms']:.3f} ms: framework + route "
        f"overhead {s['app_overhead_p50_ms']:.3f} ms over the in-process call"
    )
    print(
        f"  {sub['count']} SSE subscribers on one agent, {sub['events_each']} events each: "
        f"{sub['complete_in_order']} got every event once and in order, "
        f"{sub['lost_or_repeated']} lost or repeated one (target 0); "
        f"all ended {sub['seconds_until_all_ended']:.2f} s after the agent started printing"
    )
    print(
        f"  server RSS {rss['idle']:.1f} MB idle, {rss['with_subscribers_peak']:.1f} MB with "
        f"{sub['count']} subscribers ({per_sub_kb:.0f} KB each)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
