"""History at scale: the run index, pages and filters, retention, pacing, no lost lines, ownership.

Real records (a LocalExecutor on a temporary root), the real service; only the agent process
is a coroutine (``MemoryRuntime``). Speed is measured in ``bench/scale.py``, never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.containers import AgentService, AgentState
from agentkit.containers.retention import Retention, prune_runs
from agentkit.errors import ConfigError, PermissionDeniedError, ToolError
from agentkit.executors.local import LocalExecutor
from agentkit.runtimes.base import RunSpec
from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
from agentkit.tools.base import ToolContext
from agentkit.tools.containers import container_tools
from agentkit.tools.toolset import Toolset
from tests.support import require

IMAGE = "agentkit-memory:test"
KEY = "sk-ant-scale-" + secrets.token_hex(8)
RELEASE = asyncio.Event()


async def scripted(run: MemoryRun) -> int:
    """The task says what to do: ``ok``, ``fail``, ``hold`` (until RELEASE), ``chatty:N``."""
    task = run.task_text
    if task.startswith("chatty:"):
        for i in range(int(task.split(":")[1])):
            run.emit({"type": "assistant", "message": {"id": f"m{i}", "content": [
                {"type": "text", "text": f"line {i:06d}"}]}})  # fmt: skip
            if i % 50 == 0:
                await asyncio.sleep(0)  # bursts of 50 lines, then let the follower run
    if task == "hold":
        await RELEASE.wait()
    if task == "fail":
        return 3
    run.emit({"type": "result", "subtype": "success", "is_error": False, "result": task})
    return 0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=str(tmp_path / "root"),
        image=IMAGE,
        anthropic_api_key=KEY,
    )


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[MemoryRuntime]:
    global RELEASE
    RELEASE = asyncio.Event()  # one per test (an event belongs to one loop)
    runtime = MemoryRuntime(scripted, images=[IMAGE])
    yield runtime
    await runtime.aclose()


async def _finish(agents: AgentService, task: str, workspace: str) -> str:
    spawned = await agents.spawn(task, workspace, 60_000)
    assert not (await agents.wait(spawned.id, 10_000)).timed_out
    return spawned.id


async def _history(agents: AgentService) -> tuple[list[str], str]:
    """Nine finished runs in three workspaces (every third failed) and one running."""
    ids = [await _finish(agents, "fail" if i % 3 == 2 else "ok", f"ws{i % 3}") for i in range(9)]
    running = await agents.spawn("hold", "ws-live", 60_000)
    await agents.settle()
    return ids, running.id


async def test_pages_walk_all_runs_newest_first_with_a_cursor(
    settings: Settings, memory: MemoryRuntime
) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids, running = await _history(agents)
        everything = [a.id for a in await agents.list()]
        assert everything == sorted([*ids, running], reverse=True)  # newest first
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await agents.page(limit=4, cursor=cursor)
            assert len(page.agents) <= 4
            seen += [a.id for a in page.agents]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == everything  # no run twice, none missing, same order
        assert pages == 3
        assert (await agents.page(limit=10)).next_cursor is None  # exactly all: no next page
        RELEASE.set()


async def test_filters_by_state_workspace_and_since(
    settings: Settings, memory: MemoryRuntime
) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids, running = await _history(agents)
        failed = [a.id for a in await agents.list(state="failed")]
        assert failed == sorted(ids[2::3], reverse=True)
        assert [a.id for a in await agents.list(state="running")] == [running]
        finished = await agents.list(state="finished")
        assert sorted(a.id for a in finished) == sorted(ids)
        ws1 = await agents.list(workspace="ws1")
        assert [a.id for a in ws1] == sorted(ids[1::3], reverse=True)
        by_path = await agents.list(workspace=f"{settings.workspaces_root}/ws1")
        assert [a.id for a in by_path] == [a.id for a in ws1]
        assert await agents.list(since="2999-01-01T00:00:00Z") == []
        assert len(await agents.list(since="1h")) == 10
        # filters and the cursor combine: page through the succeeded runs two at a time
        first = await agents.page(state="succeeded", limit=2)
        second = await agents.page(state="succeeded", limit=2, cursor=first.next_cursor)
        assert all(a.state == AgentState.SUCCEEDED for a in first.agents + second.agents)
        assert [a.id for a in first.agents + second.agents] == sorted(
            [i for n, i in enumerate(ids) if n % 3 != 2], reverse=True
        )[:4]
        with pytest.raises(ToolError, match="not one of"):
            await agents.list(state="exploded")
        with pytest.raises(ToolError, match="next_cursor"):
            await agents.page(cursor="../../etc")
        with pytest.raises(ToolError, match="ISO 8601"):
            await agents.list(since="yesterday-ish")
        RELEASE.set()


async def test_the_tool_pages_and_stays_compatible(
    settings: Settings, memory: MemoryRuntime
) -> None:
    RELEASE.set()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids = [await _finish(agents, "ok", "ws") for _ in range(5)]
        await agents.settle()
        toolset = Toolset(container_tools(), context=ToolContext(settings=settings, agents=agents))
        plain = await toolset.call("list_claude_agents", {})  # the old call still works
        assert not plain.is_error, plain.content
        assert [a["id"] for a in plain.data["agents"]] == sorted(ids, reverse=True)
        assert plain.data["next_cursor"] is None
        paged = await toolset.call("list_claude_agents", {"limit": 2, "state": "succeeded"})
        assert [a["id"] for a in paged.data["agents"]] == sorted(ids, reverse=True)[:2]
        assert paged.data["next_cursor"] in paged.content  # the model is told how to go on
        nxt = await toolset.call(
            "list_claude_agents", {"limit": 2, "cursor": paged.data["next_cursor"]}
        )
        assert [a["id"] for a in nxt.data["agents"]] == sorted(ids, reverse=True)[2:4]
        bad = await toolset.call("list_claude_agents", {"state": "exploded", "limit": 0})
        assert bad.is_error
        assert "state" in bad.content
        assert "limit" in bad.content
        none = await toolset.call("list_claude_agents", {"workspace": "elsewhere"})
        assert none.content == "No agents match."


async def test_the_index_survives_restart_and_compaction(
    settings: Settings, memory: MemoryRuntime
) -> None:
    RELEASE.set()
    index_file = Path(settings.runs_root) / "index.jsonl"
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids = [await _finish(agents, "ok", "ws") for _ in range(6)]
        await agents.settle()
        before = [a.to_dict() for a in await agents.list()]
        # two more lines for one run (a rewrite) and garbage: the file now has dead lines
        with index_file.open("a") as fh:
            fh.write(json.dumps({**before[0], "cost_usd": 9.5}) + "\n")
            fh.write("{not json\n")
    async with AgentService(LocalExecutor(), settings, runtime=memory) as again:
        listed = await again.list()
        assert [a.id for a in listed] == sorted(ids, reverse=True)
        assert listed[0].cost_usd == 9.5  # a later line for an id wins
        dropped = await again.registry.index.compact()
        assert dropped >= 2
        lines = index_file.read_bytes().splitlines()
        assert len(lines) == 6
        assert {json.loads(line)["id"] for line in lines} == set(ids)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as third:
        assert [a.to_dict()["id"] for a in await third.list()] == sorted(ids, reverse=True)
        assert (await third.list())[0].cost_usd == 9.5


async def test_runs_another_controller_finishes_appear_without_rereading_history(
    settings: Settings, memory: MemoryRuntime
) -> None:
    RELEASE.set()
    async with (
        AgentService(LocalExecutor(), settings, runtime=memory) as one,
        AgentService(LocalExecutor(), settings, runtime=memory) as other,
    ):
        mine = await _finish(one, "ok", "ws")
        await one.settle()
        assert [a.id for a in await one.list(state="finished")] == [mine]
        theirs = await _finish(other, "ok", "ws")
        await other.settle()
        await one.registry.index.refresh(force=True)  # what list does every few seconds
        assert [a.id for a in await one.list(state="finished")] == [theirs, mine]
        # another controller compacting the file (it shrinks) is noticed too
        await other.registry.index.compact()
        await one.registry.index.refresh(force=True)
        assert [a.id for a in await one.list(state="finished")] == [theirs, mine]


async def test_retention_prunes_what_it_should_and_never_a_running_agent(
    settings: Settings, memory: MemoryRuntime
) -> None:
    runs = Path(settings.runs_root)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids = [await _finish(agents, "ok", "ws") for _ in range(6)]
        running = (await agents.spawn("hold", "ws", 60_000)).id
        await agents.settle()
        # a bad line claims the running agent finished: retention must still keep its record
        with (runs / "index.jsonl").open("a") as fh:
            fh.write(json.dumps({"id": running, "state": "succeeded", "created": 1.0}) + "\n")
        await agents.registry.index.refresh(force=True)
        dry = await agents.prune("3", dry_run=True)
        assert dry.dry_run
        # the 3 newest "finished" runs include the running one (by the bad line): 4 go, not 5
        assert sorted(dry.pruned) == sorted(ids[:4])
        assert running not in dry.pruned
        assert all((runs / i).is_dir() for i in ids)  # a dry run removes nothing
        report = await agents.prune("3")
        assert sorted(report.pruned) == sorted(ids[:4])
        assert report.bytes_freed > 0
        assert not any((runs / i).exists() for i in ids[:4])
        assert (runs / running / "meta.json").is_file()  # the running agent's record stays
        assert all((runs / i / "output.jsonl").is_file() for i in ids[4:])
        listed = [a.id for a in await agents.list()]
        assert set(listed) == {*ids[4:], running}
        # by age: an hour from now every finished record is older than 30 minutes
        aged = await prune_runs(
            Retention.parse("30m") or Retention(),
            store=agents.store,
            registry=agents.registry,
            runtime=await agents.runtime(),
            labels=agents.labels,
            now=time.time() + 3600,
        )
        assert sorted(aged.pruned) == sorted(ids[4:])
        assert running in aged.skipped_live  # the bad line made it a candidate: still kept
        assert sorted(os.listdir(runs)) == sorted(["index.jsonl", running])
        RELEASE.set()
        assert (await agents.wait(running, 10_000)).status.state == AgentState.SUCCEEDED
        await agents.settle()
    # the pruned runs stay gone after a restart (the index file says so)
    async with AgentService(LocalExecutor(), settings, runtime=memory) as again:
        assert [a.id for a in await again.list()] == [running]


async def test_retention_runs_in_the_background_when_configured(
    settings: Settings, memory: MemoryRuntime
) -> None:
    RELEASE.set()
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        ids = [await _finish(agents, "ok", "ws") for _ in range(4)]
        await agents.settle()
    keep2 = settings.model_copy(update={"run_retention": "2"})
    async with AgentService(LocalExecutor(), keep2, runtime=memory) as agents:
        await agents.start()
        assert agents._retention_task is not None
        async with asyncio.timeout(10):
            while len(agents.registry.index) > 2:  # the first prune runs at start
                await asyncio.sleep(0.01)
        assert [a.id for a in await agents.list()] == sorted(ids, reverse=True)[:2]
        assert not (Path(settings.runs_root) / ids[0]).exists()


def test_retention_setting_is_parsed_or_refused() -> None:
    assert Retention.parse("30d,5000") == Retention(max_age_s=30 * 86400, max_count=5000)
    assert Retention.parse("12h") == Retention(max_age_s=12 * 3600)
    assert Retention.parse("100") == Retention(max_count=100)
    assert Retention.parse("") is None
    with pytest.raises(ConfigError, match="AGENTKIT_RUN_RETENTION"):
        Retention.parse("30 days")


async def test_no_line_is_lost_at_a_high_rate(settings: Settings, memory: MemoryRuntime) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        spawned = [await agents.spawn("chatty:3000", f"w{i}", 60_000) for i in range(20)]
        for s in spawned:
            assert (await agents.wait(s.id, 30_000)).status.state == AgentState.SUCCEEDED
        await agents.settle()
        for s in spawned:
            raw = (Path(settings.runs_root) / s.id / "output.jsonl").read_bytes()
            texts = [
                json.loads(line)["message"]["content"][0]["text"]
                for line in raw.splitlines()
                if b'"assistant"' in line
            ]
            assert texts == [f"line {i:06d}" for i in range(3000)]


class HeldStarts(MemoryRuntime):
    """The memory runtime as a busy engine: every start waits for :attr:`release`; it counts
    the runs between their create and the end of their start (the engine work a slot covers)."""

    def __init__(self) -> None:
        super().__init__(scripted, images=[IMAGE])
        self.release = asyncio.Event()
        self.in_engine: set[str] = set()
        self.most_in_engine = 0
        self.created: list[str] = []
        self.record_before_start: dict[str, bool] = {}
        self.runs_root = ""
        self.changed = asyncio.Event()

    def _note(self) -> None:
        self.most_in_engine = max(self.most_in_engine, len(self.in_engine))
        self.changed.set()

    async def create(self, spec: RunSpec) -> str:
        self.in_engine.add(spec.name)
        self.created.append(spec.name)
        self._note()
        return await super().create(spec)

    async def start(self, name: str) -> None:
        record = Path(self.runs_root) / name
        self.record_before_start[name] = (record / "meta.json").is_file() and (
            record / "task.txt"
        ).is_file()
        await self.release.wait()
        try:
            await super().start(name)
        finally:
            self.in_engine.discard(name)
            self._note()


async def _until(runtime: HeldStarts, condition: Callable[[], bool]) -> None:
    """Wait (event-driven, bounded) until ``condition`` holds after a runtime change."""
    async with asyncio.timeout(20):
        while not condition():
            runtime.changed.clear()
            with contextlib.suppress(TimeoutError):
                # host-side preparation (subprocesses) does not signal the runtime: re-check
                await asyncio.wait_for(runtime.changed.wait(), 0.05)


async def test_spawn_bursts_are_paced_and_the_wait_is_shown(settings: Settings) -> None:
    RELEASE.set()
    runtime = HeldStarts()
    runtime.runs_root = settings.runs_root
    paced = settings.model_copy(update={"spawn_concurrency": 2})
    async with AgentService(LocalExecutor(), paced, runtime=runtime) as agents:
        toolset = Toolset(container_tools(), context=ToolContext(settings=paced, agents=agents))
        calls = [
            asyncio.create_task(
                toolset.call("spawn_claude_agent", {"task": "ok", "workspace_path": f"p{i}"})
            )
            for i in range(6)
        ]
        runs = Path(settings.runs_root)
        # two runs hold the engine; the other four prepared their workspace and wrote their
        # record meanwhile, and wait for a slot without touching the engine
        await _until(
            runtime,
            lambda: (
                len(runtime.in_engine) == 2
                and len(list(runs.glob("claude-agent-*/meta.json"))) == 6
            ),
        )
        assert len(runtime.created) == 2
        assert all((Path(settings.workspaces_root) / f"p{i}").is_dir() for i in range(6))
        runtime.release.set()
        results = await asyncio.gather(*calls)
        assert not any(r.is_error for r in results), [r.content for r in results]
        assert runtime.most_in_engine == 2  # never more than AGENTKIT_SPAWN_CONCURRENCY
        assert all(runtime.record_before_start.values())  # a run starts only once recorded
        waited = [r for r in results if "spawn_wait_s" in r.data]
        assert len(waited) == 4  # two start at once, the others wait their turn
        for r in waited:
            assert r.data["spawn_wait_s"] > 0
            assert "waited" in r.content
            assert "AGENTKIT_SPAWN_CONCURRENCY" in r.content
        for r in results:
            assert (await agents.wait(r.data["id"], 10_000)).status.state == AgentState.SUCCEEDED
        alone = await toolset.call("spawn_claude_agent", {"task": "ok", "workspace_path": "p9"})
        assert "spawn_wait_s" not in alone.data  # nobody ahead: no wait reported
        assert "waited" not in alone.content
        phases = dict(agents.launcher.phases)[alone.data["id"]]
        assert {"workspace", "record", "slot_wait", "engine_create", "engine_start"} <= set(phases)
        # the workspace is ready before the run is created, the record before it starts
        assert phases["workspace"][1] <= phases["engine_create"][0]
        assert phases["record"][1] <= phases["engine_start"][0]


async def test_a_burst_in_one_workspace_starts_every_run(settings: Settings) -> None:
    """Concurrent spawns in one workspace behave as one at a time did: each is prepared
    (the workspace created once, handed over) and started; none fails or is refused."""
    RELEASE.set()
    runtime = HeldStarts()
    runtime.runs_root = settings.runs_root
    runtime.release.set()
    async with AgentService(LocalExecutor(), settings, runtime=runtime) as agents:
        spawned = await asyncio.gather(*(agents.spawn("ok", "shared", 60_000) for _ in range(8)))
        assert len({s.id for s in spawned}) == 8
        ws = Path(settings.workspaces_root) / "shared"
        assert {s.workspace for s in spawned} == {str(ws)}
        if os.geteuid() == 0:
            assert (ws.stat().st_uid, ws.stat().st_gid) == (1001, 1001)
        for s in spawned:
            assert (await agents.wait(s.id, 10_000)).status.state == AgentState.SUCCEEDED


async def test_a_symlinked_workspace_is_refused_in_a_burst(
    settings: Settings, tmp_path: Path
) -> None:
    """Preparing before the engine slot keeps the refusals: a symlink never reaches the engine."""
    runtime = HeldStarts()
    runtime.runs_root = settings.runs_root
    runtime.release.set()
    outside = tmp_path / "outside"
    outside.mkdir()
    Path(settings.workspaces_root).mkdir(parents=True)
    (Path(settings.workspaces_root) / "link").symlink_to(outside)
    async with AgentService(LocalExecutor(), settings, runtime=runtime) as agents:
        outcomes = await asyncio.gather(
            *(agents.spawn("ok", "link", 60_000) for _ in range(4)),
            agents.spawn("ok", "fine", 60_000),
            return_exceptions=True,
        )
        assert all(isinstance(o, PermissionDeniedError) for o in outcomes[:4]), outcomes
        assert not isinstance(outcomes[4], BaseException)
        assert runtime.created == [outcomes[4].id]  # nothing else reached the engine
        assert list(outside.iterdir()) == []


async def test_ownership_is_fixed_only_where_it_is_wrong(
    settings: Settings, memory: MemoryRuntime
) -> None:
    require(os.geteuid() == 0, "root (to hand workspaces to uid 1001)")
    RELEASE.set()
    ws = Path(settings.workspaces_root) / "big"
    deep = ws / "a" / "b" / "c"
    deep.mkdir(parents=True)
    owned = deep / "owned.txt"
    owned.write_text("x")
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, 1001, 1001, follow_symlinks=False)
    before = owned.stat().st_ctime_ns
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        await _finish(agents, "ok", "big")
        assert owned.stat().st_ctime_ns == before  # already the agent's: not touched at all
        # a wrong entry at the top: the whole tree is fixed, deep ones included
        stray_deep = deep / "root-owned.txt"
        stray_deep.write_text("y")
        (ws / "new-top").write_text("z")
        assert stray_deep.stat().st_uid == 0
        await _finish(agents, "ok", "big")
        assert (stray_deep.stat().st_uid, stray_deep.stat().st_gid) == (1001, 1001)
        assert (ws / "new-top").stat().st_uid == 1001
        assert owned.stat().st_ctime_ns == before  # right ones still untouched


def test_every_adapter_offers_the_list_filters_as_optional_parameters() -> None:
    from agentkit.adapters.voice import client_tool_configs

    toolset = Toolset(container_tools())
    wanted = {"state", "workspace", "limit", "since", "cursor"}
    anthropic = next(t for t in toolset.to_anthropic() if t["name"] == "list_claude_agents")
    assert set(anthropic["input_schema"]["properties"]) == wanted
    assert not anthropic["input_schema"].get("required")  # the old call ({}) stays valid
    mcp = next(t for t in toolset.to_mcp() if t["name"] == "list_claude_agents")
    assert mcp["inputSchema"] == anthropic["input_schema"]
    voice = next(c for c in client_tool_configs(toolset) if c["name"] == "list_claude_agents")
    assert set(voice["parameters"]["properties"]) == wanted
    assert voice["parameters"]["required"] == []
    assert "finished" in voice["parameters"]["properties"]["state"]["enum"]


async def test_a_long_running_controller_holds_only_the_newest_final_statuses(
    settings: Settings, memory: MemoryRuntime
) -> None:
    async with AgentService(LocalExecutor(), settings, runtime=memory) as agents:
        agents.registry.finals_kept = 3
        ids = [await _finish(agents, "ok", "ws") for _ in range(7)]
        await agents.settle()
        assert len(agents.registry.finals) <= 4  # the newest 3 (+ the one being decided)
        assert ids[0] not in agents.registry.finals
        old = await agents.status(ids[0])  # let go from memory: read from its record
        assert (old.id, old.state, old.result_text) == (ids[0], AgentState.SUCCEEDED, "ok")
        assert [a.id for a in await agents.list()] == sorted(ids, reverse=True)
