"""Pure pieces of the runtimes: the Swarm service body, task states, image references, and
the manager check. Engines are exercised in test_runtimes_contract.py and test_swarm.py."""

from __future__ import annotations

import pytest

from agentkit.errors import ConfigError, ToolError
from agentkit.runtimes.base import ExitReason, Mount, RunSpec, RunState, parse_nofile
from agentkit.runtimes.swarm import manager_problem
from agentkit.runtimes.swarm_images import registry_ref, split_ref
from agentkit.runtimes.swarm_spec import (
    NO_NEW_PRIVS,
    argv_for,
    placement,
    service_body,
    task_exit,
    task_state,
)

SPEC = RunSpec(
    name="claude-agent-1764240000000-abcdef",
    image="img:1",
    labels={"agentkit.managed-by": "agentkit"},
    env={"A": "1"},
    mounts=(Mount("/srv/ws/w", "/workspace"),),
    memory_bytes=1 << 30,
    nano_cpus=1_000_000_000,
    pids_limit=64,
)


@pytest.mark.parametrize(
    ("entrypoint", "command", "image_ep", "image_cmd", "argv"),
    [
        (None, None, ["/entry"], ["a"], ["/entry", "a"]),
        (None, ("sh", "-c", "x"), ["/entry"], ["a"], ["/entry", "sh", "-c", "x"]),
        (("/other",), None, ["/entry"], ["a"], ["/other"]),  # like docker run --entrypoint
        (("/other",), ("b",), None, None, ["/other", "b"]),
        (None, ("true",), None, ["ignored"], ["true"]),
    ],
)
def test_the_process_is_resolved_as_docker_run_would(
    entrypoint: tuple[str, ...] | None,
    command: tuple[str, ...] | None,
    image_ep: list[str] | None,
    image_cmd: list[str] | None,
    argv: list[str],
) -> None:
    spec = RunSpec(name="n", image="i", labels={}, env={}, entrypoint=entrypoint, command=command)
    assert argv_for(spec, image_ep, image_cmd) == argv


def test_the_service_body_is_one_hardened_task_pinned_to_its_node() -> None:
    body = service_body(SPEC, node="abcdefghijklmnopqrstuvwxy", argv=["/entry", "go"])
    task = body["TaskTemplate"]
    container = task["ContainerSpec"]
    assert body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert container["Command"] == [*NO_NEW_PRIVS, "/entry", "go"]
    assert container["Args"] == []
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["User"] == "1001:1001"
    assert container["Init"] is True
    assert container["Env"] == ["A=1"]
    assert task["Resources"]["Limits"] == {
        "MemoryBytes": 1 << 30,
        "NanoCPUs": 1_000_000_000,
        "Pids": 64,
    }
    assert task["Placement"] == {"Constraints": ["node.id==abcdefghijklmnopqrstuvwxy"]}
    assert "Networks" not in task  # the node's default bridge
    assert body["Labels"] == container["Labels"] == {"agentkit.managed-by": "agentkit"}


def test_placement_names_a_node_by_id_or_hostname() -> None:
    assert placement("abcdefghijklmnopqrstuvwxy") == "node.id==abcdefghijklmnopqrstuvwxy"
    assert placement("worker-1") == "node.hostname==worker-1"


def _task(state: str, **status: object) -> dict[str, object]:
    return {"NodeID": "n1", "Status": {"State": state, **status}}


@pytest.mark.parametrize(
    ("task", "down", "state"),
    [
        (None, False, RunState.PENDING),
        (_task("pending"), False, RunState.PENDING),
        (_task("running"), False, RunState.RUNNING),
        (_task("running"), True, RunState.LOST),
        (_task("complete"), False, RunState.EXITED),
        (_task("failed"), False, RunState.EXITED),
        (_task("rejected"), False, RunState.EXITED),
        (_task("shutdown"), False, RunState.EXITED),
        (_task("orphaned"), False, RunState.LOST),
        (_task("something-new"), False, RunState.LOST),
    ],
)
def test_task_states_in_neutral_words(
    task: dict[str, object] | None, down: bool, state: RunState
) -> None:
    assert task_state(task, down) == state


def test_how_tasks_ended_in_neutral_words() -> None:
    def ended(task: dict[str, object], state: RunState = RunState.EXITED) -> tuple[object, ...]:
        event = task_exit("r", task, state, oom=False)
        return event.exit_code, event.reason

    ran = {"ContainerID": "c1"}
    assert ended(_task("complete", ContainerStatus=ran)) == (0, ExitReason.EXITED)
    failed = _task("failed", ContainerStatus={**ran, "ExitCode": 3})
    assert ended(failed) == (3, ExitReason.EXITED)
    assert ended(_task("failed", ContainerStatus={**ran, "ExitCode": 124})) == (
        124,
        ExitReason.DEADLINE,
    )
    missing = task_exit("r", _task("rejected", Err="No such image: img:1"), RunState.EXITED, False)
    assert missing.reason == ExitReason.REJECTED
    assert "No such image: img:1 (on node n1: copy the image there" in (missing.error or "")
    lost = task_exit("r", _task("running"), RunState.LOST, False)
    assert (lost.reason, lost.error) == (ExitReason.LOST, "node n1 is down or gone")


@pytest.mark.parametrize(
    ("image", "ref"),
    [
        ("agentflow-claude-code:latest", "reg:5000/agentflow-claude-code:latest"),
        ("agentflow-claude-code", "reg:5000/agentflow-claude-code:latest"),
        ("team/agent:2", "reg:5000/team/agent:2"),
        ("old.registry:5000/agent:3", "reg:5000/agent:3"),
        ("localhost/agent", "reg:5000/agent:latest"),
    ],
)
def test_registry_references(image: str, ref: str) -> None:
    assert registry_ref("reg:5000", image) == ref


def test_a_digest_cannot_be_pushed() -> None:
    with pytest.raises(ToolError, match="digest"):
        split_ref("img@sha256:abc")


@pytest.mark.parametrize(
    ("swarm", "fix"),
    [
        ({"LocalNodeState": "inactive"}, "docker swarm init"),
        ({"LocalNodeState": "pending"}, "docker swarm init"),
        ({"LocalNodeState": "active", "ControlAvailable": False}, "docker node promote"),
        ({"LocalNodeState": "active", "ControlAvailable": True}, None),
    ],
)
def test_the_manager_check_says_how_to_fix(swarm: dict[str, object], fix: str | None) -> None:
    problem = manager_problem({"Swarm": swarm})
    if fix is None:
        assert problem is None
    else:
        assert problem is not None
        assert fix in problem


def test_open_file_limits_parse_as_soft_and_hard() -> None:
    assert parse_nofile("8192") == (8192, 8192)
    assert parse_nofile(" 4096 : 8192 ") == (4096, 8192)
    for bad in ("0", "9:8", "x", "-5", ""):
        with pytest.raises(ConfigError, match="AGENTKIT_CONTAINER_NOFILE"):
            parse_nofile(bad)
