"""Pure translations for :mod:`agentkit.runtimes.swarm`: a :class:`RunSpec` to a service, a
Swarm task to neutral words. No I/O, so every rule here is tested without an engine.

Hardening on services, as on containers (Engine API 1.41, Docker 20.10):

=====================  ======================================================================
the Docker runtime     the Swarm service
=====================  ======================================================================
User 1001:1001         ``ContainerSpec.User``
CapDrop ALL            ``ContainerSpec.CapabilityDrop`` (API >= 1.41)
Init                   ``ContainerSpec.Init``
Memory/NanoCpus        ``Resources.Limits.MemoryBytes`` / ``NanoCPUs``
PidsLimit              ``Resources.Limits.Pids`` (API >= 1.41)
Ulimits nofile         ``ContainerSpec.Ulimits`` (API >= 1.41)
no-new-privileges      NO field for services in API 1.41: the command is wrapped in
                       ``setpriv --no-new-privs --`` (util-linux, in every Debian image), which
                       sets the same kernel flag before the agent's process starts
RestartPolicy no       ``RestartPolicy.Condition: none`` and mode ``ReplicatedJob`` (one task)
labels                 service labels and ``ContainerSpec.Labels``
one bind mount         ``ContainerSpec.Mounts`` (the workspace, on the pinned node)
ReadonlyRootfs         ``ContainerSpec.ReadOnly``
Tmpfs (size, mode)     ``ContainerSpec.Mounts`` of type ``tmpfs`` (``TmpfsOptions``; no mount
                       options in API 1.41: the engine's tmpfs defaults apply besides the size)
=====================  ======================================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from agentkit.runtimes.base import ExitEvent, ExitReason, RunSpec, RunState
from agentkit.runtimes.docker import exit_reason, parse_time

__all__ = [
    "NO_NEW_PRIVS",
    "argv_for",
    "placement",
    "service_body",
    "task_exit",
    "task_state",
]

#: what enforces no-new-privileges where the services API has no field for it
NO_NEW_PRIVS = ("setpriv", "--no-new-privs", "--")

_PENDING = {
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
}
_NODE_ID = re.compile(r"^[a-z0-9]{25}$")


def placement(node: str) -> str:
    """The placement constraint that pins a run to ``node`` (an id or a hostname)."""
    key = "node.id" if _NODE_ID.fullmatch(node) else "node.hostname"
    return f"{key}=={node}"


def argv_for(
    spec: RunSpec, image_entrypoint: Sequence[str] | None, image_cmd: Sequence[str] | None
) -> list[str]:
    """The process the run starts, resolved as ``docker run`` would (entrypoint + cmd)."""
    entrypoint = (
        list(spec.entrypoint) if spec.entrypoint is not None else list(image_entrypoint or [])
    )
    if spec.command is not None:
        cmd = list(spec.command)
    elif spec.entrypoint is not None:
        cmd = []  # a new entrypoint drops the image's cmd, as `docker run --entrypoint` does
    else:
        cmd = list(image_cmd or [])
    return entrypoint + cmd


def service_body(spec: RunSpec, *, node: str | None, argv: Sequence[str]) -> dict[str, Any]:
    """The ``POST /services/create`` body: one task, never restarted, hardened (see above)."""
    command = list(argv)
    if spec.no_new_privileges:
        command = [*NO_NEW_PRIVS, *command]
    container: dict[str, Any] = {
        "Image": spec.image,
        "Labels": dict(spec.labels),
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "User": spec.user,
        "Init": spec.init,
        "TTY": False,
        "OpenStdin": spec.open_stdin,
        "CapabilityDrop": ["ALL"] if spec.drop_all_capabilities else [],
        "CapabilityAdd": list(spec.cap_add),
        "Mounts": [
            {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
            for m in spec.mounts
        ]
        + [
            {
                "Type": "tmpfs",
                "Target": t.target,
                "TmpfsOptions": {"SizeBytes": t.size_bytes, "Mode": t.mode},
            }
            for t in spec.tmpfs
        ],
        "ReadOnly": spec.read_only_root,
        "StopGracePeriod": 1_000_000_000,
    }
    if command:
        container["Command"] = command
        container["Args"] = []
    if spec.workdir:
        container["Dir"] = spec.workdir
    if spec.nofile:
        container["Ulimits"] = [{"Name": "nofile", "Soft": spec.nofile[0], "Hard": spec.nofile[1]}]
    limits: dict[str, Any] = {}
    if spec.memory_bytes:
        limits["MemoryBytes"] = spec.memory_bytes
    if spec.nano_cpus:
        limits["NanoCPUs"] = spec.nano_cpus
    if spec.pids_limit:
        limits["Pids"] = spec.pids_limit
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
    }
    if spec.log_max_bytes:
        template["LogDriver"] = {
            "Name": "json-file",
            "Options": {"max-size": str(spec.log_max_bytes), "max-file": "1"},
        }
    if node:
        template["Placement"] = {"Constraints": [placement(node)]}
    if spec.network:
        template["Networks"] = [{"Target": spec.network}]
    return {
        "Name": spec.name,
        "Labels": dict(spec.labels),
        "TaskTemplate": template,
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }


def task_state(task: Mapping[str, Any] | None, node_down: bool) -> RunState:
    """A task's state in neutral words (no task yet: pending)."""
    if task is None:
        return RunState.PENDING
    state = str((task.get("Status") or {}).get("State", ""))
    if state == "orphaned":
        return RunState.LOST
    if state in _PENDING or state == "running":
        if node_down:
            return RunState.LOST
        return RunState.RUNNING if state == "running" else RunState.PENDING
    return (
        RunState.EXITED
        if state in ("complete", "failed", "shutdown", "rejected")
        else (RunState.LOST)
    )


def task_exit(name: str, task: Mapping[str, Any], state: RunState, oom: bool) -> ExitEvent:
    """How an ended (or lost) task ended, in neutral words."""
    status = task.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    at = parse_time(status.get("Timestamp"))
    error = status.get("Err") or None
    if state == RunState.LOST:
        node = task.get("NodeID") or "?"
        return ExitEvent(
            name, None, False, ExitReason.LOST, at, error or f"node {node} is down or gone"
        )
    raw_state = str(status.get("State", ""))
    code = container.get("ExitCode")
    code = code if isinstance(code, int) else None
    if raw_state == "rejected" or (raw_state == "failed" and not container.get("ContainerID")):
        reason = str(error or raw_state)
        if "No such image" in reason or "pull access denied" in reason:
            reason += (
                f" (on node {task.get('NodeID') or '?'}: copy the image there with docker save |"
                " docker load, see docs/scale-out.md#images)"
            )
        return ExitEvent(name, code, False, ExitReason.REJECTED, at, reason)
    if raw_state == "complete" and code is None:
        code = 0
    return ExitEvent(name, code, oom, exit_reason(code, oom), at, error)
