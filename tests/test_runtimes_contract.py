"""The runtime contract, one suite for every runtime: memory, Docker and Swarm (real engines).

What services rely on: create then start, inspect and list by labels, one exit stream with
neutral exit events, wait, logs apart and followed to the end, stop with grace, remove, and
images refused when missing. The Docker and Swarm runs execute the base image with a shell
script; the memory runtime's agent plays the same scenario in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from agentkit.containers.models import new_agent_id
from agentkit.errors import NotFoundError, ToolError
from agentkit.runtimes.base import (
    ExitEvent,
    ExitReason,
    Mount,
    RunSpec,
    RunState,
    Tmpfs,
    parse_memory,
)
from tests.runtimes_support import SCENARIOS, RuntimeUnderTest

pytestmark = [pytest.mark.docker]


def _spec(rt: RuntimeUnderTest, scenario: str, **kw: object) -> RunSpec:
    return RunSpec(
        name=new_agent_id(),
        image=rt.image,
        labels=rt.labels,
        env={"CONTRACT": scenario},
        command=("sh", "-c", SCENARIOS[scenario]),
        **kw,  # type: ignore[arg-type]
    )


async def _run(rt: RuntimeUnderTest, spec: RunSpec) -> str:
    await rt.runtime.create(spec)
    await rt.runtime.start(spec.name)
    return spec.name


async def _output(rt: RuntimeUnderTest, name: str, follow: bool = False) -> tuple[bytes, bytes]:
    chunks = [c async for c in rt.runtime.logs(name, follow=follow)]
    return (
        b"".join(c.data for c in chunks if c.stream == 1),
        b"".join(c.data for c in chunks if c.stream == 2),
    )


async def test_a_run_ends_with_its_exit_status_and_output_apart(
    any_runtime: RuntimeUnderTest,
) -> None:
    rt = any_runtime
    name = await _run(rt, _spec(rt, "exit7"))
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    assert (ended.run, ended.exit_code, ended.reason, ended.oom) == (
        name,
        7,
        ExitReason.EXITED,
        False,
    )
    assert await _output(rt, name) == (b"out-1\nout-2\n", b"err-1\n")
    info = await rt.runtime.inspect(name)
    assert (info.name, info.state, info.exit_code, info.running) == (
        name,
        RunState.EXITED,
        7,
        False,
    )
    assert info.labels["agentkit.root"] == rt.labels["agentkit.root"]
    assert [i.name for i in await rt.runtime.list(rt.labels)] == [name]
    # another root's labels do not see it
    assert await rt.runtime.list({**rt.labels, "agentkit.root": "/elsewhere"}) == []
    await rt.runtime.remove(name)
    with pytest.raises(NotFoundError):
        await rt.runtime.inspect(name)
    assert await rt.runtime.list(rt.labels) == []
    await rt.runtime.remove(name)  # already gone is fine


async def test_the_exit_stream_reports_each_end_once_in_neutral_words(
    any_runtime: RuntimeUnderTest,
) -> None:
    rt = any_runtime
    seen: list[ExitEvent] = []
    since = time.time() - 1.0

    async def collect() -> None:
        async with contextlib.aclosing(rt.runtime.exits(rt.labels, since=since)) as stream:
            async for event in stream:
                seen.append(event)
                if len(seen) == 2:
                    return

    ok = await _run(rt, _spec(rt, "ok"))
    bad = await _run(rt, _spec(rt, "exit7"))
    collector = asyncio.create_task(collect())  # `since` replays what ended before it listened
    await asyncio.wait_for(collector, 60)
    by_run = {e.run: e for e in seen}
    assert set(by_run) == {ok, bad}
    assert (by_run[ok].exit_code, by_run[ok].reason) == (0, ExitReason.EXITED)
    assert (by_run[bad].exit_code, by_run[bad].reason) == (7, ExitReason.EXITED)
    assert all(e.at is not None for e in seen)


async def test_followed_logs_deliver_lines_as_printed_and_end_with_the_run(
    any_runtime: RuntimeUnderTest,
) -> None:
    rt = any_runtime
    name = await _run(rt, _spec(rt, "slow", open_stdin=True))
    lines: list[bytes] = []
    first_seen_running: list[bool] = []
    async with contextlib.aclosing(rt.runtime.logs(name, follow=True)) as stream:
        async for chunk in stream:
            if chunk.stream == 1:
                lines.append(chunk.data)
                if not first_seen_running:
                    first_seen_running.append((await rt.runtime.inspect(name)).running)
                    await rt.runtime.write_stdin(name, b"go\n")  # now it may print the rest
    assert b"".join(lines) == b"first\nsecond\n"
    assert first_seen_running == [True]  # the first line arrived while the run still ran
    assert (await rt.runtime.inspect(name)).state == RunState.EXITED


async def test_stop_signals_the_run_and_it_is_reported_so(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    name = await _run(rt, _spec(rt, "forever"))
    async with contextlib.aclosing(rt.runtime.logs(name, follow=True)) as stream:
        async for chunk in stream:  # it is up once it printed
            assert chunk.data == b"up\n"
            break
    await rt.runtime.stop(name, grace=1.0)
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    assert ended.reason == ExitReason.SIGNALLED, ended
    assert not (await rt.runtime.inspect(name)).running
    await rt.runtime.stop(name)  # already ended is fine


async def test_a_memory_hog_ends_out_of_memory(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    name = await _run(rt, _spec(rt, "hog", memory_bytes=parse_memory("48m")))
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    assert (ended.reason, ended.oom) == (ExitReason.OOM, True), ended
    info = await rt.runtime.inspect(name)
    assert info.oom_killed


async def test_a_missing_image_is_refused(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    missing = "agentkit-no-such-image:contract"
    assert not await rt.runtime.image_exists(missing)
    assert await rt.runtime.image_exists(rt.image)
    with pytest.raises(ToolError, match="agentkit-no-such-image"):
        await rt.runtime.ensure_image(missing)
    await rt.runtime.ensure_image(rt.image)


async def test_a_read_only_root_leaves_only_a_bounded_tmpfs_writable(
    any_runtime: RuntimeUnderTest,
) -> None:
    """``read_only_root`` + ``tmpfs``, seen from inside the run: writing to ``/`` fails, the
    tmpfs takes a small file and refuses one beyond its size."""
    rt = any_runtime
    spec = _spec(rt, "readonly", read_only_root=True, tmpfs=(Tmpfs("/scratch", 1 << 20),))
    name = await _run(rt, spec)
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    out, err = await _output(rt, name)
    assert ended.exit_code == 0, (out, err)
    assert out.decode().split() == ["root-read-only", "scratch-ok", "scratch-full"], err
    # and without them the same script may write to its root (the check can tell)
    writable = await _run(rt, _spec(rt, "readonly", tmpfs=(Tmpfs("/scratch", 1 << 20),)))
    await asyncio.wait_for(rt.runtime.wait(writable), 60)
    out, err = await _output(rt, writable)
    assert out.decode().split()[0] == "root-writable", err


async def test_unknown_runs_are_not_found(any_runtime: RuntimeUnderTest) -> None:
    with pytest.raises(NotFoundError):
        await any_runtime.runtime.inspect(new_agent_id())


async def test_the_open_file_limit_is_the_one_the_run_sees(any_runtime: RuntimeUnderTest) -> None:
    """``RunSpec.nofile`` as the process reads it in /proc/self/limits (soft and hard)."""
    rt = any_runtime
    name = await _run(rt, _spec(rt, "nofile", nofile=(777, 1555)))
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    out, err = await _output(rt, name)
    assert ended.exit_code == 0, (out, err)
    assert out.decode().split()[3:6] == ["777", "1555", "files"], out
    # and a different limit is a different limit (not a default that happens to match)
    other = await _run(rt, _spec(rt, "nofile", nofile=(64, 64)))
    await asyncio.wait_for(rt.runtime.wait(other), 60)
    assert (await _output(rt, other))[0].decode().split()[3:5] == ["64", "64"]


async def test_runs_are_hardened_from_the_inside(
    engine_runtime: RuntimeUnderTest, tmp_path: Path
) -> None:
    """What the process itself sees: uid 1001, no privileges to gain, no capabilities, the pids
    and memory limits, and its workspace mounted (engines only: memory runs no process)."""
    rt = engine_runtime
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "marker.txt").write_text("mine")
    spec = _spec(
        rt,
        "inside",
        mounts=(Mount(str(workspace), "/workspace"),),
        memory_bytes=parse_memory("256m"),
        nano_cpus=1_000_000_000,
        pids_limit=64,
    )
    name = await _run(rt, spec)
    ended = await asyncio.wait_for(rt.runtime.wait(name), 60)
    out, err = await _output(rt, name)
    assert ended.exit_code == 0, (out, err)
    lines = out.decode().split("\n")
    assert lines[0] == "1001"
    assert "NoNewPrivs:\t1" in lines
    assert "CapEff:\t0000000000000000" in lines
    assert "64" in lines
    assert str(256 << 20) in lines
    assert "marker.txt" in lines
