"""Agent service units: ids, states, the hardened create request, run records, confinement.

No Docker needed: the create body is checked as JSON, records and workspaces go through a real
LocalExecutor on a temporary root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkit.config import Settings
from agentkit.containers.launch import plan_launch
from agentkit.containers.runs import RunStore
from agentkit.containers.service import (
    AgentService,
    AgentState,
    AgentStatus,
    decide_state,
    new_agent_id,
    validate_agent_id,
)
from agentkit.errors import ConfigError, PermissionDeniedError, ToolError
from agentkit.executors.local import LocalExecutor
from agentkit.redact import Redactor
from agentkit.runtimes.base import ExitReason, parse_memory
from agentkit.runtimes.docker import DockerRuntime, exit_reason
from agentkit.runtimes.docker import parse_time as _parse_time


def test_ids_have_the_public_shape_and_are_unique() -> None:
    ids = {new_agent_id() for _ in range(200)}
    assert len(ids) == 200
    for agent_id in ids:
        assert validate_agent_id(agent_id) == agent_id
    assert new_agent_id(1764240000000).startswith("claude-agent-1764240000000-")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nginx",
        "claude-agent-1-abcdef",
        "claude-agent-1764240000000-ABCDEF",
        "claude-agent-1764240000000-abcdef/../x",
        "claude-agent-1764240000000-abcdefg",
        "4f2a9c1b2d3e",
        "claude-agent-1764240000000-abc def",
    ],
)
def test_foreign_ids_are_refused_without_touching_docker(bad: str) -> None:
    with pytest.raises(PermissionDeniedError, match="not an agent started by agentkit"):
        validate_agent_id(bad)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"exit_code": 0}, AgentState.SUCCEEDED),
        ({"exit_code": 0, "result_is_error": True}, AgentState.FAILED),
        ({"exit_code": 1}, AgentState.FAILED),
        ({"exit_code": 124}, AgentState.TIMED_OUT),
        ({"exit_code": 137, "oom_killed": True}, AgentState.OOM_KILLED),
        ({"exit_code": 137}, AgentState.FAILED),
        ({"exit_code": 137, "finished_at": 100.0, "deadline": 100.5}, AgentState.TIMED_OUT),
        ({"exit_code": 143, "stop_reason": "stopped"}, AgentState.STOPPED),
        ({"exit_code": 0, "stop_reason": "timed_out"}, AgentState.TIMED_OUT),
        ({"exit_code": 0, "oom_killed": True}, AgentState.SUCCEEDED),
    ],
)
def test_docker_exits_decide_the_state(kwargs: dict[str, object], expected: AgentState) -> None:
    """Docker's exit statuses go through the Docker runtime's translation, then the neutral rule."""
    args: dict[str, object] = {
        "exit_code": None,
        "oom_killed": False,
        "stop_reason": None,
        "finished_at": None,
        "deadline": None,
        "result_is_error": None,
    }
    args.update(kwargs)
    oom = bool(args.pop("oom_killed"))
    code = args["exit_code"]
    assert isinstance(code, int)
    assert decide_state(reason=exit_reason(code, oom), **args) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "code", "expected"),
    [
        (ExitReason.EXITED, 0, AgentState.SUCCEEDED),
        (ExitReason.EXITED, 3, AgentState.FAILED),
        (ExitReason.DEADLINE, 124, AgentState.TIMED_OUT),
        (ExitReason.OOM, None, AgentState.OOM_KILLED),
        (ExitReason.SIGNALLED, 143, AgentState.FAILED),
        (ExitReason.LOST, None, AgentState.LOST),
        (ExitReason.REJECTED, None, AgentState.FAILED),
        (None, None, AgentState.FAILED),  # never seen ending: not a success
        (ExitReason.REJECTED, 0, AgentState.FAILED),  # a zero from a run that never ran
    ],
)
def test_neutral_exit_reasons_decide_the_state(
    reason: ExitReason | None, code: int | None, expected: AgentState
) -> None:
    state = decide_state(
        reason=reason,
        exit_code=code,
        stop_reason=None,
        finished_at=None,
        deadline=None,
        result_is_error=None,
    )
    assert state == expected


def test_create_body_is_hardened() -> None:
    """The create request for an agent planned from default settings (nothing configured):
    the documented defaults (4g, 2 CPUs, 200 pids, 8192 open files; docs/configuration.md) and
    the hardening.
    The engine applying them is shown in test_containers_limits.py."""
    settings = Settings(_env_file=None, host=None, anthropic_api_key="sk-ant-secret")  # type: ignore[call-arg]
    spec, meta = plan_launch(
        settings,
        Redactor(),
        run_id="claude-agent-1764240000000-abcdef",
        task="a=b\nc",
        workspace="/opt/agentflow/workspaces/w",
        image="img:1",
        timeout_ms=60_000,
        created=1764240000.0,
        runtime_name="docker",
    )
    assert meta["limits"] == {"memory": "4g", "cpus": 2.0, "pids": 200, "nofile": "8192"}
    body = DockerRuntime.create_body(spec)
    host = body["HostConfig"]
    assert body["User"] == "1001:1001"
    assert body["OpenStdin"] is True  # session mode: messages and answers arrive on stdin
    assert body["StdinOnce"] is False  # ... across attaches (a restarted controller attaches again)
    assert body["AttachStdin"] is False
    assert body["Tty"] is False
    assert "Cmd" not in body  # the image's entrypoint runs; the task never is an argument
    env = dict(item.split("=", 1) for item in body["Env"])
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert env["AGENTKIT_TASK"] == "a=b\nc"
    assert env["AGENTKIT_DEADLINE"] == "1764240060"
    assert host["Init"] is True
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == []
    assert host["Privileged"] is False
    assert host["Memory"] == 4 << 30
    assert host["MemorySwap"] == 4 << 30
    assert host["NanoCpus"] == 2_000_000_000
    assert host["PidsLimit"] == 200
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 8192, "Hard": 8192}]
    assert host["NetworkMode"] == "bridge"
    assert host["Mounts"] == [
        {
            "Type": "bind",
            "Source": "/opt/agentflow/workspaces/w",
            "Target": "/workspace",
            "ReadOnly": False,
        }
    ]
    assert "Binds" not in host


def test_parse_memory_and_times() -> None:
    assert parse_memory("512m") == 512 << 20
    assert parse_memory("64MiB") == 64 << 20
    assert parse_memory("1.5g") == int(1.5 * (1 << 30))
    assert parse_memory(1234) == 1234
    with pytest.raises(ConfigError, match="AGENTKIT_CONTAINER_MEMORY"):
        parse_memory("lots")
    assert _parse_time("0001-01-01T00:00:00Z") is None
    assert _parse_time("2026-11-27T14:04:36.123456789Z") == pytest.approx(1795788276.123456)
    assert _parse_time("garbage") is None


async def test_run_record_round_trip(tmp_path: Path) -> None:
    async with LocalExecutor() as executor:
        store = RunStore(executor, str(tmp_path / "runs"))
        run_id = new_agent_id()
        task = "tricky 'task' $(x) `y` \\ \n\t ünï 🚀\n\n"
        await store.create(run_id, {"id": run_id, "created": 1.0}, task)
        assert await store.read_task(run_id) == task
        assert (await store.read_meta(run_id)) == {"id": run_id, "created": 1.0}
        assert await store.read_result(run_id) is None
        await store.write_output(run_id, b'{"a": 1}\n')
        await store.append_output(run_id, b'{"b": 2}\n')
        await store.append_output(run_id, b"")
        assert await store.read_output(run_id) == b'{"a": 1}\n{"b": 2}\n'
        await store.mark_stop(run_id, "stopped")
        assert (await store.read_stop(run_id) or {})["reason"] == "stopped"
        await store.write_result(run_id, {"id": run_id, "state": "succeeded", "created": 1.0})
        other = new_agent_id()
        await store.create(other, {"id": other}, "t")
        assert sorted(await store.list_ids()) == sorted([run_id, other])
        assert [r["id"] for r in await store.read_results()] == [run_id]
        status = AgentStatus.from_record((await store.read_result(run_id)) or {})
        assert status.state == AgentState.SUCCEEDED
        mode = os.stat(store.path(run_id)).st_mode & 0o777
        assert mode == 0o700
        assert os.stat(store.path(run_id, "task.txt")).st_mode & 0o777 == 0o600
        with pytest.raises(ValueError, match="invalid run id"):
            store.path("../etc")
        # an empty or missing root lists nothing
        empty = RunStore(executor, str(tmp_path / "nothing"))
        assert await empty.read_results() == []
        assert await empty.list_ids() == []


async def test_workspace_is_confined_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    settings = Settings(root=str(root))
    (tmp_path / "outside").mkdir()
    async with LocalExecutor() as executor:
        service = AgentService(executor, settings)
        path = await service.prepare_workspace("proj")
        assert path == str(root / "workspaces" / "proj")
        assert os.path.isdir(path)
        if os.geteuid() == 0:
            assert os.stat(path).st_uid == 1001
        same = await service.prepare_workspace(str(root / "workspaces" / "proj") + "/")
        assert same == path
        os.symlink(tmp_path / "outside", root / "workspaces" / "escape")
        for bad in (str(tmp_path / "outside"), "escape", "/etc"):
            with pytest.raises(PermissionDeniedError, match=r"outside the workspaces root|not a"):
                await service.prepare_workspace(bad)
        # a workspace is one name directly under the root: never a path inside a workspace
        # (a component in there is writable by an agent and could be swapped for a symlink)
        for bad in (
            "proj/sub",
            "proj/.git",
            str(root / "workspaces" / "proj" / "sub"),
            "escape/sub",
            "../../outside",
            str(root / "workspaces" / "proj" / ".." / "escape"),
            str(root / "workspaces"),
            ".",
            os.path.expanduser("~/.ssh"),
        ):
            with pytest.raises(ToolError):
                await service.prepare_workspace(bad)
        assert not (root / "workspaces" / "proj" / "sub").exists()
        for bad in ("", "  ", "a\x00b", "a\nb", "x" * 300):
            with pytest.raises(ToolError):
                await service.prepare_workspace(bad)
        assert not (tmp_path / "outside" / "sub").exists()


async def test_a_workspace_that_is_a_symlink_is_never_handed_over(tmp_path: Path) -> None:
    """Even a symlink to a directory inside the root is refused: nothing is chowned through it."""
    root = tmp_path / "root"
    settings = Settings(root=str(root))
    async with LocalExecutor() as executor:
        service = AgentService(executor, settings)
        other = Path(await service.prepare_workspace("other"))
        (other / "private").mkdir()
        if os.geteuid() == 0:
            os.chown(other / "private", 0, 0)
        os.symlink(other / "private", root / "workspaces" / "link")
        for given in ("link", str(root / "workspaces" / "link")):
            with pytest.raises(PermissionDeniedError, match="symbolic link"):
                await service.prepare_workspace(given)
        if os.geteuid() == 0:
            assert os.stat(other / "private").st_uid == 0


async def test_a_symlinked_workspaces_root_is_resolved_and_a_dangling_link_refused(
    tmp_path: Path,
) -> None:
    """The root may be a symlink (host setup): workspaces are confined to where it points; a
    workspace that is a dangling symlink is refused, not created through."""
    root = tmp_path / "root"
    real = tmp_path / "disk" / "workspaces"
    real.mkdir(parents=True)
    root.mkdir()
    os.symlink(real, root / "workspaces")
    settings = Settings(root=str(root))
    async with LocalExecutor() as executor:
        service = AgentService(executor, settings)
        assert await service.prepare_workspace("proj") == str(real / "proj")
        os.symlink(tmp_path / "nowhere", real / "dangling")
        with pytest.raises(PermissionDeniedError, match=r"outside the workspaces root|symbolic"):
            await service.prepare_workspace("dangling")
        assert not (tmp_path / "nowhere").exists()
        run_dir = tmp_path / "runs" / "r1"
        await service.prepare_workspace("proj", run_dir=str(run_dir))
        assert run_dir.stat().st_mode & 0o777 == 0o700


async def test_workspace_problems_the_caller_causes_are_tool_errors(tmp_path: Path) -> None:
    """A ConfigError would abort the whole agent run: only host misconfiguration may raise one."""
    root = tmp_path / "root"
    settings = Settings(root=str(root))
    async with LocalExecutor() as executor:
        service = AgentService(executor, settings)
        await service.prepare_workspace("first")
        (root / "workspaces" / "taken").write_text("a file, not a directory")
        for bad in ("taken", str(root / "workspaces" / "taken"), "x" * 300, "a/" * 200):
            with pytest.raises(ToolError) as caught:
                await service.prepare_workspace(bad)
            assert not isinstance(caught.value, ConfigError)
            assert "workspace" in str(caught.value)


async def test_pass_through_secrets_are_redacted_from_the_start_and_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a controller restart nothing is spawned, yet running agents' output and tool
    results must still hide the secret pass-through values: the service knows them at once and
    connect() shares its redactor with the tools."""
    from agentkit.connect import connect
    from agentkit.redact import REDACTED

    oauth, auth = "oauth-" + os.urandom(8).hex(), "bearer-" + os.urandom(8).hex()
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", oauth)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", auth)
    monkeypatch.setenv("AGENTKIT_TEST_PLAIN", "plain-value-123")
    settings = Settings(
        host=None,
        root=str(tmp_path / "root"),
        container_env_passthrough=[
            "CLAUDE_CODE_OAUTH_TOKEN",
            "ANTHROPIC_AUTH_TOKEN",
            "AGENTKIT_TEST_PLAIN",
        ],
    )
    text = f"token={oauth} auth={auth} plain=plain-value-123"
    expected = f"token={REDACTED} auth={REDACTED} plain=plain-value-123"
    async with LocalExecutor() as executor:
        assert AgentService(executor, settings).redactor.redact(text) == expected
    async with connect(settings, reconcile=False) as conn:
        assert conn.toolset.context.redactor is conn.agents.redactor
        assert conn.toolset.context.redactor.redact(text) == expected


@pytest.mark.parametrize("network", ["host", "HOST", " host ", "container:abc123", "container:x"])
def test_networks_sharing_a_namespace_are_refused(network: str) -> None:
    from agentkit.containers.launch import plan_launch
    from agentkit.redact import Redactor

    settings = Settings(host=None, container_network=network)
    with pytest.raises(ConfigError, match="AGENTKIT_CONTAINER_NETWORK"):
        plan_launch(
            settings,
            Redactor(),
            run_id=new_agent_id(),
            task="t",
            workspace="/opt/agentflow/workspaces/w",
            image="img",
            timeout_ms=5000,
            created=1.0,
            runtime_name="docker",
        )


@pytest.mark.parametrize("network", [None, "bridge", "none", "agents-egress", "hostnet"])
def test_ordinary_networks_are_used_as_configured(network: str | None) -> None:
    from agentkit.containers.launch import plan_launch
    from agentkit.redact import Redactor

    settings = Settings(host=None, container_network=network)
    spec, _meta = plan_launch(
        settings,
        Redactor(),
        run_id=new_agent_id(),
        task="t",
        workspace="/opt/agentflow/workspaces/w",
        image="img",
        timeout_ms=5000,
        created=1.0,
        runtime_name="docker",
    )
    assert spec.network == network
    assert DockerRuntime.create_body(spec)["HostConfig"]["NetworkMode"] == (network or "bridge")
