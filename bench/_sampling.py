"""Sampling helpers shared by the benchmarks: latency samples, percentiles, throughput."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latencies(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 10) -> list[float]:
    """Milliseconds per call of ``fn``, ``n`` sequential calls after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def throughput(fn: Callable[[], Awaitable[object]], total: int, concurrency: int) -> float:
    """Calls per second of ``fn`` with ``concurrency`` calls in flight, ``total`` calls in all."""
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            await fn()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def interleaved(
    fns: dict[str, Callable[[], Awaitable[object]]], n: int, warmup: int = 10
) -> dict[str, list[float]]:
    """Milliseconds per call of each contender, alternated call by call in shuffled order so
    machine noise hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            await fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for _ in range(n):
        random.shuffle(order)
        for name, fn in order:
            start = time.perf_counter()
            await fn()
            out[name].append((time.perf_counter() - start) * 1000)
    return out
