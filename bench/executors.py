"""Executor benchmark: one run, side by side, on loopback against a private sshd.

    .venv/bin/python bench/executors.py [--n 300]

Measures (p50 / p99 in ms):

* ``SSHExecutor.run(["true"])``;
* raw asyncssh ``conn.run("true")`` on its own persistent connection;
* a fresh ``ssh`` client process per call;
* a small request/response round trip to a unix socket on the host: over
  ``SSHExecutor.open_unix_connection``, over ``forward_unix_socket``, over raw asyncssh
  ``conn.open_unix_connection`` and locally (baseline).

Targets (ratios from this one run, never timed assertions in tests): SSHExecutor within 1.2x of
raw asyncssh; >= 50x faster than a fresh ssh per call; unix round trip <= 1 ms p50.

Note: ``conn.run('true')`` runs the login shell's *builtin* ``true``; SSHExecutor ``exec``-s the
program (``/usr/bin/true``), like LocalExecutor does, so raw ``conn.run('exec true')`` is printed
too: it does the same remote work and isolates the executor's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh

from agentkit.executors import LocalExecutor, SSHExecutor
from bench._sampling import latencies, pct
from tests.sshd import SSHServer, sshd_available, start_sshd


async def interleaved(
    fns: dict[str, Callable[[], Awaitable[object]]], n: int, warmup: int = 10
) -> dict[str, list[float]]:
    """Alternate the contenders call by call so machine noise hits them equally."""
    for fn in fns.values():
        for _ in range(warmup):
            await fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for _ in range(n):
        random.shuffle(order)  # no contender always runs right after another
        for name, fn in order:
            start = time.perf_counter()
            await fn()
            out[name].append((time.perf_counter() - start) * 1000)
    return out


async def echo_server(path: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path)


def round_trip(
    reader: asyncio.StreamReader | asyncssh.SSHReader[bytes],
    writer: asyncio.StreamWriter | asyncssh.SSHWriter[bytes],
) -> Callable[[], Awaitable[object]]:
    payload = b'{"ping": "small request"}\n'

    async def once() -> None:
        writer.write(payload)
        line = await reader.readline()
        assert line == payload

    return once


def own(ex: SSHExecutor) -> asyncssh.SSHClientConnection:
    """The executor's live connection (to measure its overhead on the very same sshd process)."""
    assert ex._conn is not None
    return ex._conn


async def main(server: SSHServer, n: int) -> None:
    settings = server.settings()
    results: dict[str, list[float]] = {}
    tmp = tempfile.mkdtemp(prefix="agentkit-bench-")
    sock = os.path.join(tmp, "echo.sock")
    echo = await echo_server(sock)

    raw = await asyncssh.connect(
        server.host,
        server.port,
        username=server.user,
        client_keys=[str(server.client_key)],
        known_hosts=str(server.known_hosts),
        config=None,
    )
    await raw.run("true")
    async with SSHExecutor(settings) as ex:
        results.update(
            await interleaved(
                {
                    "SSHExecutor.run(['true'])": lambda: ex.run(["true"]),
                    "raw asyncssh conn.run('true')": lambda: raw.run("true"),
                    "raw asyncssh conn.run('exec true')": lambda: raw.run("exec true"),
                    "raw asyncssh 'exec true', executor's conn": lambda: own(ex).run("exec true"),
                },
                n,
            )
        )
        results["SSHExecutor.run(['true'], env=...)"] = await latencies(
            lambda: ex.run(["true"], env={"TOKEN": "secret"}), n // 2, warmup=5
        )

        ssh_argv = [
            "ssh",
            "-q",
            "-i", str(server.client_key),
            "-o", f"UserKnownHostsFile={server.known_hosts}",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-p", str(server.port),
            f"{server.user}@{server.host}",
            "true",
        ]  # fmt: skip

        async def fresh_ssh() -> None:
            proc = await asyncio.create_subprocess_exec(*ssh_argv, stdin=asyncio.subprocess.DEVNULL)
            assert await proc.wait() == 0

        results["fresh `ssh` process per call"] = await latencies(fresh_ssh, max(10, n // 15), 2)

        conn = await ex.open_unix_connection(sock)
        results["unix RTT: SSHExecutor.open_unix_connection"] = await latencies(
            round_trip(conn.reader, conn.writer), n * 3, warmup=5
        )
        await conn.aclose()
        local_path = await ex.forward_unix_socket(sock)
        fr, fw = await asyncio.open_unix_connection(local_path)
        results["unix RTT: SSHExecutor.forward_unix_socket"] = await latencies(
            round_trip(fr, fw), n * 3, warmup=5
        )
        fw.close()
        rr, rw = await raw.open_unix_connection(sock)
        results["unix RTT: raw asyncssh open_unix_connection"] = await latencies(
            round_trip(rr, rw), n * 3, warmup=5
        )
        rw.close()
        async with LocalExecutor() as local:
            lc = await local.open_unix_connection(sock)
            results["unix RTT: LocalExecutor (no SSH)"] = await latencies(
                round_trip(lc.reader, lc.writer), n * 3, warmup=5
            )
            await lc.aclose()
    raw.close()
    echo.close()

    width = max(len(k) for k in results)
    print(f"\n{'measurement':<{width}}  {'n':>5}  {'p50 ms':>8}  {'p99 ms':>8}")
    print("-" * (width + 29))
    for name, samples in results.items():
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        print(f"{name:<{width}}  {len(samples):>5}  {p50:>8.3f}  {p99:>8.3f}")

    ex50 = statistics.median(results["SSHExecutor.run(['true'])"])
    raw50 = statistics.median(results["raw asyncssh conn.run('true')"])
    rawexec50 = statistics.median(results["raw asyncssh conn.run('exec true')"])
    fresh50 = statistics.median(results["fresh `ssh` process per call"])
    unix50 = statistics.median(results["unix RTT: SSHExecutor.open_unix_connection"])
    fwd50 = statistics.median(results["unix RTT: SSHExecutor.forward_unix_socket"])
    print()
    checks = [
        (f"SSHExecutor / raw asyncssh = {ex50 / raw50:.2f}x", ex50 / raw50 <= 1.2, "<= 1.2x"),
        (
            f"SSHExecutor / raw asyncssh 'exec true' (same remote work) = {ex50 / rawexec50:.2f}x",
            ex50 / rawexec50 <= 1.2,
            "<= 1.2x",
        ),
        (f"fresh ssh / SSHExecutor = {fresh50 / ex50:.1f}x", fresh50 / ex50 >= 50, ">= 50x"),
        (f"unix RTT open_unix_connection p50 = {unix50:.3f} ms", unix50 <= 1.0, "<= 1 ms"),
        (f"unix RTT forward_unix_socket p50 = {fwd50:.3f} ms", fwd50 <= 1.0, "<= 1 ms"),
    ]
    for text, ok, target in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}  (target {target})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="samples per measurement")
    args = parser.parse_args()
    if not sshd_available():
        sys.exit("needs /usr/sbin/sshd and ssh-keygen (apt install openssh-server)")
    srv = start_sshd()
    try:
        asyncio.run(main(srv, args.n))
    finally:
        srv.stop()
