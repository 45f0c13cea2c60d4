"""The runtime contract's session part, on memory, Docker and Swarm (real engines): writing to a
run's open input, copying a file out of an ended run, copying files into a created run.

Swarm reaches a task's container only through the engine of its node (here: the single-node
swarm's manager); files cannot be copied into a service before it starts (refused, clearly).
"""

from __future__ import annotations

import asyncio

import pytest

from agentkit.containers.models import new_agent_id
from agentkit.errors import ConflictError, ToolError
from agentkit.runtimes.base import RunSpec
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


async def _stdout(rt: RuntimeUnderTest, name: str) -> bytes:
    return b"".join([c.data async for c in rt.runtime.logs(name) if c.stream == 1])


async def test_lines_written_to_an_open_input_reach_the_run(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    spec = _spec(rt, "input", open_stdin=True)
    await rt.runtime.create(spec)
    await rt.runtime.start(spec.name)
    await rt.runtime.write_stdin(spec.name, b"one\n")
    await rt.runtime.write_stdin(spec.name, b"two\n")  # the same input, still open
    ended = await asyncio.wait_for(rt.runtime.wait(spec.name), 60)
    assert ended.exit_code == 0
    assert await _stdout(rt, spec.name) == b"got:one\ngot:two\n"
    with pytest.raises((ConflictError, ToolError)):
        await rt.runtime.write_stdin(spec.name, b"too late\n")


async def test_a_file_is_copied_out_of_an_ended_run_bounded(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    spec = _spec(rt, "files")
    await rt.runtime.create(spec)
    await rt.runtime.start(spec.name)
    await asyncio.wait_for(rt.runtime.wait(spec.name), 60)
    assert await rt.runtime.copy_out(spec.name, "/tmp/out.txt", max_bytes=100) == b"hello"
    assert await rt.runtime.copy_out(spec.name, "/tmp/missing.txt", max_bytes=100) is None
    assert await rt.runtime.copy_out(spec.name, "/tmp/link", max_bytes=100) is None  # no links
    with pytest.raises(ToolError, match="larger than 2 bytes"):
        await rt.runtime.copy_out(spec.name, "/tmp/out.txt", max_bytes=2)


async def test_files_are_copied_into_a_created_run(any_runtime: RuntimeUnderTest) -> None:
    rt = any_runtime
    spec = _spec(rt, "copied", user="1001:1001")
    await rt.runtime.create(spec)
    files = {"/tmp/in/x.txt": b"data"}
    if rt.kind == "swarm":  # a service starts when it is created: nothing can go in first
        with pytest.raises(ToolError, match="cannot copy files into a run"):
            await rt.runtime.copy_in(spec.name, files, owner="1001:1001")
        return
    await rt.runtime.copy_in(spec.name, files, owner="1001:1001")
    await rt.runtime.start(spec.name)
    ended = await asyncio.wait_for(rt.runtime.wait(spec.name), 60)
    assert ended.exit_code == 0
    assert await _stdout(rt, spec.name) == b"data 1001\n"
